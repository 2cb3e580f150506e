"""Decode once, train many epochs: a dataset's images as one uint8 tensor (N, 3, 256, 256), on disk.

:func:`load_tensors` runs every sample through :func:`~ladeda_lib.data.images.resize_to_uint8` (the same
path inference uses) — 192 KiB per image. With a cache folder the result is one raw uint8 file,
``tensors_<key>.u8`` (plus ``tensors_<key>.json``: count, shape, labels), keyed by the file paths, sizes,
modification times, labels and the input geometry; it is **memory-mapped**, not loaded, so a dataset far
larger than the machine's memory trains batch by batch, and the next run (or notebook) skips decoding.

* **Build** — parallel decoding threads (PIL and torch release the GIL), written chunk by chunk into
  ``tensors_<key>.u8.partial`` with ``pwrite``; a byte per finished chunk in ``….done``. An interrupted
  build restarts at the first unfinished chunk; the file gets its final name only when complete, so a
  half file is never used.
* **Read** — ``images`` is a tensor over a private (copy-on-write) mapping of the file: indexing reads
  the pages it needs. Pages read stay counted in the process's resident memory until
  :func:`release_pages` drops them (the data stay in the OS page cache); the training loop, ``predict``
  and the teacher-target pass call it after every batch, so resident memory does not grow with N.
* **torchrun** — with several processes, rank 0 builds the file and the others wait, then map it.
* **Two jobs, one cache** — two runs that need the same file at once (two trainings started side by side) take
  turns through a lock file, ``tensors_<key>.u8.lock``: the first builds, the second waits and then maps the
  finished file instead of rewriting the first one's half-built ``.partial`` under it.

Normalise batches with :func:`~ladeda_lib.data.images.normalize_uint8`. Introduced in notebook 02.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

try:  # POSIX: two processes building the same cache take turns (see the module docstring)
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, one build at a time is the user's to arrange
    fcntl = None

from ladeda_lib import distributed
from ladeda_lib.data.images import ImageLoadError, resize_to_uint8
from ladeda_lib.data.layouts import Sample
from ladeda_lib.geometry import INPUT_GEOMETRY, InputGeometry

_CACHE_VERSION = 2  # 1: a torch.save'd .pt file loaded whole; 2: a raw memory-mapped .u8 file
#: Images decoded (and written, and marked done) per step of a cache build.
CHUNK_SIZE = 256

_MAPPINGS: weakref.WeakSet[mmap.mmap] = weakref.WeakSet()


def map_file(path: str | Path, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor over a private memory mapping of a raw file (C order) — nothing is read until indexed.

    Writes to the tensor stay in this process (copy-on-write) and :func:`release_pages` may discard them:
    treat it as read-only. Raises ``ValueError`` when the file size does not match ``shape``.
    """
    count = int(np.prod(shape))
    nbytes = count * torch.empty((), dtype=dtype).element_size()
    size = os.path.getsize(path)
    if size != nbytes or nbytes == 0:
        raise ValueError(f"{path}: {size} bytes on disk, expected {nbytes} for {dtype} {tuple(shape)}")
    fd = os.open(path, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, nbytes, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)
    _MAPPINGS.add(mm)
    return torch.frombuffer(mm, dtype=dtype).view(shape)


def release_pages() -> None:
    """Drop the pages of every mapped cache file from this process's resident memory (MADV_DONTNEED).

    The next read of those rows comes back from the OS page cache (or disk). Cheap; called after every
    batch by the training loop, :func:`~ladeda_lib.evaluation.predict` and the teacher-target pass.
    """
    for mm in list(_MAPPINGS):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (ValueError, OSError):  # closed mapping, or a platform without madvise
            pass


@dataclass
class ImageTensors(Dataset):
    """Decoded images of a list of samples.

    ``images`` uint8 (N, 3, S, S) — in memory, or memory-mapped from ``path`` (the cache file) —,
    ``labels`` long (N,), ``samples`` the N :class:`Sample` in the same order. As a torch ``Dataset``
    item ``i`` is ``(images[i] uint8 (3, S, S), labels[i])``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    samples: list[Sample]
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def subset(self, indices: list[int] | torch.Tensor) -> ImageTensors:
        """The images at ``indices`` copied into memory, e.g. one platform of a test set."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[idx]
        release_pages()
        return ImageTensors(images, self.labels[idx], [self.samples[int(i)] for i in idx])


