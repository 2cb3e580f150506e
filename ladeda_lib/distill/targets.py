"""Teacher targets: the frozen teacher's patch map and pooled logit for every training image, computed once.

The teacher never changes while the student trains, so its outputs are computed once — batched, without
gradients, in eval mode, on the same uint8 → normalised tensors the student sees (the shared input
geometry) — and stored in ``<cache_dir>/teacher_targets_<data>_<teacher>.pt``. The file name holds a hash
of the image bytes and a hash of the teacher's weights and configuration, so changing either (new data,
retrained teacher, other pooling) computes fresh targets, and everything else reuses them.
Introduced in notebook 03.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ladeda_lib.checkpoints import Checkpoint, atomic_torch_save
from ladeda_lib.models import PatchDetector

_TARGETS_VERSION = 1


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


def data_hash(images: torch.Tensor) -> str:
    """SHA-256 of a uint8 image tensor's shape and bytes: the same pixels give the same key."""
    images = images.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}".encode())
    h.update(images.numpy().tobytes())
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
    from ladeda_lib.evaluation import predict

    pooled, patches = predict(teacher, images, batch_size, device, progress, desc=desc, keep_patches=True)
    return patches, pooled.reshape(-1, 1)


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
        cache_dir: folder of the cache (None: compute, do not store).
        batch_size, device, progress: how the teacher runs.

    Returns:
        :class:`TeacherTargets` with ``patches`` (N, 1, 31, 31) and ``pooled`` (N, 1) at S = 256.
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
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"teacher_targets_{dkey[:16]}_{tkey[:16]}.pt"
        if path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # an unreadable cache file is recomputed, never trusted
                stored = None
            if (
                isinstance(stored, dict)
                and stored.get("version") == _TARGETS_VERSION
                and stored.get("data_hash") == dkey
                and stored.get("teacher_hash") == tkey
            ):
                return TeacherTargets(stored["patches"], stored["pooled"], dkey, tkey, path, from_cache=True)
    patches, pooled = teacher_outputs(model, images, batch_size, device, progress)
    if path is not None:
        payload = {
            "version": _TARGETS_VERSION,
            "data_hash": dkey,
            "teacher_hash": tkey,
            "patches": patches,
            "pooled": pooled,
        }
        atomic_torch_save(payload, path)
    return TeacherTargets(patches, pooled, dkey, tkey, path, from_cache=False)
