"""Does training on photographs stop a student calling real photographs fake? One command, one seed per arm.

    python benchmarks/photo_mix.py [--arms scenes mixed-0.1 mixed-0.2 mixed-0.3 real-photos] [--epochs 24] [--seed 0]
        [--work weights/photo_mix] [--out benchmarks/photo_mix.md]

Every arm trains a label-only Tiny-LaDeDa with the study's recipe (``benchmarks/distill_study.py``: platform
augmentation, ``warmup_cosine``, pooling and augmentation warm-ups over the first quarter, checkpoint picked on
clean + degraded validation) on one training set:

* ``scenes`` — the default toy world (rendered scenes, seed 0);
* ``mixed-C`` — the scenes world plus the photo world of the same seed (``--world photos --trace-ceiling C``),
  joined in one CSV: photographs and their imprinted fakes in every split, split by photograph;
* ``real-photos`` — the scenes world plus only the *real* crops of the photo world's train and val photographs
  (no fakes made from them): the shortcut the issue warns about, measured.

Each student is then scored once on the scenes world's test platforms (mAP), on the photo world's test split
(AP, and the share of its real crops called real), and audited (:func:`ladeda_lib.audit.audit_photographs`,
threshold 0.5) on the three photographs the photo world holds out from training and on all 16 bundled ones
(ten of which the mixed arms trained on). Rows go to ``--results`` (JSON lines; an arm already there is skipped)
and the table to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from distill_study import PLATFORMS, VARIANTS, warmup_epochs  # the study's recipe, shared

from ladeda_lib.audit import audit_photographs, bundled_photographs
from ladeda_lib.data import detect_dataset, make_toy_dataset
from ladeda_lib.data.augment import AugmentConfig
from ladeda_lib.data.photos import PhotoConfig, heldout_dir
from ladeda_lib.distill import StudentTrainConfig, train_student
from ladeda_lib.evaluation import evaluate_model

ARMS = ("scenes", "mixed-0.1", "mixed-0.2", "mixed-0.3", "real-photos")


def worlds(work: Path, seed: int, arm: str) -> tuple[Path, Path]:
    """The scenes world and the photo world an arm uses (built on first use)."""
    ceiling = float(arm.split("-")[1]) if arm.startswith("mixed-") else 0.1
    scenes = work / f"scenes_s{seed}"
    photos = work / f"photos_c{ceiling:g}_s{seed}"
    if not scenes.is_dir():
        make_toy_dataset(scenes, seed=seed, progress=False)
    if not photos.is_dir():
        make_toy_dataset(
            photos, seed=seed, world="photos", photo_config=PhotoConfig(trace_ceiling=ceiling), progress=False
        )
    return scenes, photos


def training_set(work: Path, arm: str, scenes: Path, photos: Path) -> Path:
    """The arm's training data: the scenes root, or a CSV joining it with (part of) the photo world."""
    if arm == "scenes":
        return scenes
    path = work / f"{arm}_{photos.name}.csv"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label", "split", "platform", "mask"])
        for world in (scenes, photos):
            for s in detect_dataset(world).samples:
                if arm == "real-photos" and world == photos and (s.label == 1 or s.split == "test"):
                    continue
                mask = "" if s.mask is None else s.mask.relative_to(work)
                out.writerow([s.path.relative_to(work), s.label, s.split, s.platform or "", mask])
    return path


def one_arm(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work)
    scenes, photos = worlds(work, args.seed, arm)
    warmup = warmup_epochs(args.epochs, 0.25)
    cfg = StudentTrainConfig(
        data=training_set(work, arm, scenes, photos),
        output=work / f"{arm}_e{args.epochs}_s{args.seed}",
        cache_dir=work / f"cache_{arm}",
        epochs=args.epochs,
        seed=args.seed,
        augment=AugmentConfig.platform(),
        schedule="warmup_cosine",
        pool_warmup_epochs=warmup,
        augment_warmup_epochs=warmup,
        val_views="clean+degraded",
        device="cpu",
        **VARIANTS["label-only"],
    )
    t0 = time.perf_counter()
    result = train_student(cfg, progress=False)
    wall = time.perf_counter() - t0
    best = result.best_path or result.final_path
    on_scenes = evaluate_model(best, data=scenes, splits=("test",), progress=False, localisation=False)["groups"]
    on_photos = evaluate_model(best, data=photos, splits=("test",), progress=False, localisation=False)["groups"]
    bundled = work / "bundled"
    if not bundled.is_dir():
        bundled_photographs(bundled)
    audits = {}
    for tag, folder in (("held_out", heldout_dir(photos)), ("bundled", bundled)):
        s = audit_photographs(best, folder, progress=False).summary()
        audits[tag] = {"n": s["n_real"], "called_fake": round(s["false_positive_rate"] * s["n_real"])}
    return {
        "arm": arm,
        "epochs": args.epochs,
        "seed": args.seed,
        "photo_world": photos.name,
        "scenes_ap": {p: on_scenes[f"test/{p}"]["ap"] for p in PLATFORMS},
        "scenes_map": float(np.mean([on_scenes[f"test/{p}"]["ap"] for p in PLATFORMS])),
        "photos_test_ap": on_photos["test"]["ap"],
        "photos_test_real_called_real": on_photos["test"]["real_acc"],
        "audit": audits,
        "train_minutes": wall / 60,
        "threads": torch.get_num_threads(),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| arm | epochs | seed | scenes test mAP (reddit / twitter / facebook) | photo world test AP "
        "| its real crops called real | held-out photographs called fake | bundled photographs called fake "
        "| train min |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (ARMS.index(r["arm"]), r["epochs"], r["seed"])):
        per = " / ".join(f"{r['scenes_ap'][p]:.3f}" for p in PLATFORMS)
        held, bund = r["audit"]["held_out"], r["audit"]["bundled"]
        lines.append(
            f"| {r['arm']} | {r['epochs']} | {r['seed']} | {r['scenes_map']:.3f} ({per}) | {r['photos_test_ap']:.3f} "
            f"| {r['photos_test_real_called_real']:.0%} | {held['called_fake']} of {held['n']} "
            f"| {bund['called_fake']} of {bund['n']} | {r['train_minutes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="weights/photo_mix")
    parser.add_argument("--results", default="benchmarks/photo_mix.jsonl")
    parser.add_argument("--out", default="benchmarks/photo_mix.md")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    results = Path(args.results)
    done = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            row = json.loads(line)
            done[(row["arm"], row["epochs"], row["seed"])] = row
    for arm in args.arms:
        if (arm, args.epochs, args.seed) in done:
            continue
        print(f"training {arm}, {args.epochs} epochs, seed {args.seed}", flush=True)
        row = one_arm(arm, args)
        done[(arm, args.epochs, args.seed)] = row
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
    rows = list(done.values())
    Path(args.out).write_text(
        "# Photographs in training: does the student stop calling real photographs fake?\n\n"
        f"Made by `python benchmarks/photo_mix.py` (rows from `{results.name}`), on {platform.machine()}, one thread "
        "per arm, two arms at a time on two cores (train minutes are upper bounds). One seed per arm: a measurement "
        "of direction, not a spread. Label-only students, the distillation study's recipe; the checkpoint is picked "
        "on validation (clean + degraded), test and the audits are read once. The held-out photographs are the "
        "photo world's three test photographs; the mixed and real-photos arms trained on ten of the 16 bundled ones.\n\n"
        + table(rows)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
