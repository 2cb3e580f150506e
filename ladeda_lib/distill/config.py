"""Training configuration as data: one dataclass per command, defaults = the seed's.

Every field maps to a CLI flag of the same name (``batch_size`` ↔ ``--batch-size``); notebooks build the
dataclasses directly with small values (``StudentTrainConfig(epochs=3)``). Paths left as ``None`` resolve
to the project defaults (toy data, ``weights/…``) when a run starts. Introduced in notebook 03.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ladeda_lib.data.augment import VAL_VIEWS, AugmentConfig
from ladeda_lib.models import DEFAULT_TOPK
from ladeda_lib.paths import shown, weights_dir
from ladeda_lib.registry import published

#: Modules of Tiny-LaDeDa frozen in stage 1 (only ``fc`` trains) and in stage 2 (``layer1`` and ``fc`` train).
STAGE1_FROZEN = ("conv1", "conv2", "bn1", "layer1")
STAGE2_FROZEN = ("conv1", "conv2", "bn1")


@dataclass
class RunOptions:
    """What every training command shares: data, output, device, seed, resume and the loader."""

    data: str | Path | None = None  # dataset root (any layout detect_dataset accepts); None = toy set
    output: str | Path | None = None  # run folder (None = the command's default under weights/)
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    seed: int = 0
    resume: bool = False  # continue from OUTPUT/resume.pt when present
    batch_size: int = 32
    num_workers: int | None = None  # DataLoader workers; None = 0 on CPU, 2 on CUDA
    amp: bool | None = None  # mixed precision; None = on for CUDA only
    cache_dir: str | Path | None = None  # image-tensor and teacher-target cache (None = weights/cache)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (paths as strings), stored in logs and checkpoint metadata."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else weights_dir() / "cache"


@dataclass
class TeacherTrainConfig(RunOptions):
    """``ladeda train-teacher``: the compact LaDeDa teacher, image-level BCE on the pooled logit.

    The teacher is patch-local (receptive field 9×9 in the published layout, 11×11 with the shipped teacher's
    filter; :meth:`~ladeda_lib.models.base.PatchDetector.geometry` gives it), so it trains on random
    ``crop_size`` crops placed on the 8-pixel patch grid: inside the crop its patches are the full image's
    patches, and only the outermost ring, whose filter reaches past the crop, sees zero padding instead.
    Validation uses the full 256×256 images. ``output`` is the checkpoint FILE (default ``weights/teacher_compact.pt``); the
    run's epoch checkpoints and log go next to it in ``<output stem>_run/``.
    """

    width: int = 16
    # The fixed input filter. The published LaDeDa uses NPR (x - up2(down2(x)), nearest); on the toy platforms,
    # which rescale by non-integer factors, NPR's 2x2 grid no longer lines up with the traces and an NPR teacher
    # generalised worse (facebook-like AP 0.54 vs 0.67 after similar training): the compact recipe uses the
    # student's diagonal gradient. Published checkpoints keep NPR.
    preprocess: str = "right_diag"
    epochs: int = 14
    lr: float = 1e-3
    weight_decay: float = 0.0
    crop_size: int = 64
    crops_per_image: int = 8  # 8 random 64x64 crops per image and epoch: 75 steps an epoch on the toy set
    # Mean pooling (K = all), as the published LaDeDa is trained: every patch logit is pushed towards the
    # image label, so the patch map is a per-patch target worth distilling. With top-K pooling only the top
    # 10 % of patches get a gradient and the rest drift freely (real-image patch logits down to -150 on the
    # toy set); distilling such maps cost the student 30-50 AP points on toy val in our runs.
    pool: Any = "all"
    # Save the epoch with the highest validation AP (ties: lower validation loss), not simply the last one:
    # the AP of a short run swings by several points from epoch to epoch.
    keep_best: bool = True
    # Training-time degradations (blur / rescale / JPEG) of the crops; off by default (see notebook 09).
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Train on the labelled share only (labelled_subset(labels, label_fraction, label_seed or seed)): a teacher
    # for the label-scarce comparison never sees the labels its students withhold.
    label_fraction: float = 1.0
    label_seed: int | None = None

    def resolved_output(self) -> Path:
        return Path(self.output) if self.output is not None else weights_dir() / "teacher_compact.pt"


#: How the teacher's patch targets reach the student: computed once on the clean images and cached, or
#: computed on the fly on exactly the (augmented) batch the student sees; "auto" = consistent when
#: augmentation is on, cached otherwise (where the two are the same).
TARGET_MODES = ("auto", "cached", "consistent")


@dataclass
class StudentOptions(RunOptions):
    """What single-stage and two-stage student training share: teacher, start, loss, pooling and data options.

    ``teacher`` is a checkpoint path (None = :func:`~ladeda_lib.distill.teacher.get_teacher`'s default).
    ``init`` optionally starts from existing student weights instead of a fresh initialisation.
    """

    teacher: str | Path | None = None
    init: str | Path | None = None
    weight_decay: float = 0.0
    alpha_distill: float = 0.5
    alpha_task: float = 0.5
    # Teacher patch logits are divided by target_scale (None = their root mean square over the training images)
    # and clipped to ±target_clip before the MSE, so the two loss terms have the same size (see distill/loss.py).
    target_scale: float | None = None
    target_clip: float | None = 4.0
    label_fraction: float = 1.0  # share of training images whose labels the BCE term may use (stratified)
    label_seed: int | None = None  # seed that draws those images (None = seed); a label-scarce teacher's must match
    preprocess: str = "right_diag"
    pool: Any = DEFAULT_TOPK
    fit_offset: bool = True  # fit the decision offset (fc.bias) on the training images after training
    # Training-time degradations of the student's input (see targets for what the teacher scores).
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # "consistent": the teacher scores the same augmented batch the student sees, on the fly (Beyer et al.,
    # CVPR 2022); "cached": the teacher's maps of the clean images, computed once; "auto": consistent when
    # augment is on. The target scale is the RMS of the clean images' cached maps in every mode.
    targets: str = "auto"

    def target_mode(self) -> str:
        """ "cached" or "consistent": what ``targets`` means for this config (``ValueError`` if unknown)."""
        if self.targets not in TARGET_MODES:
            raise ValueError(f"--targets {self.targets!r}: expected one of {', '.join(TARGET_MODES)}")
        if self.targets == "auto":
            return "consistent" if self.augment.enabled and self.alpha_distill > 0 else "cached"
        return self.targets


@dataclass
class StudentTrainConfig(StudentOptions):
    """``ladeda train-student``: single-stage distillation, Adam, loss α_d·MSE + α_t·BCE (see :class:`StudentOptions`).

    ``schedule``: ``"constant"`` (the seed's), ``"cosine"`` or ``"warmup_cosine"`` (linear warm-up over
    ``lr_warmup_epochs``, then cosine decay to zero; set per optimizer step).
    """

    epochs: int = 50
    # 1e-2, not Adam's usual 1e-3: Tiny-LaDeDa has 1,297 parameters and a small dataset gives few steps per
    # epoch (toy set: 10); at 1e-3 the patch logits could not reach the teacher's scale within the run.
    lr: float = 1e-2
    schedule: str = "constant"
    lr_warmup_epochs: float = 1.0
    # Pooling warm-up: for this many first epochs the BCE term pools more patches than K (all in the first
    # epoch, then geometrically fewer; TopKPool.warmup), so every patch gets a gradient while the filters form.
    # Validation and the saved model always use K.
    pool_warmup_epochs: int = 0
    # Augmentation warm-up: epoch e < this uses every augment probability × e / this (the first epoch is clean).
    augment_warmup_epochs: int = 0
    # What "val AP" (checkpoint selection) is measured on when --augment is on: "clean" (the val split as it is)
    # or "clean+degraded" (the mean of the AP on it and on one fixed copy degraded by the --augment config).
    val_views: str = "clean"
    # Train on random crop_size-square crops (corners on the teacher's 8-pixel patch grid), crops_per_image of each
    # image per epoch, instead of whole images; None = whole images. Validation always uses whole images. The
    # detector is patch-local: 4 crops of 64 pixels cost a quarter of one whole 256-pixel image and, per epoch,
    # teach about as much (docs/results.md), which is what makes a long recipe fit the pipeline's budget.
    crop_size: int | None = None
    crops_per_image: int = 1

    def __post_init__(self) -> None:
        if self.val_views not in VAL_VIEWS:
            raise ValueError(f"--val-views {self.val_views!r}: expected one of {', '.join(VAL_VIEWS)}")
        if self.val_views != "clean" and not self.augment.enabled:
            raise ValueError(f"--val-views {self.val_views} degrades val with the --augment setting: turn --augment on")
        if self.crop_size is not None and (self.crop_size < 16 or self.crop_size % 8):
            raise ValueError(
                f"--crop-size {self.crop_size}: expected a multiple of 8, at least 16 (or none: whole images)"
            )
        if self.crops_per_image < 1:
            raise ValueError(f"--crops-per-image {self.crops_per_image}: expected at least 1")

    def resolved_output(self) -> Path:
        return Path(self.output) if self.output is not None else weights_dir() / "single_stage"


@dataclass
class TwoStageTrainConfig(StudentOptions):
    """``ladeda train-student-two-stage``: fine-tune an existing student in two stages.

    Stage 1 trains ``fc`` only (conv1, conv2, bn1, layer1 frozen; Adam ``lr_s1``, ReduceLROnPlateau on the
    validation loss). Stage 2 trains ``layer1`` and ``fc`` (conv1, conv2, bn1 frozen; Adam ``lr_s2``,
    CosineAnnealingLR over ``epochs_s2``). Frozen BatchNorm layers stay in eval mode, so their running
    statistics do not move. Without ``init`` the run starts from ``weights/single_stage/student_final.pt``,
    else a published Tiny-LaDeDa in ``weights/``, else a ``warmup_epochs`` single-stage warm-up.
    """

    epochs_s1: int = 5
    epochs_s2: int = 20
    lr_s1: float = 1e-3
    lr_s2: float = 1e-4
    warmup_epochs: int = 10
    warmup_lr: float = 1e-2
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    batch_size: int = 16

    def resolved_output(self) -> Path:
        return Path(self.output) if self.output is not None else weights_dir() / "two_stage"


def resolve_two_stage_init(cfg: TwoStageTrainConfig) -> tuple[Path | None, str]:
    """Where two-stage training starts: (path or None for "train a warm-up first", a sentence saying which)."""
    if cfg.init is not None:
        return Path(cfg.init), f"starting from --init {shown(cfg.init)}"
    single = weights_dir() / "single_stage" / "student_final.pt"
    if single.is_file():
        return single, f"no --init given: starting from the single-stage student {shown(single)}"
    for entry in published("student"):
        path = entry.path
        if path.is_file():
            return path, f"no --init given: starting from the published Tiny-LaDeDa {shown(path)}"
    warm = cfg.resolved_output() / "warmup" / "student_final.pt"
    if warm.is_file():
        return warm, f"no --init given: reusing this run's earlier single-stage warm-up {shown(warm)}"
    return None, (
        f"no --init given and no student in {shown(weights_dir())} (single_stage/student_final.pt or a published "
        f"Tiny-LaDeDa): training a {cfg.warmup_epochs}-epoch single-stage warm-up first"
    )
