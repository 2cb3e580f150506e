"""Distilling the teacher into Tiny-LaDeDa: single-stage training and the two-stage fine-tune.

* :func:`train_student` — ``ladeda train-student``: a fresh Tiny-LaDeDa (or ``init`` weights), every layer
  trainable, Adam, loss ``α_d·MSE(aligned patches) + α_t·BCE(pooled logit)`` (:mod:`.loss`).
* :func:`train_student_two_stage` — ``ladeda train-student-two-stage``: start from an existing student;
  stage 1 trains ``fc`` only (conv1, conv2, bn1, layer1 frozen; ReduceLROnPlateau), stage 2 trains
  ``layer1`` and ``fc`` (conv1, conv2, bn1 frozen; CosineAnnealingLR). Frozen BatchNorm layers are kept in
  eval mode, so their running statistics are exactly those of the starting student.

Both take a dataclass config (:mod:`.config`), share the loop in :mod:`.loop` (checkpoints, resume, NaN
guard, ``log.json``) and return a :class:`~ladeda_lib.distill.loop.TrainResult`. The teacher's maps of the
clean images are computed once and cached (:mod:`.targets`); with augmentation the default is *consistent*
targets, the teacher run on the augmented batch itself (:class:`StudentTask`). Introduced in notebook 04 (single stage) and 05 (two stages).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ladeda_lib.checkpoints import Checkpoint, load_checkpoint
from ladeda_lib.data.augment import with_augmentation
from ladeda_lib.data.images import normalize_uint8
from ladeda_lib.distill.config import (
    STAGE1_FROZEN,
    STAGE2_FROZEN,
    StudentTrainConfig,
    TwoStageTrainConfig,
    resolve_two_stage_init,
)
from ladeda_lib.distill.crops import check_crop, crop_options, cut_crops, plan_crops
from ladeda_lib.distill.data import TrainingData, labelled_subset, load_training_data, teacher_label_note
from ladeda_lib.distill.loop import Stage, TrainResult, fit
from ladeda_lib.distill.loss import distillation_loss, target_scale
from ladeda_lib.distill.offset import decision_offset_hook
from ladeda_lib.distill.targets import TeacherTargets, compute_teacher_targets, teacher_hash
from ladeda_lib.distill.teacher import get_teacher
from ladeda_lib.evaluation import binary_metrics
from ladeda_lib.geometry import align_indices
from ladeda_lib.models import LaDeDa, PatchDetector, TinyLaDeDa, TopKPool
from ladeda_lib.paths import shown
from ladeda_lib.runner import predict
from ladeda_lib.timing import resolve_device


class StudentTask:
    """Distillation batches: uint8 images, labels and teacher patch logits (see :mod:`.loop`).

    With ``augment`` on in the config, :func:`prepare_student_run` wraps it in
    :class:`~ladeda_lib.data.augment.AugmentedTask`, which degrades the batch's images. What the MSE term
    compares with then depends on ``teacher``:

    * ``teacher`` None (**cached** targets): the teacher's maps of the CLEAN images, computed once — the student
      learns to give on a degraded image the patch map the teacher gives on the clean one.
    * ``teacher`` given (**consistent** targets): :meth:`targets_for` runs the frozen teacher on exactly the
      batch the student sees (degraded or not), on the fly, without gradients — the teacher and the student
      score the same view (Beyer et al., CVPR 2022). The unit ``scale`` stays the RMS of the clean maps.

    Validation is clean, so it always compares with the cached clean maps.

    With ``crop_size`` set it trains on random crops instead of whole images (:mod:`.crops`).
    """

    def __init__(
        self,
        data: TrainingData,
        train_targets: TeacherTargets,
        val_targets: TeacherTargets,
        indices: torch.Tensor,
        alpha_distill: float = 0.5,
        alpha_task: float = 0.5,
        eval_batch_size: int = 32,
        device: torch.device | str = "cpu",
        scale: float = 1.0,
        clip: float | None = None,
        labelled: torch.Tensor | None = None,
        teacher: PatchDetector | None = None,
        pool_warmup_epochs: int = 0,
        crop_size: int | None = None,
        crops_per_image: int = 1,
        crop_step: int = 8,
        crop_indices: torch.Tensor | None = None,
    ) -> None:
        if len(train_targets) != len(data.train) or len(val_targets) != len(data.val):
            raise ValueError("teacher targets and images differ in number; recompute the targets")
        self.images, self.labels, self.targets = data.train.images, data.train.labels, train_targets.patches
        self.val_images, self.val_labels, self.val_targets = data.val.images, data.val.labels, val_targets.patches
        self.indices = indices
        self.alpha_distill, self.alpha_task = alpha_distill, alpha_task
        self.scale, self.clip = scale, clip
        n = self.labels.shape[0]
        self.labelled = torch.ones(n, dtype=torch.bool) if labelled is None else labelled.to(torch.bool)
        if self.labelled.shape != (n,):
            raise ValueError(f"labelled mask has shape {tuple(self.labelled.shape)}; expected ({n},)")
        self.eval_batch_size = eval_batch_size
        self.device = torch.device(device)
        self.teacher = teacher
        self.pool_warmup_epochs, self.epoch = int(pool_warmup_epochs), 0
        if teacher is not None:
            teacher.freeze()  # eval mode, no gradients: its weights and BatchNorm statistics never move
        self.crop, self.copies, self.crop_step, self.crop_indices = (
            crop_size,
            int(crops_per_image),
            crop_step,
            crop_indices,
        )
        size = self.images.shape[-1]
        self.positions = 0 if crop_size is None else check_crop(crop_size, self.copies, crop_step, size, crop_indices)

    @property
    def consistent(self) -> bool:
        """True when the teacher scores each training batch on the fly (see the class docstring)."""
        return self.teacher is not None

    def plan(self, generator: torch.Generator, batch_size: int) -> list[Any]:
        """Batches of image indices; with crops, (indices, crop tops, crop lefts), every image ``copies`` times."""
        n = self.images.shape[0]
        if self.crop is None:
            return list(torch.randperm(n, generator=generator).split(batch_size))
        return plan_crops(n, self.copies, self.positions, self.crop_step, generator, batch_size)

    def fetch(self, spec: Any) -> dict[str, torch.Tensor]:
        if self.crop is None:
            idx = spec
            batch = {"images": self.images[idx], "labels": self.labels[idx], "labelled": self.labelled[idx]}
            if not self.consistent:
                batch["teacher"] = self.targets[idx]
            return batch
        maps = None if self.consistent else self.targets  # cached: the window of the whole image's map
        images, windows = cut_crops(self.images, maps, spec, self.crop, self.crop_step, len(self.crop_indices))
        batch = {"images": images, "labels": self.labels[spec[0]], "labelled": self.labelled[spec[0]]}
        return batch if windows is None else {**batch, "teacher": windows}

    @torch.no_grad()
    def targets_for(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher patch logits (B, 1, 31, 31) the MSE compares with for this batch: the cached clean maps,
        or (consistent mode) the frozen teacher run now on ``batch["images"]`` — the images as the student sees
        them, after any augmentation."""
        if not self.consistent:
            return batch["teacher"]
        images = batch["images"]
        return self.teacher.forward_with_patches(normalize_uint8(images))[1].float()

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def loss(self, model: PatchDetector, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logit, patches = model.forward_with_patches(normalize_uint8(batch["images"]))
        if self.epoch < self.pool_warmup_epochs:  # pooling warm-up: the BCE sees more patches than K
            flat = patches.flatten(1)
            k = getattr(model, "module", model).pool.warmup(flat.shape[1], self.epoch, self.pool_warmup_epochs)
            logit = TopKPool(k)(patches)
        terms = distillation_loss(
            patches,
            logit,
            self.targets_for(batch),
            batch["labels"],
            alpha_distill=self.alpha_distill,
            alpha_task=self.alpha_task,
            indices=self.indices if self.crop is None else self.crop_indices,
            scale=self.scale,
            clip=self.clip,
            labelled=batch["labelled"],
        )
        return {"loss": terms.total, "distill": terms.distill, "task": terms.task}

    @torch.no_grad()
    def validate(self, model: PatchDetector, images: torch.Tensor | None = None) -> dict[str, float]:
        """Metrics on the val split, or on ``images`` (a degraded copy of it: same order, labels and targets)."""
        images = self.val_images if images is None else images
        logits, patches = predict(model, images, self.eval_batch_size, self.device, keep_patches=True)
        terms = distillation_loss(
            patches,
            logits[:, None],
            self.val_targets,
            self.val_labels,
            alpha_distill=self.alpha_distill,
            alpha_task=self.alpha_task,
            indices=self.indices,
            scale=self.scale,
            clip=self.clip,
        )
        metrics = binary_metrics(self.val_labels, logits)
        return {
            "loss": terms.total.item(),
            "distill": terms.distill.item(),
            "task": terms.task.item(),
            **{k: metrics[k] for k in ("accuracy", "ap", "auc", "real_acc", "fake_acc")},
        }


@dataclass
class Prepared:
    """Everything a student run needs before the loop: data, teacher targets, alignment, device."""

    data: TrainingData
    task: StudentTask
    teacher_info: dict[str, Any]
    device: torch.device
    notes: list[str] = field(default_factory=list)


def prepare_student_run(
    cfg: StudentTrainConfig | TwoStageTrainConfig,
    teacher: PatchDetector | Checkpoint | None = None,
    data: TrainingData | None = None,
    progress: bool = True,
) -> Prepared:
    """Decode the data, get the frozen teacher, compute (or load cached) teacher targets for train and val.

    ``teacher`` may be passed in memory (it is frozen: eval mode, no gradients, weights untouched);
    otherwise :func:`~ladeda_lib.distill.teacher.get_teacher` resolves ``cfg.teacher``. With
    ``alpha_distill == 0`` (the labels-only baseline) no teacher is needed and none is loaded.
    """
    device = resolve_device(cfg.device)
    mode = cfg.target_mode()
    cache_dir = cfg.resolved_cache_dir()
    data = data or load_training_data(cfg.data, cache_dir, progress)
    if cfg.alpha_distill == 0:
        # Labels only: the teacher's maps would be multiplied by zero, so no teacher is loaded, trained or run.
        model = LaDeDa(width=1)  # only its geometry is used (the 31×31 grid the loss aligns to)
        grid = model.grid_size(data.train.images.shape[-1])
        train_targets = _no_targets(len(data.train), grid)
        val_targets = _no_targets(len(data.val), grid)
        info: dict[str, Any] = {"arch": None, "labels_only": True}
        live_teacher, trained_with = None, None
    else:
        if teacher is None:
            teacher = get_teacher(cfg.teacher, cfg.data, progress=progress)
        ckpt = teacher if isinstance(teacher, Checkpoint) else None
        model = teacher.model if isinstance(teacher, Checkpoint) else teacher
        trained_with = ckpt.metadata.get("config") if ckpt is not None else None  # the teacher's training config
        model.freeze()
        teacher_device = next(model.parameters()).device
        model.to(device)
        try:
            kwargs = {"cache_dir": cache_dir, "batch_size": cfg.batch_size, "device": device, "progress": progress}
            train_targets = compute_teacher_targets(model, data.train, **kwargs)
            val_targets = compute_teacher_targets(model, data.val, **kwargs)
        finally:
            model.to(teacher_device)
        # consistent targets: a private channels-last copy on the training device scores every batch
        live_teacher = None
        if mode == "consistent":
            live_teacher = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last)
        info = {
            "arch": model.arch,
            "config": model.config(),
            "parameters": model.num_parameters(),
            "path": str(ckpt.path) if ckpt is not None and ckpt.path else None,
            "published": bool(ckpt.published) if ckpt is not None else False,
            "hash": teacher_hash(model)[:16],
            "targets_cached": bool(train_targets.from_cache and val_targets.from_cache),
            "targets": mode,
        }
    size = data.train.images.shape[-1]
    indices = align_indices(TinyLaDeDa().geometry(), model.geometry(), size)
    scale = target_scale(train_targets.patches) if cfg.target_scale is None else float(cfg.target_scale)
    label_seed = cfg.seed if cfg.label_seed is None else cfg.label_seed
    labelled = labelled_subset(data.train.labels, cfg.label_fraction, label_seed)
    task = StudentTask(
        data,
        train_targets,
        val_targets,
        indices,
        cfg.alpha_distill,
        cfg.alpha_task,
        cfg.batch_size,
        device,
        scale=scale,
        clip=cfg.target_clip,
        labelled=labelled,
        teacher=live_teacher,
        pool_warmup_epochs=getattr(cfg, "pool_warmup_epochs", 0),
        **crop_options(cfg, model),
    )
    # degrades the images; cached clean targets stay as they are, a live teacher scores the degraded batch
    task = with_augmentation(
        task, cfg.augment, getattr(cfg, "augment_warmup_epochs", 0), getattr(cfg, "val_views", "clean")
    )
    info.update({"target_scale": scale, "target_clip": cfg.target_clip})
    notes = [data.note] if data.note else []
    if cfg.label_fraction < 1.0:
        notes.append(
            f"label fraction {cfg.label_fraction:g}: the BCE term sees the labels of {int(labelled.sum())} of "
            f"{labelled.numel()} training images; the distillation term sees the teacher's maps of all of them"
        )
        if cfg.alpha_distill > 0 and (warn := teacher_label_note(trained_with, cfg.label_fraction, label_seed)):
            notes.append(warn)
    return Prepared(data, task, info, device, notes)


