"""``ladeda train-teacher | teacher-targets | train-student | train-student-two-stage | evaluate``.

The training commands' flags are generated from the config dataclasses in :mod:`ladeda_lib.distill.config`
(:func:`add_config_flags`): every field ``batch_size`` becomes ``--batch-size`` with the dataclass default,
so a new field gets a flag and a default can never drift. Booleans get ``--flag/--no-flag``; ``X | None``
fields default to None. ``--data`` defaults to the toy set (generated if absent), ``--device`` to
auto/cpu/cuda/mps. Run any of them under ``torchrun --nproc_per_node N -m ladeda_lib ...`` to train on N
processes (:mod:`ladeda_lib.distributed`). ``evaluate`` lives in :mod:`ladeda_lib.evaluation` and is
registered from here.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

from ladeda_lib.distill.config import RunOptions, StudentTrainConfig, TeacherTrainConfig, TwoStageTrainConfig

#: Help text per field (fields without an entry get "default: X"). Introduced in notebook 03.
FIELD_HELP = {
    "data": "dataset root, any layout `ladeda data-info` accepts (default: the toy set, generated if absent)",
    "output": "output (default under weights/, see the command's help)",
    "device": "auto (cuda, then mps, then cpu), cpu, cuda or mps",
    "seed": "random seed (CPU runs are deterministic; under torchrun rank r also seeds torch with seed + r)",
    "resume": "continue from OUTPUT/resume.pt if present",
    "batch_size": "batch size (under torchrun: the global batch, split over the processes)",
    "num_workers": "DataLoader workers (default 0 on CPU, 2 on CUDA)",
    "amp": "mixed precision on CUDA (default: on for CUDA; --no-amp disables it)",
    "cache_dir": "image and teacher-target cache (default weights/cache)",
    "teacher": "teacher checkpoint (default: weights/WildRF_LaDeDa.pth, else the shipped toy teacher on the toy "
    "data, else weights/teacher_compact.pt, else train the compact teacher)",
    "init": "start from these student weights instead of a fresh init",
    "width": "stem width (64 = published LaDeDa)",
    "crop_size": "train on random crops of this side, a multiple of 8 (the teacher's patch grid); validation uses "
    "whole images (train-student: none = whole images)",
    "crops_per_image": "crops of each image per epoch (with --crop-size)",
    "keep_best": "save the epoch with the highest validation AP (--no-keep-best or --keep-last: the last epoch)",
    "pool": "top-K pooling: fraction (0.1), count (8) or 'all' (mean)",
    "alpha_distill": "weight of the patch MSE term",
    "alpha_task": "weight of the image BCE term",
    "preprocess": "the student's fixed input filter (right_diag, left_diag, x_grad, y_grad, npr, raw)",
    "fit_offset": "refit the decision offset (fc.bias) on the training images after training",
    "targets": "what the MSE term compares with: 'consistent' = the teacher's maps of the same augmented batch the "
    "student sees, computed on the fly; 'cached' = its maps of the clean images, computed once; 'auto' = "
    "consistent when --augment is on, else cached",
    "schedule": "learning-rate schedule: constant, cosine, or warmup_cosine (linear warm-up over "
    "--lr-warmup-epochs, then cosine decay to zero, set every step)",
    "lr_warmup_epochs": "warmup_cosine only: epochs of linear learning-rate warm-up",
    "pool_warmup_epochs": "epochs at the start in which the BCE term pools more patches than K (all of them in the "
    "first epoch, then geometrically fewer); validation and the saved model use K",
    "augment_warmup_epochs": "epochs over which the --augment probabilities ramp up from 0 (the first epoch is clean)",
    "val_views": "with --augment, what picks the best checkpoint: 'clean' = AP on the val split; 'clean+degraded' "
    "= the mean of that and the AP on one fixed copy of val degraded by the --augment setting",
    "epochs_s1": "stage 1 epochs (fc only)",
    "epochs_s2": "stage 2 epochs (layer1 + fc)",
    "warmup_epochs": "epochs of the single-stage warm-up when there is no student to start from",
    "warmup_lr": "learning rate of that warm-up",
    "plateau_factor": "stage 1 ReduceLROnPlateau: factor the learning rate is multiplied by",
    "plateau_patience": "stage 1 ReduceLROnPlateau: epochs without improvement before lowering it",
    "target_scale": "divide the teacher's patch logits by this before the MSE (default: their RMS over the "
    "training images)",
    "target_clip": "clip the scaled teacher targets to +-this (heavy tails cannot dominate the MSE)",
    "label_fraction": "share of training images whose labels training may use (stratified). train-student: the "
    "BCE term sees only theirs, the MSE term the teacher's maps of all images; train-teacher: the teacher trains on "
    "those images only",
    "label_seed": "seed that draws the labelled images (default: --seed); give a label-scarce teacher and its "
    "students the same --label-fraction and --label-seed",
    "augment": "training-time blur/rescale/JPEG (default off). Bare --augment = the platform preset: every image "
    "rescaled x0.45-1, then JPEG 60-95; or key=value overrides, ranges low:high, e.g. p_jpeg=0.8,jpeg_quality=30:90. "
    "It pays with labels and a long run: --alpha-distill 0 --alpha-task 1 --epochs 80 (notebook 09); with "
    "train-student, --pool-warmup-epochs and --augment-warmup-epochs at a quarter of the epochs make every seed "
    "start to learn (docs/results.md); the recommended student adds --crop-size 64 --crops-per-image 4 (80 epochs "
    "in about 6 minutes on one core; its command: ladeda_lib/registry.py)",
}

_SCALARS = (bool, int, float, str)


def _flag_type(hint: Any) -> tuple[type | None, bool, tuple | None]:
    """(scalar type or None for "parse as text", whether None is allowed, Literal choices or None)."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return None, False, typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        scalars = [a for a in args if a in _SCALARS]
        # str | Path -> text; int | None -> int; anything mixed -> text, converted by the consumer
        kind = scalars[0] if len(args) == 1 and scalars else (bool if args == [bool] else None)
        return kind, optional, None
    if hint in _SCALARS:
        return hint, False, None
    return None, False, None  # Any, Path, ...: the text as given (e.g. --pool 0.1 / all, parsed by the model)


