"""Decode once, train many epochs: a dataset's images as one uint8 tensor (N, 3, 256, 256).

:func:`load_tensors` runs every sample through :func:`~ladeda_lib.data.images.resize_to_uint8` (the same
path inference uses) and keeps the result in memory — 192 KiB per image — optionally in a cache file
keyed by the file paths, sizes, modification times, labels and the input geometry, so the next run
(or the next notebook) skips decoding entirely. Normalise batches with
:func:`~ladeda_lib.data.images.normalize_uint8`. Introduced in notebook 02.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ladeda_lib.checkpoints import atomic_torch_save
from ladeda_lib.data.images import ImageLoadError, resize_to_uint8
from ladeda_lib.data.layouts import Sample
from ladeda_lib.geometry import INPUT_GEOMETRY, InputGeometry

_CACHE_VERSION = 1


@dataclass
class ImageTensors(Dataset):
    """Decoded images of a list of samples.

    ``images`` uint8 (N, 3, S, S), ``labels`` long (N,), ``samples`` the N :class:`Sample` in the same
    order. As a torch ``Dataset`` item ``i`` is ``(images[i] uint8 (3, S, S), labels[i])``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    samples: list[Sample]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def subset(self, indices: list[int] | torch.Tensor) -> ImageTensors:
        """The images at ``indices`` (a view-free copy), e.g. one platform of a test set."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensors(self.images[idx], self.labels[idx], [self.samples[int(i)] for i in idx])


def cache_key(samples: list[Sample], geometry: InputGeometry = INPUT_GEOMETRY) -> str:
    """Hex digest identifying the decoded tensors: file paths, sizes, mtimes, labels, geometry."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": _CACHE_VERSION, "geometry": asdict(geometry)}, sort_keys=True).encode())
    for s in samples:
        st = os.stat(s.path)
        h.update(f"{Path(s.path).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{s.label}\n".encode())
    return h.hexdigest()


def load_tensors(
    samples: list[Sample],
    cache_dir: str | Path | None = None,
    progress: bool = True,
    geometry: InputGeometry = INPUT_GEOMETRY,
    num_workers: int | None = None,
) -> ImageTensors:
    """Decode and resize every sample once: list of N samples → :class:`ImageTensors` (N, 3, S, S) uint8.

    With ``cache_dir`` the tensors are stored in ``cache_dir/tensors_<key>.pt`` and loaded from there when
    the files are unchanged (see :func:`cache_key`). Decoding runs in ``num_workers`` threads (default:
    CPU count, at most 4). If any file cannot be decoded, raises
    :class:`~ladeda_lib.data.images.ImageLoadError` listing how many and the first ones — nothing is
    silently dropped. Introduced in notebook 02.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("load_tensors: no samples given (is the split or platform name right?)")
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"tensors_{cache_key(samples, geometry)[:20]}.pt"
        if cache_file.is_file():
            data = torch.load(cache_file, map_location="cpu", weights_only=True)
            return ImageTensors(data["images"], data["labels"], samples)

    s = geometry.image_size
    images = torch.empty((len(samples), 3, s, s), dtype=torch.uint8)
    failures: list[str] = []

    def work(i: int) -> None:
        try:
            images[i] = resize_to_uint8(samples[i].path, geometry)
        except (ImageLoadError, FileNotFoundError) as err:
            failures.append(str(err))

    workers = num_workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(work, range(len(samples)))
        for _ in tqdm(results, total=len(samples), desc="decoding images", unit="img", disable=not progress):
            pass
    if failures:
        shown = "\n  ".join(failures[:5])
        raise ImageLoadError(
            f"{len(failures)} of {len(samples)} images could not be decoded:\n  {shown}"
            + ("\n  ..." if len(failures) > 5 else "")
            + "\nRemove or replace them (`ladeda data-info PATH --verify` lists all)."
        )
    labels = torch.tensor([smp.label for smp in samples], dtype=torch.long)
    if cache_file is not None:
        atomic_torch_save({"images": images, "labels": labels}, cache_file)
    return ImageTensors(images, labels, samples)