def _no_targets(n: int, grid: int) -> TeacherTargets:
    """Zero teacher maps (n, 1, grid, grid) for a labels-only run, where the distillation term has weight 0."""
    return TeacherTargets(torch.zeros(n, 1, grid, grid), torch.zeros(n, 1), "", "")


#: ``--schedule`` values and the :class:`~ladeda_lib.distill.loop.Stage` scheduler each one means.
SCHEDULES = {"constant": None, "cosine": "cosine", "warmup_cosine": "warmup_cosine"}


def schedule_name(schedule: str) -> str | None:
    """The loop's scheduler for a ``--schedule`` value (``ValueError`` naming the choices for anything else)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"--schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule]


def _new_student(cfg: StudentTrainConfig | TwoStageTrainConfig) -> TinyLaDeDa:
    torch.manual_seed(cfg.seed)
    return TinyLaDeDa(preprocess=cfg.preprocess, pool=cfg.pool)


def load_student(path: str | Path, pool: Any) -> TinyLaDeDa:
    """A Tiny-LaDeDa checkpoint (or published state_dict) with the given top-K pooling."""
    return load_checkpoint(path, expected="TinyLaDeDa", pool=pool).model


def _fit_kwargs(cfg: StudentTrainConfig | TwoStageTrainConfig, prep: Prepared, progress: bool, callback: Any) -> dict:
    return {
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "resume": cfg.resume,
        "device": prep.device,
        "num_workers": cfg.num_workers,
        "amp": cfg.amp,
        "progress": progress,
        "callback": callback,
    }


def _finisher(cfg: StudentTrainConfig | TwoStageTrainConfig, prep: Prepared) -> Any:
    """The run's finishing hook: the decision offset of the final and best student (None with ``fit_offset`` off)."""
    if not cfg.fit_offset:
        return None
    train, val = prep.data.train, prep.data.val
    # only the images whose labels training may use (all of them unless --label-fraction is below 1)
    return decision_offset_hook(
        train.images,
        train.labels,
        val.images,
        val.labels,
        labelled=prep.task.labelled,
        batch_size=cfg.batch_size,
        device=prep.device,
    )


