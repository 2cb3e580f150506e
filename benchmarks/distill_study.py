"""Does distillation make a better student than labels alone? Budgets × seeds × recipes, one command.

    python benchmarks/distill_study.py [--budgets 8 24 80] [--seeds 0 1 2] [--variants label-only consistent cached]
        [--teacher ladeda_lib/pretrained/toy_teacher_w16_augmented.pt] [--schedule warmup_cosine] [--warmup-share 0.25]
        [--out benchmarks/distill_study.md] [--continue-from BUDGET:SHARE] [--crop-size 64 --crops-per-image 4]

Every run trains a fresh Tiny-LaDeDa on the toy training split with the platform augmentation
(``AugmentConfig.platform()``: every image rescaled ×0.45-1, then JPEG 60-95), batch 32, Adam at 1e-2 with the
given schedule, for the given number of epochs, with the pooling and augmentation warm-ups over ``--warmup-share``
of them (``--pool-warmup-epochs``, ``--augment-warmup-epochs``; 0 = the earlier recipe without them). Variants:

* ``label-only`` — BCE on the labels only (α_d = 0, α_t = 1); no teacher.
* ``consistent`` — α_d = α_t = 0.5; the teacher scores the same augmented batch the student sees, on the fly.
* ``cached`` — α_d = α_t = 0.5; the teacher's maps of the CLEAN images, computed once (the old recipe).

Selection uses validation only: the reported student is the epoch with the highest validation AP
(``student_best.pt``, ties to the lower validation loss); test is read once per run, for the table. With
``--val-views clean+degraded`` that validation AP is the mean of the AP on the val split and on one fixed copy of
it degraded by the platform augmentation (``AugmentedTask.validate``). The table also gives the first epoch whose
validation AP on the val split as it is reached 0.85 (``—`` if none did), the seconds per
training epoch, and, per budget and variant, the mean and spread over seeds. Recipes run with five seeds or more also
get a seed check: did every seed's val AP reach 0.85 within the first quarter of the epochs, and how far below the
median test mAP does the weakest seed end?

Results are appended to ``--results`` (JSON lines; a run already there is skipped, so the study resumes) and the
Markdown table is written to ``--out``. Each run trains in its own folder under ``--work`` (kept, so a
checkpoint can be inspected; delete it to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ladeda_lib.data.augment import AugmentConfig
from ladeda_lib.distill import StudentTrainConfig, train_student
from ladeda_lib.evaluation import evaluate_model
from ladeda_lib.paths import shown

VARIANTS = {
    "label-only": {"alpha_distill": 0.0, "alpha_task": 1.0, "targets": "cached"},
    "consistent": {"alpha_distill": 0.5, "alpha_task": 0.5, "targets": "consistent"},
    "cached": {"alpha_distill": 0.5, "alpha_task": 0.5, "targets": "cached"},
}
PLATFORMS = ("reddit", "twitter", "facebook")
LABEL_SEED = 0  # one labelled subset for every seed, the one a label-scarce teacher is trained on
LEARNS_AT = 0.85  # the validation AP a run must reach "within its first quarter of epochs"


def warmup_epochs(budget: int, share: float) -> int:
    """Epochs of the pooling and augmentation warm-ups for a budget: ``share`` of it, at least 1 when on."""
    return 0 if share <= 0 else max(1, round(budget * share))


def recipe(
    schedule: str, share: float, val_views: str = "clean", labels: float = 1.0, crop: int | None = None, copies: int = 1
) -> str:
    name = schedule if share <= 0 else f"{schedule} + warm-ups {share:g}"
    name = name if val_views == "clean" else f"{name}, selected on clean+degraded val"
    name = name if labels >= 1.0 else f"{name}, {labels:.0%} labels"
    return name if crop is None else f"{name}, {copies} crops of {crop} per image"


def run_key(
    variant: str,
    budget: int,
    seed: int,
    teacher: str,
    schedule: str,
    share: float = 0.0,
    val_views: str = "clean",
    labels: float = 1.0,
    crop: int | None = None,
    copies: int = 1,
) -> str:
    used = "-" if VARIANTS[variant]["alpha_distill"] == 0 else Path(teacher).name  # label-only runs use no teacher
    key = f"{variant}|{budget}|{seed}|{used}|{schedule}"
    key = key if share <= 0 else f"{key}|wu{share:g}"
    key = key if val_views == "clean" else f"{key}|{val_views}"
    key = key if labels >= 1.0 else f"{key}|labels{labels:g}"
    return key if crop is None else f"{key}|crop{crop}x{copies}"


def args_key(variant: str, budget: int, seed: int, args: argparse.Namespace) -> str:
    """:func:`run_key` of one run of this command line."""
    return run_key(
        variant,
        budget,
        seed,
        args.teacher,
        args.schedule,
        args.warmup_share,
        args.val_views,
        args.label_fraction,
        args.crop_size,
        args.crops_per_image,
    )


def args_recipe(args: argparse.Namespace) -> str:
    """:func:`recipe` of this command line."""
    return recipe(
        args.schedule, args.warmup_share, args.val_views, args.label_fraction, args.crop_size, args.crops_per_image
    )


def run_folder(variant: str, budget: int, seed: int, share: float, args: argparse.Namespace) -> Path:
    """Where one run trains: named by variant, schedule, warm-up share, val views, label share, budget and seed."""
    tag = "" if share <= 0 else f"_wu{share:g}"
    tag += "" if args.val_views == "clean" else "_vd"
    tag += "" if args.label_fraction >= 1.0 else f"_lf{args.label_fraction:g}"
    tag += "" if args.crop_size is None else f"_c{args.crop_size}x{args.crops_per_image}"
    return Path(args.work) / f"{variant}_{args.schedule}{tag}_e{budget}_s{seed}"


def continue_run(folder: Path, variant: str, budget: int, seed: int, args: argparse.Namespace) -> bool:
    """Start ``folder`` from a copy of the shorter run ``--continue-from BUDGET:SHARE`` names (same variant, seed,
    schedule, val views and labels), so the training goes on from its ``resume.pt``. Only the constant schedule
    qualifies, with the same warm-up epochs: then the rates, warm-ups and batch order of the epochs already done are
    those the longer run would have had, and the continued run is the longer run (the loop's resume is exact).
    False when ``folder`` exists already (it resumes itself) or the shorter run is missing."""
    short_budget, short_share = args.continue_from
    if args.schedule != "constant":
        raise SystemExit("--continue-from needs --schedule constant: the other schedules' rates depend on the budget")
    if short_budget >= budget or warmup_epochs(short_budget, short_share) != warmup_epochs(budget, args.warmup_share):
        raise SystemExit(
            f"--continue-from {short_budget}:{short_share:g}: a shorter budget with the same warm-up epochs as "
            f"{budget} epochs at share {args.warmup_share:g} ({warmup_epochs(budget, args.warmup_share)}) is needed"
        )
    if folder.exists():
        return True
    source = run_folder(variant, short_budget, seed, short_share, args)
    if not (source / "resume.pt").is_file():
        print(f"  no {shown(source)}/resume.pt to continue; training from the start", flush=True)
        return False
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("epoch_*.pt"))
    print(f"  continuing {shown(source)} ({short_budget} epochs done)", flush=True)
    return True


def one_run(variant: str, budget: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one student and score its validation-selected checkpoint on every test platform."""
    folder = run_folder(variant, budget, seed, args.warmup_share, args)
    resume = args.continue_from is not None and continue_run(folder, variant, budget, seed, args)
    cfg = StudentTrainConfig(
        resume=resume,
        teacher=args.teacher,
        output=folder,
        epochs=budget,
        seed=seed,
        augment=AugmentConfig.platform(),
        schedule=args.schedule,
        lr_warmup_epochs=args.warmup,
        pool_warmup_epochs=warmup_epochs(budget, args.warmup_share),
        augment_warmup_epochs=warmup_epochs(budget, args.warmup_share),
        val_views=args.val_views,
        label_fraction=args.label_fraction,
        label_seed=LABEL_SEED,
        crop_size=args.crop_size,
        crops_per_image=args.crops_per_image,
        device="cpu",
        **VARIANTS[variant],
    )
    t0 = time.perf_counter()
    result = train_student(cfg, progress=False)
    wall = time.perf_counter() - t0
    history = result.history
    best_path = result.best_path or result.final_path
    report = evaluate_model(best_path, progress=False, localisation=False)
    groups = report["groups"]
    aps = {p: groups[f"test/{p}"]["ap"] for p in PLATFORMS}
    clean_ap = [row.get("val_ap_clean", row.get("val_ap")) or 0.0 for row in history]  # the val split as it is
    learned = next((row["epoch"] for row, ap in zip(history, clean_ap, strict=True) if ap >= LEARNS_AT), None)
    return {
        "key": args_key(variant, budget, seed, args),
        "recipe": args_recipe(args),
        "warmup_epochs": warmup_epochs(budget, args.warmup_share),
        "variant": variant,
        "budget": budget,
        "seed": seed,
        "schedule": args.schedule,
        "label_fraction": args.label_fraction,
        "teacher": "-" if VARIANTS[variant]["alpha_distill"] == 0 else shown(args.teacher),
        "best_epoch": (result.best or {}).get("epoch"),
        "val_ap": (result.best or {}).get("val_ap"),
        "first_epoch_val_ap_085": learned,
        "val_ap_curve": [round(row.get("val_ap") or 0.0, 4) for row in history],  # what selects
        "val_ap_clean_curve": [round(ap, 4) for ap in clean_ap],
        "val_ap_degraded_curve": [round(row.get("val_ap_degraded") or 0.0, 4) for row in history],
        **{f"test_{p}": aps[p] for p in PLATFORMS},
        "test_map": sum(aps.values()) / len(aps),
        "gap_reddit_facebook": aps["reddit"] - aps["facebook"],
        "train_s_per_epoch": statistics.median(row["train_time_s"] for row in history),
        "wall_s": wall,
        "threads": torch.get_num_threads(),
        "kernels": os.environ.get("ATEN_CPU_CAPABILITY", "native"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    for r in rows:
        r.setdefault("recipe", r["schedule"])  # rows made before the warm-ups existed
    lines = [
        "| variant | teacher | recipe | epochs | seed | best epoch (val) | val AP | first epoch val AP ≥ 0.85 "
        "| reddit | twitter | facebook | mAP | reddit − facebook | s / epoch |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["recipe"], r["budget"], r["variant"], r["teacher"], r["seed"])):
        learned = "—" if r["first_epoch_val_ap_085"] is None else str(r["first_epoch_val_ap_085"])
        lines.append(
            f"| {r['variant']} | {Path(r['teacher']).name} | {r['recipe']} | {r['budget']} | {r['seed']} | {r['best_epoch']} | {r['val_ap']:.3f} "
            f"| {learned} | {r['test_reddit']:.3f} | {r['test_twitter']:.3f} | {r['test_facebook']:.3f} "
            f"| {r['test_map']:.3f} | {r['gap_reddit_facebook']:+.3f} | {r['train_s_per_epoch']:.1f} |"
        )
    summary = [
        "",
        "Mean over seeds (min–max):",
        "",
        "| variant | teacher | recipe | epochs | seeds | test mAP | facebook AP | reddit − facebook |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["recipe"], r["budget"], r["variant"], Path(r["teacher"]).name), []).append(r)
    for (recipe_name, budget, variant, teacher), rs in sorted(groups.items()):

        def spread(key: str, rs: list[dict[str, Any]] = rs) -> str:
            values = [r[key] for r in rs]
            return f"{statistics.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})"

        summary.append(
            f"| {variant} | {teacher} | {recipe_name} | {budget} | {len(rs)} | {spread('test_map')} | {spread('test_facebook')} "
            f"| {spread('gap_reddit_facebook')} |"
        )
    return "\n".join(lines + summary + seed_check(groups)) + "\n"


def seed_check(groups: dict[tuple, list[dict[str, Any]]]) -> list[str]:
    """Does every seed learn? For each recipe with at least 5 seeds: the first epoch each seed's val AP reached 0.85
    against the first quarter of the budget, and how far the weakest seed ends below the median test mAP."""
    out = [
        "",
        "Every seed learns (recipes run with 5 seeds or more): the first epoch whose val AP reached 0.85, against the "
        "first quarter of the budget, and the weakest seed's test mAP against the median of the seeds:",
        "",
        "| variant | recipe | epochs | seeds | first epoch val AP ≥ 0.85, per seed | quarter | all within | "
        "median mAP | lowest mAP | lowest − median |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for (recipe_name, budget, variant, _teacher), rs in sorted(groups.items()):
        if len({r["seed"] for r in rs}) < 5:
            continue
        rs = sorted(rs, key=lambda r: r["seed"])
        quarter = budget // 4
        firsts = [r["first_epoch_val_ap_085"] for r in rs]
        shown = ", ".join(f"{r['seed']}: {'—' if f is None else f}" for r, f in zip(rs, firsts, strict=True))
        within = all(f is not None and f <= quarter for f in firsts)
        maps = [r["test_map"] for r in rs]
        median = statistics.median(maps)
        out.append(
            f"| {variant} | {recipe_name} | {budget} | {len(rs)} | {shown} | {quarter} | {'yes' if within else 'no'} "
            f"| {median:.3f} | {min(maps):.3f} | {min(maps) - median:+.3f} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 24, 80])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--teacher", default="ladeda_lib/pretrained/toy_teacher_w16_augmented.pt")
    parser.add_argument("--schedule", default="warmup_cosine", choices=["constant", "cosine", "warmup_cosine"])
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs of warmup_cosine")
    parser.add_argument(
        "--warmup-share",
        type=float,
        default=0.25,
        help="pooling and augmentation warm-ups, as a share of the budget (0 = none, the earlier recipe)",
    )
    parser.add_argument(
        "--val-views",
        default="clean",
        choices=["clean", "clean+degraded"],
        help="what selects the checkpoint: val AP, or the mean of it and the AP on a fixed degraded copy of val",
    )
    parser.add_argument(
        "--label-fraction",
        type=float,
        default=1.0,
        help="share of training labels every run may use (label seed 0); give a --teacher trained on that share only",
    )
    parser.add_argument(
        "--continue-from",
        type=lambda text: (int(text.split(":")[0]), float(text.split(":")[1])),
        default=None,
        metavar="BUDGET:SHARE",
        help="constant schedule only: start each run from a copy of the finished shorter run with this budget and "
        "warm-up share (the same warm-up epochs), which is exactly where the longer run would be",
    )
    parser.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="train on random crops of this side (a multiple of 8) instead of whole images; validation stays whole",
    )
    parser.add_argument(
        "--crops-per-image", type=int, default=1, help="with --crop-size: crops of each image per epoch"
    )
    parser.add_argument("--work", default="weights/distill_study")
    parser.add_argument("--results", default="benchmarks/distill_study.jsonl")
    parser.add_argument("--out", default="benchmarks/distill_study.md")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-only", action="store_true", help="rewrite --out from --results; train nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    done = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    for budget in [] if args.table_only else args.budgets:
        for seed in args.seeds:
            for variant in args.variants:
                key = args_key(variant, budget, seed, args)
                if key in done:
                    continue
                print(
                    f"training {variant}, {budget} epochs, seed {seed} ({args_recipe(args)})",
                    flush=True,
                )
                row = one_run(variant, budget, seed, args)
                done[key] = row
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"  val AP {row['val_ap']:.3f}, test mAP {row['test_map']:.3f}, facebook {row['test_facebook']:.3f}, "
                    f"{row['train_s_per_epoch']:.1f} s/epoch",
                    flush=True,
                )
                Path(args.out).write_text(header(args, list(done.values())) + table(list(done.values())))
    Path(args.out).write_text(header(args, list(done.values())) + table(list(done.values())))
    return 0


def header(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    budgets = sorted({r["budget"] for r in rows})
    return (
        "# Distillation study: label-only against distilled students, at equal budgets\n\n"
        f"Made by `python benchmarks/distill_study.py` (rows from `{Path(args.results).name}`; `--table-only` "
        f"rewrites this file from them), on {platform.machine()} with one thread per run. The machine was shared "
        "(from two to more than ten processes on two cores), so the seconds per epoch are upper bounds and compare only between "
        "runs that ran side by side. Augmentation: the platform preset for every run. Selection on validation only "
        '(the best validation-AP epoch); test read once per run. Recipe "warmup_cosine + warm-ups 0.25": the '
        'pooling and augmentation warm-ups over the first quarter of the epochs; ", selected on clean+degraded val": '
        "the checkpoint is picked on the mean of the AP on the val split and on a fixed degraded copy of it "
        '(`--val-views clean+degraded`); ", 20% labels": every run of both arms uses the same 20 % of the training '
        "labels (label seed 0), and its teacher (`teacher_lf0.2.pt`) was trained on those only: `ladeda train-teacher "
        "--width 16 --preprocess right_diag --epochs 24 --crops-per-image 40 --seed 0 --augment --label-fraction 0.2 "
        '--label-seed 0` (its metrics: docs/results.md). Recipe "constant + warm-ups 0.025" at 160 epochs: the '
        'same 4 warm-up epochs as "constant + warm-ups 0.05" at 80, so seeds 0-3 were continued from those runs '
        "(`--continue-from 80:0.05`, exactly the longer run) and seed 4 trained from the start; its 240-epoch rows "
        '("constant + warm-ups 0.0167", again 4 epochs) continue the 160-epoch runs (`--continue-from 160:0.025`). '
        "Budgets run so far: "
        f"{', '.join(str(b) for b in budgets)} epochs; see docs/results.md for what these rows say.\n\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
