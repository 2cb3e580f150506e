"""Teacher targets: the frozen teacher's patch map and pooled logit for every training image, computed once.

The teacher never changes while the student trains, so its outputs are computed once — batched, without
gradients, in eval mode, on the same uint8 → normalised tensors the student sees (the shared input
geometry) — and stored in ``<cache_dir>/teacher_targets_<data>_<teacher>.f32``: raw float32, the (N, 1, h, w)
patch maps then the (N, 1) pooled logits, described by a ``.json`` beside it, memory-mapped when read (like
the image cache, :mod:`ladeda_lib.data.tensors`), so targets for any number of images never have to fit in
memory. The file name holds a hash of the image bytes and a hash of the teacher's weights and configuration,
so changing either (new data, retrained teacher, other pooling) computes fresh targets, and everything else
reuses them. The pass streams chunk by chunk into a ``.partial`` file renamed when complete; under torchrun
each rank computes its own contiguous share of the images and rank 0 finishes the file.
Introduced in notebook 03.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ladeda_lib import distributed
from ladeda_lib.checkpoints import Checkpoint
from ladeda_lib.data.tensors import map_file, release_pages
from ladeda_lib.models import PatchDetector

_TARGETS_VERSION = 2  # 1: one torch.save'd .pt; 2: raw memory-mapped float32
#: Images per teacher pass written to the targets file at a time.
TARGET_CHUNK = 512


@dataclass
class TeacherTargets:
    """Teacher outputs for N images: ``patches`` float32 (N, 1, 31, 31), ``pooled`` float32 (N, 1).

    ``data_hash`` / ``teacher_hash`` identify what they were computed from; ``path`` is the cache file
    (None when not cached); ``from_cache`` says whether this call reused it.
    """

    patches: torch.Tensor
    pooled: torch.Tensor
    data_hash: str
    teacher_hash: str
    path: Path | None = None
    from_cache: bool = False

    def __len__(self) -> int:
        return int(self.pooled.shape[0])


def data_hash(images: torch.Tensor, chunk: int = 256) -> str:
    """SHA-256 of a uint8 image tensor's shape and bytes: the same pixels give the same key.

    Streams ``chunk`` images at a time (a memory-mapped cache is never read into memory whole).
    """
    h = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}".encode())
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].detach().cpu().contiguous()
        h.update(memoryview(block.numpy()).cast("B"))
        release_pages()
    return h.hexdigest()


def teacher_hash(model: PatchDetector) -> str:
    """SHA-256 of a model's architecture, config (pooling, preprocessing, width) and every state_dict tensor."""
    h = hashlib.sha256(json.dumps({"arch": model.arch, "config": model.config()}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def teacher_outputs(
    teacher: PatchDetector,
    images: torch.Tensor,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "teacher targets",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a model in eval mode without gradients: uint8 (N, 3, S, S) → ((N, 1, h, w) patches, (N, 1) pooled).

    Uses :func:`ladeda_lib.evaluation.predict` (a channels-last copy of the model, small CPU batches); the
    model passed in — parameters, buffers, layout and training flag — is not touched.
    """
    from ladeda_lib.runner import predict

    pooled, patches = predict(teacher, images, batch_size, device, progress, desc=desc, keep_patches=True)
    return patches, pooled.reshape(-1, 1)


def _stored(path: Path, meta: dict) -> TeacherTargets | None:
    """The cached targets if ``path`` and its ``.json`` describe exactly ``meta``, else None."""
    meta_path = path.with_suffix(".json")
    try:
        if json.loads(meta_path.read_text()) != meta:
            return None
        n, grid = meta["count"], meta["patch_shape"]
        flat = map_file(path, torch.float32, (n * (int(np.prod(grid)) + 1),))
    except (OSError, ValueError, KeyError):  # absent, unreadable or the wrong size: recomputed, never trusted
        return None
    per = int(np.prod(grid))
    patches = flat[: n * per].view(n, *grid)
    pooled = flat[n * per :].view(n, 1)
    return TeacherTargets(patches, pooled, meta["data_hash"], meta["teacher_hash"], path, from_cache=True)


def _write_rows(fd: int, array: torch.Tensor, offset: int) -> None:
    os.pwrite(fd, memoryview(array.contiguous().numpy()).cast("B"), offset)


def compute_teacher_targets(
    teacher: PatchDetector | Checkpoint,
    tensors: torch.Tensor | object,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TeacherTargets:
    """Teacher patch logits and pooled logits for every image, cached on disk.

    Args:
        teacher: the (frozen) teacher, or a loaded :class:`~ladeda_lib.checkpoints.Checkpoint`.
        tensors: an :class:`~ladeda_lib.data.ImageTensors` (its ``.images``) or a uint8 tensor (N, 3, S, S).
        cache_dir: folder of the cache (None: compute in memory, do not store).
        batch_size, device, progress: how the teacher runs.

    Returns:
        :class:`TeacherTargets` with ``patches`` (N, 1, 31, 31) and ``pooled`` (N, 1) at S = 256
        (memory-mapped from the cache file when ``cache_dir`` is given).
    Introduced in notebook 03.
    """
    model = teacher.model if isinstance(teacher, Checkpoint) else teacher
    images = getattr(tensors, "images", tensors)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            "compute_teacher_targets expects ImageTensors or a uint8 tensor (N, 3, S, S); got "
            f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}"
        )
    dkey, tkey = data_hash(images), teacher_hash(model)
    if cache_dir is None:
        patches, pooled = teacher_outputs(model, images, batch_size, device, progress)
        return TeacherTargets(patches, pooled, dkey, tkey, None, from_cache=False)

    n = images.shape[0]
    side = model.grid_size(images.shape[-1])
    grid = [1, side, side]
    path = Path(cache_dir) / f"teacher_targets_{dkey[:16]}_{tkey[:16]}.f32"
    meta = {
        "version": _TARGETS_VERSION,
        "data_hash": dkey,
        "teacher_hash": tkey,
        "count": n,
        "patch_shape": grid,
    }
    ctx = distributed.context()
    cached = _stored(path, meta)
    if ctx.distributed:  # every rank must agree on whether to compute (a collective pass follows)
        cached = cached if distributed.broadcast_object(cached is not None) else None
    if cached is not None:
        return cached

    per = int(np.prod(grid))
    # one partial file per job (rank 0's process id, shared by its ranks): two runs computing the same targets
    # into one cache at the same time each finish their own file, and the last rename wins with equal contents
    job = distributed.broadcast_object(os.getpid()) if ctx.distributed else os.getpid()
    partial = path.with_name(f"{path.name}.{job}.partial")
    if ctx.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as fh:
            fh.truncate(n * (per + 1) * 4)
    distributed.barrier()
    lo, hi = distributed.shard_range(n, ctx)
    fd = os.open(partial, os.O_RDWR)
    try:
        chunks = range(lo, hi, TARGET_CHUNK)
        for start in tqdm(chunks, desc="teacher targets", unit="chunk", disable=not progress or len(chunks) < 2):
            end = min(start + TARGET_CHUNK, hi)
            patches, pooled = teacher_outputs(model, images[start:end], batch_size, device, progress=False)
            _write_rows(fd, patches.float(), start * per * 4)
            _write_rows(fd, pooled.float(), (n * per + start) * 4)
            release_pages()
        os.fsync(fd)
    finally:
        os.close(fd)
    distributed.barrier()  # every rank's rows are on disk
    if ctx.is_main:
        meta_path = path.with_suffix(".json")
        tmp = meta_path.with_name(f".{meta_path.name}.{job}.tmp")
        tmp.write_text(json.dumps(meta) + "\n")
        tmp.replace(meta_path)
        partial.replace(path)
    distributed.barrier()
    stored = _stored(path, meta)
    if stored is None:
        raise RuntimeError(f"teacher targets written to {path} could not be read back")
    stored.from_cache = False
    return stored