def train_student(
    config: StudentTrainConfig | None = None,
    *,
    teacher: PatchDetector | Checkpoint | None = None,
    data: TrainingData | None = None,
    progress: bool = True,
    callback: Any = None,
) -> TrainResult:
    """Single-stage distillation of the teacher into a fresh Tiny-LaDeDa (all layers train; Adam).

    Args:
        config: epochs (50), batch size (32), lr (1e-2), α's (0.5/0.5), data, teacher, output
            (``weights/single_stage``), device, seed, resume — see :class:`StudentTrainConfig`.
        teacher: an in-memory teacher (else ``config.teacher`` / :func:`get_teacher`).
        data: already-decoded :class:`~ladeda_lib.distill.data.TrainingData`.
        progress: progress bars and per-epoch summaries. callback: called with each epoch's history row.

    Returns:
        :class:`~ladeda_lib.distill.loop.TrainResult`; files ``OUTPUT/student_final.pt``, ``student_best.pt``,
        ``epoch_NNN.pt``, ``log.json``, ``resume.pt``.
    Introduced in notebook 04.
    """
    cfg = config or StudentTrainConfig()
    scheduler = schedule_name(cfg.schedule)  # a bad --schedule fails before any data or teacher is loaded
    prep = prepare_student_run(cfg, teacher, data, progress)
    student = _new_student(cfg)
    if cfg.init is not None:
        student = load_student(cfg.init, cfg.pool)
        prep.notes.append(f"started from {shown(cfg.init)}")
    metadata = {
        "kind": "student",
        "training": "single_stage",
        "config": cfg.to_dict(),
        "teacher": prep.teacher_info,
        "data": prep.data.describe(),
    }
    stage = Stage(
        "single",
        cfg.epochs,
        cfg.lr,
        scheduler=scheduler,
        warmup_epochs=cfg.lr_warmup_epochs,
        weight_decay=cfg.weight_decay,
    )
    result = fit(
        student,
        [stage],
        prep.task,
        cfg.resolved_output(),
        metadata=metadata,
        finish=_finisher(cfg, prep),
        **_fit_kwargs(cfg, prep, progress, callback),
    )
    result.notes[:0] = prep.notes
    return result


