"""The teacher: the published LaDeDa when a user has it, else a compact LaDeDa trained here.

:func:`get_teacher` looks, in order, for an explicit path, ``weights/WildRF_LaDeDa.pth`` (the published
13.6 M-parameter teacher, loaded strictly), the compact teacher the project ships for its default toy data
(see :mod:`ladeda_lib.registry`; only when the data is that toy set) and ``weights/teacher_compact.pt``; if
none fits it trains the compact teacher with :func:`train_teacher`. Whatever it returns is frozen (eval mode, no gradients).

:func:`train_teacher` trains ``LaDeDa(width=16)`` — the published layout (31×31 patches at 256×256, stride 8,
9×9 pixels per patch, 11×11 once a preprocessing filter with a reach of one pixel is counted) at a quarter of the width — with the paper's objective, binary cross-entropy on the
pooled image logit — mean-pooled like the published teacher, so that every patch logit is a per-patch
real/fake score (the student distils exactly these patch logits). Because every output sees only a small patch, the teacher trains on random crops
placed on its 8-pixel patch grid (inside the crop its patch logits are the full image's; the outermost ring,
whose filter reaches past the crop, sees zero padding), which costs a fraction of full images; validation uses the full images. Introduced in notebook 01.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ladeda_lib.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from ladeda_lib.data.augment import with_augmentation
from ladeda_lib.data.images import normalize_uint8
from ladeda_lib.distill.config import TeacherTrainConfig
from ladeda_lib.distill.data import TrainingData, labelled_subset, load_training_data
from ladeda_lib.distill.loop import Stage, TrainResult, fit
from ladeda_lib.evaluation import binary_metrics, predict
from ladeda_lib.models import LaDeDa, PatchDetector
from ladeda_lib.paths import shown, weights_dir
from ladeda_lib.registry import PRETRAINED_DIR, get_entry, published, shipped_teacher_fits
from ladeda_lib.timing import resolve_device

COMPACT_TEACHER = "teacher_compact.pt"


class TeacherTask:
    """Random grid-aligned crops, BCE on the pooled logit; validation on full images (see :mod:`.loop`).

    With ``TeacherTrainConfig.augment`` on, :func:`train_teacher` wraps it in
    :class:`~ladeda_lib.data.augment.AugmentedTask`, which degrades the fetched crops (validation stays clean).
    """

    def __init__(
        self,
        data: TrainingData,
        crop_size: int,
        crops_per_image: int,
        stride: int,
        eval_batch_size: int,
        device: torch.device | str = "cpu",
        keep: torch.Tensor | None = None,
    ) -> None:
        size = data.train.images.shape[-1]
        if crop_size > size or crop_size < 16:
            raise ValueError(f"crop_size must lie in [16, {size}], got {crop_size}")
        self.images, self.labels = data.train.images, data.train.labels
        if keep is not None:  # only the labelled share (TeacherTrainConfig.label_fraction): the rest is never seen
            self.images, self.labels = self.images[keep], self.labels[keep]
        self.val_images, self.val_labels = data.val.images, data.val.labels
        self.crop, self.copies, self.stride = crop_size, crops_per_image, stride
        self.positions = (size - crop_size) // stride + 1
        self.eval_batch_size = eval_batch_size
        self.device = torch.device(device)

    def plan(self, generator: torch.Generator, batch_size: int) -> list[Any]:
        n = self.images.shape[0]
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(self.copies)])
        tops = torch.randint(0, self.positions, (order.numel(),), generator=generator) * self.stride
        lefts = torch.randint(0, self.positions, (order.numel(),), generator=generator) * self.stride
        return list(zip(order.split(batch_size), tops.split(batch_size), lefts.split(batch_size), strict=True))

    def fetch(self, spec: Any) -> dict[str, torch.Tensor]:
        idx, tops, lefts = spec
        c = self.crop
        crops = [self.images[i, :, t : t + c, left : left + c] for i, t, left in zip(idx, tops, lefts, strict=True)]
        return {"images": torch.stack(crops), "labels": self.labels[idx]}

    def loss(self, model: PatchDetector, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logit = model(normalize_uint8(batch["images"]))
        bce = F.binary_cross_entropy_with_logits(logit.reshape(-1).float(), batch["labels"].float())
        return {"loss": bce}

    def validate(self, model: PatchDetector, images: torch.Tensor | None = None) -> dict[str, float]:
        images = self.val_images if images is None else images  # a degraded copy of val (AugmentedTask)
        logits, _ = predict(model, images, self.eval_batch_size, self.device)
        bce = F.binary_cross_entropy_with_logits(logits, self.val_labels.float()).item()
        metrics = binary_metrics(self.val_labels, logits)
        return {"loss": bce, **{k: metrics[k] for k in ("accuracy", "ap", "auc", "real_acc", "fake_acc")}}


def train_teacher(
    config: TeacherTrainConfig | None = None,
    *,
    data: TrainingData | None = None,
    progress: bool = True,
    callback: Any = None,
) -> Checkpoint:
    """Train the compact LaDeDa teacher and save it to ``config.resolved_output()`` (default ``weights/teacher_compact.pt``).

    Args:
        config: width, epochs, crop size, lr, data, device, seed, resume (see :class:`TeacherTrainConfig`).
        data: already-decoded training data (skips decoding; else ``config.data`` is loaded).
        progress: tqdm bars and one summary line per epoch.
        callback: called with each epoch's history row.

    Returns:
        The saved teacher as a :class:`~ladeda_lib.checkpoints.Checkpoint` (model frozen, eval mode);
        ``metadata["history"]`` holds the per-epoch log. Run files go to ``<output stem>_run/``.
    Introduced in notebook 01.
    """
    cfg = config or TeacherTrainConfig()
    output = cfg.resolved_output()
    run_dir = output.with_name(output.stem + "_run")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    teacher = LaDeDa(width=cfg.width, preprocess=cfg.preprocess, pool=cfg.pool)
    data = data or load_training_data(cfg.data, cfg.resolved_cache_dir(), progress)
    stride = teacher.geometry().stride
    keep = labelled_subset(
        data.train.labels, cfg.label_fraction, cfg.seed if cfg.label_seed is None else cfg.label_seed
    )
    task = TeacherTask(data, cfg.crop_size, cfg.crops_per_image, stride, cfg.batch_size, device, keep)
    task = with_augmentation(task, cfg.augment)  # degrades the training crops when cfg.augment is on (notebook 09)
    start = time.perf_counter()
    metadata = {"kind": "teacher", "config": cfg.to_dict(), "data": data.describe()}
    result: TrainResult = fit(
        teacher,
        [Stage("teacher", cfg.epochs, cfg.lr, weight_decay=cfg.weight_decay)],
        task,
        run_dir,
        name="teacher",
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        resume=cfg.resume,
        device=device,
        num_workers=cfg.num_workers,
        amp=cfg.amp,
        # channels-last backward of the bottleneck stack crashes (segfault) in this PyTorch CPU build at
        # small widths; the contiguous layout is safe and costs little for the teacher.
        channels_last=False,
        metadata=metadata,
        progress=progress,
        callback=callback,
    )
    seconds = time.perf_counter() - start
    last = result.history[-1] if result.history else {}
    chosen, model = last, result.model
    if cfg.keep_best and result.best_path is not None and result.best is not None:
        chosen, model = result.best, load_checkpoint(result.best_path, expected="LaDeDa").model
    save_checkpoint(
        model,
        output,
        {
            **metadata,
            "train_seconds": seconds,
            "epoch": chosen.get("epoch"),
            "val": {k: v for k, v in chosen.items() if k.startswith("val_")},
            "history": result.history,
        },
    )
    if progress:
        which = "the best validation AP" if cfg.keep_best else "the last"
        print(
            f"teacher (width {cfg.width}, {teacher.num_parameters():,} parameters; epoch {chosen.get('epoch')} of "
            f"{len(result.history)}, {which}) saved to {shown(output)} after {seconds:.0f} s"
        )
    ckpt = load_checkpoint(output, expected="LaDeDa")
    ckpt.model.freeze()
    return ckpt


def default_teacher_path(data: str | Path | None = None) -> Path | None:
    """The teacher :func:`get_teacher` would load for ``data`` (None = the toy set), or None if it must be trained.

    Order: the published ``weights/WildRF_LaDeDa.pth`` → the project's shipped toy teacher, but only for
    the default toy dataset it was trained on (:mod:`ladeda_lib.registry`) → ``weights/teacher_compact.pt``.
    """
    for entry in published("teacher"):
        if entry.available():
            return entry.path
    shipped = get_entry("toy-teacher")
    if shipped.available() and shipped_teacher_fits(data):
        return shipped.path
    compact = weights_dir() / COMPACT_TEACHER
    return compact if compact.is_file() else None


def get_teacher(
    teacher_path: str | Path | None = None,
    data: str | Path | None = None,
    *,
    train_config: TeacherTrainConfig | None = None,
    progress: bool = True,
) -> Checkpoint:
    """The frozen teacher for distillation, as a :class:`~ladeda_lib.checkpoints.Checkpoint`.

    Order: ``teacher_path`` if given (must be a LaDeDa checkpoint; strict) → whatever
    :func:`default_teacher_path` finds for ``data`` (published, shipped for the toy data, or
    ``weights/teacher_compact.pt``) → train the compact teacher on ``data`` with ``train_config`` (default
    :class:`TeacherTrainConfig`) and save it to ``weights/teacher_compact.pt``. It says which on stdout
    when ``progress`` is on. The returned model is in eval mode with ``requires_grad=False`` everywhere.
    Introduced in notebook 01.
    """
    if teacher_path is not None:
        ckpt = load_checkpoint(teacher_path, expected="LaDeDa")
        source = f"teacher from {teacher_path}"
    else:
        path = default_teacher_path(data)
        if path is not None:
            ckpt = load_checkpoint(path, expected="LaDeDa")
            kind = "published" if ckpt.published else ("shipped toy" if path.parent == PRETRAINED_DIR else "compact")
            source = f"{kind} teacher from {path}"
        else:
            cfg = train_config or TeacherTrainConfig()
            if cfg.data is None and data is not None:
                cfg = replace(cfg, data=data)
            if progress:
                print(
                    f"no teacher for this data in {shown(weights_dir())}: training the compact teacher (width {cfg.width})"
                )
            ckpt = train_teacher(cfg, progress=progress)
            source = f"compact teacher trained now, saved to {shown(ckpt.path)}"
    ckpt.model.freeze()
    if progress:
        print(f"using the {source} ({ckpt.model.num_parameters():,} parameters, width {ckpt.config.get('width')})")
    return ckpt
