"""Why full int8 breaks on students with large patch logits, and which fix holds: numbers, not opinions.

    python benchmarks/int8_study.py [--out benchmarks/int8_study.md]

Stand-ins for the published checkpoints (whose files may not be committed), built from a published-layout
Tiny-LaDeDa (mean pooling) whose BatchNorm statistics are measured on the toy training images:

* ``wildrf_like``: ``fc`` weights ×100, bias set so the median image logit is 0 — patch logits of hundreds,
  image logits of a few units (the WildRF file on toy images: patch logits ±400, int8 step 3.36).
* ``forensynth_like``: ``bn1.running_var`` divided by 300, image logits spread by hundreds and shifted so the
  smallest is 300 — every image "fake" at p = 0.5 (the ForenSynth file). Its head is the least-squares direction
  over untrained features: patch logits of about ±600,000 cancel to image logits of a few hundred.
* ``trained, bn1 variance / 300`` (when ``weights/single_stage/student_final.pt`` exists): the same recipe on our
  trained single-stage student, mean pooling (:func:`standins.forensynth_like_from`).

Candidates, each exported with the patch map and converted to full int8 by onnx2tf, calibrated on 100 toy
training images and compared with PyTorch on the toy test split:

* ``float graph as exported`` — the graph of the float files (:mod:`ladeda_lib.graphs.column_pairs`), int8;
* ``factorised`` — filter · conv1 · conv2 (bn1 folded by the converter), as before the fusion;
* ``+ float head`` — the same int8 file, but the image logit is the float mean of its dequantized patch map;
* ``+ calibrated`` — the decision offset and temperature (``ladeda calibrate``) in the graph;
* ``+ clamp`` — patch logits clipped at :func:`choose_clamp`'s bound (when one keeps
  every decision on the calibration images);
* ``+ equalized`` — cross-layer channel equalization (what ``ladeda export`` shipped before the pixel graph);
* ``pixel input`` — :class:`ladeda_lib.export.int8.PixelInputStudent`: pixel − 128 in (normalisation folded into
  the stem), zero-sum pre-rounded fused stem, mean pooling and head as one whole-grid convolution;
* ``+ head on grid`` — the head's weights put exactly on their int8 grid
  (:func:`ladeda_lib.export.int8.snap_to_grid`);
* ``+ bias corrected`` — every weight pre-rounded to its int8 grid and each layer's bias moved so the int8 file's
  outputs match float on average over the calibration images, the logit's threshold put between two int8 levels
  (``PixelInputStudent(correct_images=...)``);
* ``auto`` — :func:`ladeda_lib.export.int8.convert_int8`'s default, what ``ladeda export`` ships: the candidates
  of :data:`ladeda_lib.export.int8.INT8_CANDIDATES` (the bias-corrected pixel graph with its head on the grid, with
  and without equalization; factorised), keeping the one closest to float (mean |Δ logit|) on the calibration images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from standins import forensynth_like_from, stand_in

from ladeda_lib.calibration import fit_calibration
from ladeda_lib.checkpoints import load_checkpoint
from ladeda_lib.data.images import normalised_images
from ladeda_lib.export import export_onnx
from ladeda_lib.export.chain import load_export_images
from ladeda_lib.export.int8 import convert_int8
from ladeda_lib.export.tflite import convert_to_tflite
from ladeda_lib.predictors import load_predictor

#: Quantiles of |patch logit| tried as the bound, tightest first.
CLAMP_QUANTILES = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999)


def choose_clamp(
    model,
    images: torch.Tensor | np.ndarray,
    threshold_logit: float = 0.0,
    max_shift: float = 0.05,
) -> float | None:
    """The tightest decision-preserving bound for the patch logits, or None when no bound is needed.

    Args:
        model: the student (or teacher) to export.
        images: the int8 representative images (N, 3, S, S), uint8 or normalised.
        threshold_logit: the decision threshold on the image logit (0 = probability 0.5).
        max_shift: besides keeping every decision, the clip may move no image logit by more than this
            fraction of the image logits' standard deviation on ``images``.

    Returns:
        ``C`` such that pooling ``clamp(patch, -C, C)`` decides every image as the unclipped model does; None if
        even the loosest quantile changes a decision (then the bound is left out).
    """
    x = torch.from_numpy(normalised_images(images))
    with torch.no_grad():
        patches = torch.cat([model.eval().patch_logits(x[i : i + 16]) for i in range(0, len(x), 16)])
        pooled = model.pool(patches).reshape(-1)
        spread = float(pooled.std()) if len(pooled) > 1 else 1.0
        magnitude = patches.abs().flatten()
        sample = magnitude[torch.randperm(len(magnitude), generator=torch.Generator().manual_seed(0))[:1_000_000]]
        for q in CLAMP_QUANTILES:
            bound = float(torch.quantile(sample, q))
            clipped = model.pool(patches.clamp(-bound, bound)).reshape(-1)
            same = bool(((clipped >= threshold_logit) == (pooled >= threshold_logit)).all())
            if same and float((clipped - pooled).abs().max()) <= max_shift * spread:
                return bound
    return None


class ClampedPatches(torch.nn.Module):
    """``model`` with its patch logits clipped to ``[-bound, bound]`` before pooling (the ``+ clamp`` rows):
    what an int8 file of it must represent is bounded. Exports like the model (same arch, config, geometry)."""

    def __init__(self, model, bound: float) -> None:
        super().__init__()
        self.inner, self.bound, self.pool, self.arch = model, float(bound), model.pool, model.arch

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.patch_logits(x).clamp(-self.bound, self.bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.patch_logits(x))

    def config(self):
        return self.inner.config()

    def geometry(self):
        return self.inner.geometry()


def score(model, path, x, y, calibration=None, float_head=False):
    predictor = load_predictor(path, threads=2)
    logit, patch = predictor(x)
    if float_head:
        logit = patch.reshape(len(patch), -1).mean(axis=1, keepdims=True)
    with torch.no_grad():
        ref_logit, ref_patch = model.forward_with_patches(torch.from_numpy(x))
    ref_logit, ref_patch = ref_logit.numpy(), ref_patch.numpy()
    if calibration is not None:
        ref_logit, ref_patch = calibration.apply(ref_logit), calibration.apply(ref_patch)
    agree = float(np.mean((logit.reshape(-1) >= 0) == (ref_logit.reshape(-1) >= 0)))
    rel = float(np.linalg.norm(patch - ref_patch) / np.linalg.norm(ref_patch))
    cos = float(
        np.mean(
            [
                np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b))
                for a, b in zip(patch, ref_patch, strict=True)
            ]
        )
    )
    from sklearn.metrics import average_precision_score

    return {
        "agreement": agree,
        "max_abs": float(np.abs(logit - ref_logit).max()),
        "ref_spread": float(np.std(ref_logit)),
        "patch_rel_error": rel,
        "patch_cosine": cos,
        "ap_int8": float(average_precision_score(y, logit.reshape(-1))),
        "ap_float": float(average_precision_score(y, ref_logit.reshape(-1))),
        "latency_ms": predictor.latency_ms(30),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path(__file__).with_name("int8_study.md")))
    parser.add_argument("--eval-count", type=int, default=120)
    args = parser.parse_args()
    from ladeda_lib.data import detect_dataset, ensure_toy_dataset, load_tensors

    root = ensure_toy_dataset()
    _, eval_images, eval_labels = load_export_images(root, 100, args.eval_count, progress=False)
    train = load_tensors(detect_dataset(root).select(split="train")[::3][:100], progress=False)
    calib, calib_labels = train.images, train.labels
    x = normalised_images(eval_images)
    y = eval_labels.numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kinds = ["wildrf_like", "forensynth_like"]
        trained = Path("weights/single_stage/student_final.pt")
        if trained.is_file():  # a trained student exists once notebook 04 (or the pipeline) has run
            kinds.append("trained, bn1 variance / 300")
        for kind in kinds:
            if kind.startswith("trained"):
                model = forensynth_like_from(load_checkpoint(trained).model)
            else:
                model = stand_in(kind, calib, calib_labels)
            with torch.no_grad():
                cal_patch = model.patch_logits(torch.from_numpy(normalised_images(calib)))
            with torch.no_grad():
                cal_logits = model(torch.from_numpy(normalised_images(calib))).numpy().reshape(-1)
            fitted = fit_calibration(cal_logits, calib_labels.numpy())
            clamp = choose_clamp(model, calib)
            candidates = {
                "float graph as exported": {"fuse": True},
                "factorised": {"fuse": False},
                "factorised + calibrated": {"fuse": False, "decision_calibration": fitted},
                "factorised + clamp": {"fuse": False, "clamp": clamp},
            }
            for name, kwargs in candidates.items():
                if "clamp" in kwargs and kwargs["clamp"] is None:
                    rows.append((kind, name, None, None, 0))  # no decision-preserving bound exists
                    continue
                t0 = time.perf_counter()
                stem = f"s{len(rows)}"
                source = model if kwargs.get("clamp") is None else ClampedPatches(model, kwargs["clamp"])
                options = {k: v for k, v in kwargs.items() if k != "clamp"}
                onnx = export_onnx(source, Path(tmp) / f"{stem}.onnx", with_patches=True, **options)
                path = convert_to_tflite(onnx, tmp, ("int8",), representative=calib, stem=stem)["int8"]
                cal = kwargs.get("decision_calibration")
                rows.append((kind, name, kwargs.get("clamp"), score(model, path, x, y, cal), time.perf_counter() - t0))
                if name in ("float graph as exported", "factorised"):
                    rows.append((kind, name + " + float head", None, score(model, path, x, y, cal, True), 0))
                print(rows[-1], file=sys.stderr)
            plain = {"graph": "pixel", "snap_head": False, "correct_bias": False}
            new_rows = (
                ("factorised + equalized (shipped before)", None, {"graph": "factorised"}),
                ("... + calibrated", fitted, {"graph": "factorised"}),
                ("pixel input", None, plain),
                ("pixel input + calibrated", fitted, plain),
                ("pixel input + head on grid + calibrated", fitted, {**plain, "snap_head": True}),
                (
                    "pixel input + equalized + head on grid + calibrated",
                    fitted,
                    {**plain, "snap_head": True, "equalize": True},
                ),
                ("pixel input + head on grid + bias corrected + calibrated", fitted, {"graph": "pixel"}),
                (
                    "pixel input + equalized + head on grid + bias corrected + calibrated",
                    fitted,
                    {"graph": "pixel", "equalize": True},
                ),
                ("auto: best on calibration images (ships)", None, {}),
                ("auto + calibrated (ships)", fitted, {}),
            )
            for name, cal, options in new_rows:
                t0 = time.perf_counter()
                path, info = convert_int8(model, tmp, f"s{len(rows)}", calib, True, decision_calibration=cal, **options)
                if not options:
                    name += f" → {info['graph']}"
                rows.append((kind, name, None, score(model, path, x, y, cal), time.perf_counter() - t0))
                print(rows[-1], file=sys.stderr)
            print(
                kind,
                "patch logits on calibration images: p1/p50/p99",
                np.percentile(cal_patch, [1, 50, 99]),
                file=sys.stderr,
            )
    lines = [
        "# int8 study: which fix keeps decisions for students with large patch logits",
        "",
        f"Produced by `python benchmarks/int8_study.py` ({len(x)} toy test images; int8 calibrated on 100 toy "
        "training images; agreement = same decision as the float PyTorch model at p = 0.5, after the same "
        "calibration when one is baked in).",
        "",
        "| stand-in | candidate | clamp | agreement | max abs Δlogit | float logit spread (std) | patch rel. error | "
        "patch cosine | AP int8 | AP float | latency (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, name, clamp, r, _ in rows:
        if r is None:
            lines.append(f"| {kind} | {name} | none keeps every decision | – | – | – | – | – | – | – | – |")
            continue
        lines.append(
            f"| {kind} | {name} | {'–' if clamp is None else f'{clamp:.3g}'} | {r['agreement']:.1%} | {r['max_abs']:.3g} | "
            f"{r['ref_spread']:.3g} | {r['patch_rel_error']:.3f} | {r['patch_cosine']:.4f} | {r['ap_int8']:.3f} | "
            f"{r['ap_float']:.3f} | {r['latency_ms']:.2f} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
