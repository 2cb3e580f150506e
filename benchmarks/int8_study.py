"""Why full int8 breaks on students with large patch logits, and which fix holds: numbers, not opinions.

    python benchmarks/int8_study.py [--out benchmarks/int8_study.md]

Stand-ins for the published checkpoints (whose files may not be committed), built from a published-layout
Tiny-LaDeDa (mean pooling) whose BatchNorm statistics are measured on the toy training images:

* ``wildrf_like``: ``fc`` weights ×100, bias set so the median image logit is 0 — patch logits of hundreds,
  image logits of a few units (the WildRF file on toy images: patch logits ±400, int8 step 3.36).
* ``forensynth_like``: ``bn1.running_var`` divided by 300, image logits spread by hundreds and shifted so the
  smallest is 300 — every image "fake" at p = 0.5 (the ForenSynth file).

Candidates, each exported with the patch map and converted to full int8 by onnx2tf, calibrated on 100 toy
training images and compared with PyTorch on the toy test split:

* ``fused stem`` — the float graph: filter, conv1, conv2 and bn1 as one 5×5 convolution;
* ``factorised`` — filter · conv1 · conv2 (bn1 folded by the converter), as before the fusion;
* ``+ float head`` — the same int8 file, but the image logit is the float mean of its dequantized patch map;
* ``+ calibrated`` — the decision offset and temperature (``ladeda calibrate``) in the graph;
* ``+ clamp`` — patch logits clipped at :func:`ladeda_lib.export.int8.choose_clamp`'s bound (when one keeps
  every decision on the calibration images);
* ``+ equalized`` — :func:`ladeda_lib.export.int8.convert_int8` (cross-layer channel equalization), what
  ``ladeda export`` ships.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ladeda_lib.calibration import fit_calibration
from ladeda_lib.export import export_onnx
from ladeda_lib.export.chain import load_export_images
from ladeda_lib.export.int8 import choose_clamp, convert_int8
from ladeda_lib.export.tflite import convert_to_tflite, normalised_images
from ladeda_lib.models import TinyLaDeDa
from ladeda_lib.runtime import load_predictor


def stand_in(kind: str, calibration_images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> TinyLaDeDa:
    """A published-layout Tiny-LaDeDa (mean pooling) with measured BN statistics, made to behave like ``kind``."""
    torch.manual_seed(seed)
    model = TinyLaDeDa(pool="all")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the batches below
    x = torch.from_numpy(normalised_images(calibration_images))
    model.train()
    with torch.no_grad():
        for start in range(0, len(x), 16):
            model(x[start : start + 16])
    model.eval()
    with torch.no_grad():
        if kind == "forensynth_like":
            model.bn1.running_var.div_(300)
        # a "trained" head: the direction in feature space that separates the two classes (least squares)
        feats = model.features(x).mean(dim=(2, 3))
        target = labels.float() * 2 - 1
        w = torch.linalg.lstsq(feats - feats.mean(0), (target - target.mean())[:, None]).solution[:, 0]
        model.fc.weight.copy_(w[None] / w.abs().max())
        model.fc.bias.zero_()
        if kind == "wildrf_like":
            model.fc.weight.mul_(100 / float(model.patch_logits(x).std()))
            model.fc.bias.fill_(-float(model(x).median()))
        elif kind == "forensynth_like":
            model.fc.weight.mul_(500 / float(model(x).std()))
            model.fc.bias.fill_(300 - float(model(x).min()))  # every image logit positive, in the hundreds+
        else:
            raise ValueError(kind)
    return model


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
        for kind in ("wildrf_like", "forensynth_like"):
            model = stand_in(kind, calib, calib_labels)
            with torch.no_grad():
                cal_patch = model.patch_logits(torch.from_numpy(normalised_images(calib)))
            with torch.no_grad():
                cal_logits = model(torch.from_numpy(normalised_images(calib))).numpy().reshape(-1)
            fitted = fit_calibration(cal_logits, calib_labels.numpy())
            clamp = choose_clamp(model, calib)
            candidates = {
                "fused stem": {"fuse": True},
                "factorised": {"fuse": False},
                "factorised + calibrated": {"fuse": False, "calibration": fitted},
                "factorised + clamp": {"fuse": False, "clamp": clamp},
            }
            for name, kwargs in candidates.items():
                if "clamp" in kwargs and kwargs["clamp"] is None:
                    rows.append((kind, name, None, None, 0))  # no decision-preserving bound exists
                    continue
                t0 = time.perf_counter()
                stem = f"{kind}_{len(rows)}"
                onnx = export_onnx(model, Path(tmp) / f"{stem}.onnx", with_patches=True, **kwargs)
                path = convert_to_tflite(onnx, tmp, ("int8",), calibration=calib, stem=stem)["int8"]
                cal = kwargs.get("calibration")
                rows.append((kind, name, kwargs.get("clamp"), score(model, path, x, y, cal), time.perf_counter() - t0))
                if name in ("fused stem", "factorised"):
                    rows.append((kind, name + " + float head", None, score(model, path, x, y, cal, True), 0))
                print(rows[-1], file=sys.stderr)
            for name, cal in (("factorised + equalized (shipped)", None), ("... + calibrated", fitted)):
                t0 = time.perf_counter()
                path, _ = convert_int8(model, tmp, f"{kind}_{len(rows)}", calib, True, decision_calibration=cal)
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