def train_student_two_stage(
    config: TwoStageTrainConfig | None = None,
    *,
    teacher: PatchDetector | Checkpoint | None = None,
    data: TrainingData | None = None,
    init_model: TinyLaDeDa | None = None,
    progress: bool = True,
    callback: Any = None,
) -> TrainResult:
    """Two-stage fine-tuning of an existing student (stage 1: fc only; stage 2: layer1 + fc).

    Args:
        config: see :class:`TwoStageTrainConfig` (epochs_s1 5, epochs_s2 20, batch size 16, lr 1e-3 / 1e-4).
        teacher, data: as in :func:`train_student`.
        init_model: an in-memory starting student (takes precedence over ``config.init``; copied, not changed).

    Returns:
        :class:`~ladeda_lib.distill.loop.TrainResult` (``notes`` says where it started); files
        ``OUTPUT/student_final.pt``, ``student_best.pt``, ``stage1_epoch_NNN.pt``, ``stage2_epoch_NNN.pt``,
        ``log.json``, ``resume.pt`` (and ``warmup/`` if a warm-up was needed).
    Introduced in notebook 05.
    """
    cfg = config or TwoStageTrainConfig()
    prep = prepare_student_run(cfg, teacher, data, progress)
    kwargs = _fit_kwargs(cfg, prep, progress, callback)
    init_path: Path | None = None
    if init_model is not None:
        student = TinyLaDeDa(preprocess=init_model.preprocess.name, pool=cfg.pool)
        student.load_state_dict(init_model.state_dict())
        source = "starting from the student passed in memory"
    else:
        path, source = resolve_two_stage_init(cfg)
        if progress:
            print(source)
        if path is None:
            warm_stage = Stage("warmup", cfg.warmup_epochs, cfg.warmup_lr, weight_decay=cfg.weight_decay)
            warm_meta = {"kind": "student", "training": "warmup", "config": cfg.to_dict(), "teacher": prep.teacher_info}
            warm = fit(
                _new_student(cfg),
                [warm_stage],
                prep.task,
                cfg.resolved_output() / "warmup",
                metadata=warm_meta,
                **kwargs,
            )
            student = warm.model
            init_path = warm.final_path
        else:
            student = load_student(path, cfg.pool)
            init_path = path
    prep.notes.append(source)
    metadata = {
        "kind": "student",
        "training": "two_stage",
        "init": source,
        # exactly which weights the run started from: later runs may overwrite the file at init_path
        "init_path": None if init_path is None else str(init_path),
        "init_hash": teacher_hash(student)[:16],
        "config": cfg.to_dict(),
        "teacher": prep.teacher_info,
        "data": prep.data.describe(),
    }
    stages = [
        Stage(
            "stage1",
            cfg.epochs_s1,
            cfg.lr_s1,
            frozen=STAGE1_FROZEN,
            scheduler="plateau",
            weight_decay=cfg.weight_decay,
            plateau_factor=cfg.plateau_factor,
            plateau_patience=cfg.plateau_patience,
            checkpoint_prefix="stage1_",
        ),
        Stage(
            "stage2",
            cfg.epochs_s2,
            cfg.lr_s2,
            frozen=STAGE2_FROZEN,
            scheduler="cosine",
            weight_decay=cfg.weight_decay,
            checkpoint_prefix="stage2_",
        ),
    ]
    result = fit(
        student, stages, prep.task, cfg.resolved_output(), metadata=metadata, finish=_finisher(cfg, prep), **kwargs
    )
    result.notes[:0] = prep.notes
    return result