def cache_key(samples: list[Sample], geometry: InputGeometry = INPUT_GEOMETRY) -> str:
    """Hex digest identifying the decoded tensors: file paths, sizes, mtimes, labels, geometry."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": _CACHE_VERSION, "geometry": asdict(geometry)}, sort_keys=True).encode())
    for s in samples:
        st = os.stat(s.path)
        h.update(f"{Path(s.path).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{s.label}\n".encode())
    return h.hexdigest()


def _decode_failure_error(failures: list[str], total: int) -> ImageLoadError:
    shown = "\n  ".join(failures[:5])
    return ImageLoadError(
        f"{len(failures)} of {total} images could not be decoded:\n  {shown}"
        + ("\n  ..." if len(failures) > 5 else "")
        + "\nRemove or replace them (`ladeda data-info PATH --verify` lists all)."
    )


def _decode_into(
    samples: list[Sample], lo: int, out: np.ndarray, pool: ThreadPoolExecutor, geometry: InputGeometry, bar
) -> list[str]:
    """Decode ``samples[lo : lo + len(out)]`` into ``out`` (uint8 (n, 3, S, S)); returns the failures."""
    failures: list[str] = []

    def work(i: int) -> None:
        try:
            out[i] = resize_to_uint8(samples[lo + i].path, geometry).numpy()
        except (ImageLoadError, FileNotFoundError) as err:
            failures.append(str(err))

    for _ in pool.map(work, range(out.shape[0])):
        bar.update(1)
    return failures


def _build_cache(
    samples: list[Sample], final: Path, meta: dict, geometry: InputGeometry, workers: int, chunk: int, progress: bool
) -> None:
    """Decode every sample into ``final`` (raw uint8), resumably; see the module docstring."""
    s = geometry.image_size
    item = 3 * s * s
    n = len(samples)
    chunks = (n + chunk - 1) // chunk
    partial, done_path = final.with_name(final.name + ".partial"), final.with_name(final.name + ".done")
    resumable = (
        partial.is_file()
        and done_path.is_file()
        and partial.stat().st_size == n * item
        and done_path.stat().st_size == chunks
    )
    if not resumable:
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as fh:
            fh.truncate(n * item)  # sparse: no disk space used until written
        done_path.write_bytes(bytes(chunks))
    done = done_path.read_bytes()
    todo = [c for c in range(chunks) if not done[c]]
    finished = n - sum(min(chunk, n - c * chunk) for c in todo)
    failures: list[str] = []
    fd, done_fd = os.open(partial, os.O_RDWR), os.open(done_path, os.O_RDWR)
    desc = "decoding images" + (f" (resuming: {finished} done)" if finished else "")
    try:
        with (
            ThreadPoolExecutor(max_workers=workers) as pool,
            tqdm(total=n, initial=finished, desc=desc, unit="img", disable=not progress) as bar,
        ):
            for c in todo:
                lo = c * chunk
                buf = np.empty((min(chunk, n - lo), 3, s, s), dtype=np.uint8)
                errors = _decode_into(samples, lo, buf, pool, geometry, bar)
                if errors:
                    failures += errors
                    continue
                os.pwrite(fd, memoryview(buf).cast("B"), lo * item)
                os.fdatasync(fd)  # the chunk is on disk before it is marked done
                os.pwrite(done_fd, b"\x01", c)
    finally:
        os.close(fd)
        os.close(done_fd)
    if failures:
        raise _decode_failure_error(failures, n)
    meta_path = final.with_suffix(".json")
    tmp = meta_path.with_name(f".{meta_path.name}.tmp")
    tmp.write_text(json.dumps(meta) + "\n")
    tmp.replace(meta_path)
    partial.replace(final)  # only a complete file ever carries the final name
    done_path.unlink(missing_ok=True)


def _build_once(
    samples: list[Sample], final: Path, meta: dict, geometry: InputGeometry, workers: int, chunk: int, progress: bool
) -> None:
    """Build ``final`` unless another process built it while this one waited for the lock."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(final.name + ".lock"), "a+b") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes, also on an error
        if not _cached(final, meta):
            _build_cache(samples, final, meta, geometry, workers, chunk, progress)


def _cached(final: Path, meta: dict) -> bool:
    meta_path = final.with_suffix(".json")
    if not (final.is_file() and meta_path.is_file()):
        return False
    try:
        stored = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    return stored == meta and final.stat().st_size == int(np.prod(meta["shape"]))


def load_tensors(
    samples: list[Sample],
    cache_dir: str | Path | None = None,
    progress: bool = True,
    geometry: InputGeometry = INPUT_GEOMETRY,
    num_workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> ImageTensors:
    """Decode and resize every sample once: list of N samples → :class:`ImageTensors` (N, 3, S, S) uint8.

    With ``cache_dir`` the images go to ``cache_dir/tensors_<key>.u8`` (see :func:`cache_key`), built
    once, resumably, and memory-mapped (``ImageTensors.images`` is then file-backed, ``.path`` says
    where); without it they are decoded into memory. Decoding runs in ``num_workers`` threads (default:
    CPU count, at most 4), ``chunk_size`` images at a time. Under torchrun rank 0 builds the file and the
    other ranks map it. If any file cannot be decoded, raises :class:`~ladeda_lib.data.images.ImageLoadError`
    listing how many and the first ones — nothing is silently dropped. Introduced in notebook 02.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("load_tensors: no samples given (is the split or platform name right?)")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    s = geometry.image_size
    shape = (len(samples), 3, s, s)
    labels = torch.tensor([smp.label for smp in samples], dtype=torch.long)
    workers = num_workers or min(4, os.cpu_count() or 1)
    if cache_dir is None:
        images = np.empty(shape, dtype=np.uint8)
        with (
            ThreadPoolExecutor(max_workers=workers) as pool,
            tqdm(total=len(samples), desc="decoding images", unit="img", disable=not progress) as bar,
        ):
            failures = _decode_into(samples, 0, images, pool, geometry, bar)
        if failures:
            raise _decode_failure_error(failures, len(samples))
        return ImageTensors(torch.from_numpy(images), labels, samples)

    key = cache_key(samples, geometry)
    final = Path(cache_dir) / f"tensors_{key[:20]}.u8"
    meta = {"version": _CACHE_VERSION, "key": key, "shape": list(shape), "labels": labels.tolist()}
    ctx = distributed.context()
    error: str | None = None
    if ctx.is_main and not _cached(final, meta):
        try:
            _build_once(samples, final, meta, geometry, workers, chunk_size, progress)
        except Exception as err:
            if not ctx.distributed:
                raise
            error = f"{type(err).__name__}: {err}"
            exc = err
    if ctx.distributed:  # the other ranks wait for rank 0's build, and fail with it
        error = distributed.broadcast_object(error)
        if error is not None:
            raise exc if ctx.is_main else RuntimeError(f"rank 0 could not build the image cache: {error}")
    return ImageTensors(map_file(final, torch.uint8, shape), labels, samples, final)