def add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per field of the dataclass ``cls``, default = the field's default.

    ``bool`` → ``--flag/--no-flag``; ``bool | None`` likewise with default None; ``int``/``float``/``str``
    (and their ``| None``) → that type; ``Literal[...]`` → choices; anything else (``Any``, ``Path``) → the
    text as given. Fields named in ``skip`` get no flag.
    """
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        kind, _optional, choices = _flag_type(hints[f.name])
        text = FIELD_HELP.get(f.name)
        help_text = text or ""
        if default is not None:
            help_text = f"{help_text} (default: {default})" if text else f"default: {default}"
        name = "--" + f.name.replace("_", "-")
        parse = getattr(hints[f.name], "parse", None)
        if callable(parse):  # a structured field with its own text form (e.g. AugmentConfig): bare flag = "on"
            parser.add_argument(
                name, nargs="?", const="on", type=parse, default=default, metavar="SPEC", help=help_text
            )
        elif kind is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif choices is not None:
            parser.add_argument(name, choices=choices, default=default, help=help_text)
        else:
            parser.add_argument(name, type=kind or str, default=default, help=help_text)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build the config dataclass ``cls`` from parsed flags of the same names (missing flags: the default)."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def _common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")


def _session(args: argparse.Namespace):
    """The torchrun process group (if launched by torchrun) around a command; quiet on ranks > 0."""
    from ladeda_lib import distributed

    return distributed.distributed_session(getattr(args, "device", "auto"))


def _train_teacher(args: argparse.Namespace) -> int:
    from ladeda_lib.distill.teacher import train_teacher

    with _session(args) as ctx:
        ckpt = train_teacher(config_from_args(TeacherTrainConfig, args), progress=not args.quiet and ctx.is_main)
        if ctx.is_main:
            print(f"teacher: {ckpt.path}")
    return 0


def _teacher_targets(args: argparse.Namespace) -> int:
    from ladeda_lib.distill.data import load_training_data
    from ladeda_lib.distill.targets import compute_teacher_targets
    from ladeda_lib.distill.teacher import get_teacher
    from ladeda_lib.timing import resolve_device

    cfg = config_from_args(RunOptions, args)
    with _session(args) as ctx:
        progress = not args.quiet and ctx.is_main
        data = load_training_data(cfg.data, cfg.resolved_cache_dir(), progress)
        teacher = get_teacher(args.teacher, cfg.data, progress=progress)
        device = resolve_device(cfg.device)
        teacher.model.to(device)
        for split, tensors in (("train", data.train), ("val", data.val)):
            t = compute_teacher_targets(teacher, tensors, cfg.resolved_cache_dir(), cfg.batch_size, device, progress)
            state = "reused" if t.from_cache else "computed"
            if ctx.is_main:
                shapes = f"patches {tuple(t.patches.shape)}, pooled {tuple(t.pooled.shape)}"
                print(f"{split}: {len(t)} images, {shapes} — {state} {t.path}")
    return 0


def _report(result: Any) -> None:
    for note in result.notes:
        print(note)
    if result.best:
        b = result.best
        print(f"best epoch {b['epoch']} ({b['stage']}): val AP {b.get('val_ap')}, val loss {b.get('val_loss'):.4f}")
    print(f"final: {result.final_path}\nbest: {result.best_path}\nlog: {result.log_path}")


def _train_student(args: argparse.Namespace) -> int:
    from ladeda_lib.distill.train import train_student

    with _session(args) as ctx:
        result = train_student(config_from_args(StudentTrainConfig, args), progress=not args.quiet and ctx.is_main)
        if ctx.is_main:
            _report(result)
    return 0


def _train_two_stage(args: argparse.Namespace) -> int:
    from ladeda_lib.distill.train import train_student_two_stage

    with _session(args) as ctx:
        cfg = config_from_args(TwoStageTrainConfig, args)
        result = train_student_two_stage(cfg, progress=not args.quiet and ctx.is_main)
        if ctx.is_main:
            _report(result)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-teacher",
        help="train the compact LaDeDa teacher (BCE on the pooled logit, random patch-grid crops)",
        description="Output is a checkpoint FILE (default weights/teacher_compact.pt); epoch checkpoints, "
        "log.json and resume.pt go to <output stem>_run/.",
    )
    add_config_flags(p, TeacherTrainConfig)
    p.add_argument("--keep-last", dest="keep_best", action="store_false", help="same as --no-keep-best")
    _common_flags(p)
    p.set_defaults(func=_train_teacher)

    p = subparsers.add_parser(
        "teacher-targets", help="compute (or reuse) the cached teacher patch logits for the train and val images"
    )
    add_config_flags(p, RunOptions, skip=("output", "resume", "num_workers", "amp"))
    p.add_argument("--teacher", default=None, help=FIELD_HELP["teacher"])
    _common_flags(p)
    p.set_defaults(func=_teacher_targets)

    p = subparsers.add_parser(
        "train-student",
        help="single-stage distillation into Tiny-LaDeDa (default output weights/single_stage)",
    )
    add_config_flags(p, StudentTrainConfig)
    _common_flags(p)
    p.set_defaults(func=_train_student)

    p = subparsers.add_parser(
        "train-student-two-stage",
        help="two-stage fine-tuning: stage 1 fc only, stage 2 layer1 + fc (default output weights/two_stage)",
        description="Without --init: weights/single_stage/student_final.pt, else a published Tiny-LaDeDa in "
        "weights/, else a short single-stage warm-up.",
    )
    add_config_flags(p, TwoStageTrainConfig)
    _common_flags(p)
    p.set_defaults(func=_train_two_stage)
