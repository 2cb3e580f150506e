"""``ladeda train-teacher | teacher-targets | train-student | train-student-two-stage | evaluate``.

Every training command takes ``--data`` (default: the toy set, generated if absent), ``--teacher``,
``--output``, ``--device`` (auto/cpu/cuda/mps), ``--seed`` and ``--resume``; flags map one to one onto the
fields of the dataclasses in :mod:`ladeda_lib.distill.config`. ``evaluate`` lives in
:mod:`ladeda_lib.evaluation` and is registered from here.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from ladeda_lib.distill.config import StudentTrainConfig, TeacherTrainConfig, TwoStageTrainConfig


def _common(p: argparse.ArgumentParser, defaults: Any, teacher: bool = True) -> None:
    p.add_argument(
        "--data", default=None, help="dataset root, any layout `ladeda data-info` accepts (default: toy set)"
    )
    if teacher:
        p.add_argument(
            "--teacher",
            default=None,
            help="teacher checkpoint (default: weights/WildRF_LaDeDa.pth, else weights/teacher_compact.pt, "
            "else train the compact teacher)",
        )
    p.add_argument("--output", default=None, help="output (default under weights/, see the command's help)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda or mps")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (CPU runs are deterministic)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/resume.pt if present")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default 0 on CPU, 2 on CUDA)")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--cache-dir", default=None, help="image and teacher-target cache (default weights/cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")


def _student_flags(p: argparse.ArgumentParser, d: StudentTrainConfig | TwoStageTrainConfig) -> None:
    p.add_argument("--alpha-distill", type=float, default=d.alpha_distill, help="weight of the patch MSE term")
    p.add_argument("--alpha-task", type=float, default=d.alpha_task, help="weight of the image BCE term")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--pool", default=d.pool, help="top-K pooling: fraction (0.1), count (8) or 'all' (mean)")
    p.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="keep the trained decision offset (default: refit fc.bias on the training images after training)",
    )


def _config(cls: type, args: argparse.Namespace) -> Any:
    """Build a config dataclass from the parsed flags of the same names."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    values["amp"] = False if getattr(args, "no_amp", False) else None
    return cls(**values)


def _train_teacher(args: argparse.Namespace) -> int:
    from ladeda_lib.distill.teacher import train_teacher

    ckpt = train_teacher(_config(TeacherTrainConfig, args), progress=not args.quiet)
    print(f"teacher: {ckpt.path}")
    return 0


def _teacher_targets(args: argparse.Namespace) -> int:
    from ladeda_lib.distill.config import resolve_device
    from ladeda_lib.distill.data import load_training_data
    from ladeda_lib.distill.targets import compute_teacher_targets
    from ladeda_lib.distill.teacher import get_teacher

    cfg = StudentTrainConfig(data=args.data, teacher=args.teacher, batch_size=args.batch_size, cache_dir=args.cache_dir)
    progress = not args.quiet
    data = load_training_data(cfg.data, cfg.resolved_cache_dir(), progress)
    teacher = get_teacher(cfg.teacher, cfg.data, progress=progress)
    device = resolve_device(args.device)
    teacher.model.to(device)
    for split, tensors in (("train", data.train), ("val", data.val)):
        t = compute_teacher_targets(teacher, tensors, cfg.resolved_cache_dir(), cfg.batch_size, device, progress)
        state = "reused" if t.from_cache else "computed"
        print(
            f"{split}: {len(t)} images, patches {tuple(t.patches.shape)}, pooled {tuple(t.pooled.shape)} — {state} {t.path}"
        )
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

    _report(train_student(_config(StudentTrainConfig, args), progress=not args.quiet))
    return 0


def _train_two_stage(args: argparse.Namespace) -> int:
    from ladeda_lib.distill.train import train_student_two_stage

    _report(train_student_two_stage(_config(TwoStageTrainConfig, args), progress=not args.quiet))
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    t = TeacherTrainConfig()
    p = subparsers.add_parser(
        "train-teacher",
        help="train the compact LaDeDa teacher (BCE on the pooled logit, random patch-grid crops)",
        description="Output is a checkpoint FILE (default weights/teacher_compact.pt); epoch checkpoints, "
        "log.json and resume.pt go to <output stem>_run/.",
    )
    _common(p, t, teacher=False)
    p.add_argument("--width", type=int, default=t.width, help="stem width (64 = published LaDeDa)")
    p.add_argument("--epochs", type=int, default=t.epochs)
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--crop-size", type=int, default=t.crop_size, help="random crop side (multiple of 8 fits the grid)")
    p.add_argument("--crops-per-image", type=int, default=t.crops_per_image, help="crops of each image per epoch")
    p.add_argument(
        "--keep-last",
        dest="keep_best",
        action="store_false",
        help="save the last epoch (default: the epoch with the highest validation AP)",
    )
    p.add_argument("--pool", default=t.pool, help="top-K pooling: fraction (0.1), count (8) or 'all' (mean)")
    p.set_defaults(func=_train_teacher)

    p = subparsers.add_parser(
        "teacher-targets", help="compute (or reuse) the cached teacher patch logits for the train and val images"
    )
    _common(p, StudentTrainConfig(), teacher=True)
    p.set_defaults(func=_teacher_targets)

    s = StudentTrainConfig()
    p = subparsers.add_parser(
        "train-student",
        help="single-stage distillation into Tiny-LaDeDa (default output weights/single_stage)",
    )
    _common(p, s)
    p.add_argument("--epochs", type=int, default=s.epochs)
    p.add_argument("--lr", type=float, default=s.lr)
    p.add_argument("--init", default=None, help="start from these student weights instead of a fresh init")
    _student_flags(p, s)
    p.set_defaults(func=_train_student)

    w = TwoStageTrainConfig()
    p = subparsers.add_parser(
        "train-student-two-stage",
        help="two-stage fine-tuning: stage 1 fc only, stage 2 layer1 + fc (default output weights/two_stage)",
    )
    _common(p, w)
    p.add_argument(
        "--init",
        default=None,
        help="starting student (default: weights/single_stage/student_final.pt, else a published Tiny-LaDeDa "
        "in weights/, else a short single-stage warm-up)",
    )
    p.add_argument("--epochs-s1", type=int, default=w.epochs_s1, help="stage 1 epochs (fc only)")
    p.add_argument("--epochs-s2", type=int, default=w.epochs_s2, help="stage 2 epochs (layer1 + fc)")
    p.add_argument("--lr-s1", type=float, default=w.lr_s1)
    p.add_argument("--lr-s2", type=float, default=w.lr_s2)
    p.add_argument("--warmup-epochs", type=int, default=w.warmup_epochs, help="epochs of the warm-up if needed")
    _student_flags(p, w)
    p.set_defaults(func=_train_two_stage)
