"""Evaluation: the paper's metrics per split and per test platform, and heatmap localisation.

* :func:`binary_metrics` — accuracy at threshold 0.5 (on the probability, i.e. logit 0), average
  precision (AP), ROC AUC, real accuracy and fake accuracy, with scikit-learn. AP and AUC need both
  classes; with one class they are ``nan``.
* :func:`evaluate_model` — runs a teacher or a student over a dataset and reports those metrics for every
  split (``val``, ``test``, optionally ``train``) and every test platform (``test/reddit`` …), plus ``mAP``,
  the mean AP over the test platforms (the WildRF protocol: train on Reddit, test on all three).
* :func:`localisation_score` — does the patch map point at the generated region? For spliced fakes (the
  toy set's partial fakes carry a ground-truth mask) the patch map is placed on the 256×256 pixel grid by
  the model's receptive-field geometry (:func:`~ladeda_lib.geometry.upsample_patch_map`) and scored against
  the mask with a pixel-level ROC AUC (0.5 = no localisation, 1 = perfect).

Introduced in notebook 05.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.contract import ModelFileError, sigmoid
from ladeda_lib.data.images import load_mask
from ladeda_lib.geometry import INPUT_GEOMETRY, upsample_patch_map
from ladeda_lib.jsonio import write_json
from ladeda_lib.models import PatchDetector
from ladeda_lib.predictors import Predictor, load_predictor
from ladeda_lib.runner import CPU_BATCH_LIMIT, predict
from ladeda_lib.timing import resolve_device

METRIC_NAMES = ("accuracy", "ap", "auc", "real_acc", "fake_acc", "ece")


def binary_metrics(labels: Sequence[int] | np.ndarray | torch.Tensor, logits: Any, threshold: float = 0.5) -> dict:
    """Detection metrics for N images.

    Args:
        labels: (N,) 0 = real, 1 = fake.
        logits: (N,) or (N, 1) image logits (probability = sigmoid(logit)).
        threshold: decision threshold on the probability.

    Returns:
        dict with ``accuracy``, ``ap``, ``auc``, ``real_acc``, ``fake_acc``, ``ece`` (expected calibration error
        of the probabilities, 10 bins; see :mod:`ladeda_lib.calibration`) (floats; ``nan`` when undefined)
        and the counts ``n``, ``n_real``, ``n_fake``.
    """
    from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

    y = np.asarray(torch.as_tensor(labels).reshape(-1).cpu().numpy(), dtype=np.int64)
    z = np.asarray(torch.as_tensor(logits).detach().reshape(-1).float().cpu().numpy(), dtype=np.float64)
    if y.shape != z.shape:
        raise ValueError(f"labels {y.shape} and logits {z.shape} must have the same length")
    prob = sigmoid(z)
    pred = (prob >= threshold).astype(np.int64)
    from ladeda_lib.calibration import expected_calibration_error

    real, fake = y == 0, y == 1
    both = bool(real.any() and fake.any())
    return {
        "accuracy": float(accuracy_score(y, pred)) if len(y) else math.nan,
        "ap": float(average_precision_score(y, prob)) if both else math.nan,
        "auc": float(roc_auc_score(y, prob)) if both else math.nan,
        "real_acc": float((pred[real] == 0).mean()) if real.any() else math.nan,
        "fake_acc": float((pred[fake] == 1).mean()) if fake.any() else math.nan,
        "ece": expected_calibration_error(y, prob) if len(y) else math.nan,
        "n": int(len(y)),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
    }


def as_predictor(model: Any, device: str | torch.device = "cpu", threads: int | None = None) -> Predictor:
    """A :class:`~ladeda_lib.predictors.Predictor` for a model, a checkpoint or an exported file (or itself)."""
    if isinstance(model, Predictor):
        return model
    return load_predictor(model, threads=threads, device=device)


def evaluation_groups(index: Any, splits: Sequence[str] = ("val", "test")) -> dict[str, list]:
    """Sample groups to score: each split present (``"val"``), and each platform of a split (``"test/reddit"``)."""
    groups: dict[str, list] = {}
    for split in splits:
        samples = index.select(split=split)
        if not samples:
            continue
        groups[split] = samples
        platforms = sorted({s.platform for s in samples if s.platform})
        for platform in platforms:
            groups[f"{split}/{platform}"] = [s for s in samples if s.platform == platform]
    return groups


def evaluate_model(
    model: PatchDetector | Predictor | str | Path,
    data: Any = None,
    splits: Sequence[str] = ("val", "test"),
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    localisation: bool = True,
    threshold: float = 0.5,
    threads: int | None = None,
    keep_scores: bool = False,
) -> dict[str, Any]:
    """Metrics of a teacher or student — in any format — per split and per test platform.

    Args:
        model: a :class:`~ladeda_lib.models.PatchDetector` (run optimised on ``device``), a
            :class:`~ladeda_lib.predictors.Predictor`, or a file: checkpoint, published state_dict, ``.onnx`` or
            ``.tflite`` (:func:`~ladeda_lib.predictors.load_predictor`). A calibrated checkpoint is scored calibrated.
        data: dataset root, a :class:`~ladeda_lib.data.DatasetIndex`, or None for the toy set.
        splits: which splits to score (``"train"`` can be added).
        cache_dir: image-tensor cache (None = decode every time).
        localisation: also score heatmap localisation on spliced fakes that have masks.

    Returns:
        ``{"groups": {name: binary_metrics}, "mAP": mean AP over test platforms (or nan),
        "localisation": localisation_score(...) or None, "calibrated": whether the model carries a calibration}``;
        with ``keep_scores`` also ``"scores": {split: {"labels": [...], "logits": [...]}}`` for a reliability
        diagram (:func:`ladeda_lib.viz.plot_reliability`). Group names: ``"val"``, ``"test"``,
        ``"test/reddit"``, ….
    Introduced in notebook 05.
    """
    from ladeda_lib.data.layouts import resolve_dataset
    from ladeda_lib.data.tensors import load_tensors

    predictor = as_predictor(model, device, threads)
    index = resolve_dataset(data)
    groups = evaluation_groups(index, splits)
    if not groups:
        raise ValueError(f"no samples in splits {list(splits)} of {index.root} (found splits: {index.splits})")
    # Decode and score each split once; platform groups are subsets of their split.
    results: dict[str, dict] = {}
    all_logits: dict[Path, float] = {}
    for split in [g for g in groups if "/" not in g]:
        tensors = load_tensors(groups[split], cache_dir=cache_dir, progress=progress)
        logits, _ = predict(predictor, tensors.images, min(batch_size, CPU_BATCH_LIMIT))
        for sample, logit in zip(tensors.samples, logits.tolist(), strict=True):
            all_logits[Path(sample.path)] = logit
    for name, samples in groups.items():
        labels = [s.label for s in samples]
        results[name] = binary_metrics(labels, [all_logits[Path(s.path)] for s in samples], threshold)
    platform_aps = [r["ap"] for k, r in results.items() if k.startswith("test/")]
    m_ap = float(np.mean(platform_aps)) if platform_aps else math.nan
    loc = None
    if localisation:
        masked = [s for s in index.samples if s.mask is not None and s.label == 1 and s.split in splits]
        if masked:
            loc = localisation_score(predictor, masked, batch_size=batch_size, device=device, progress=progress)
    report = {"groups": results, "mAP": m_ap, "localisation": loc, "calibrated": predictor.calibration is not None}
    if keep_scores:
        report["scores"] = {
            split: {
                "labels": [s.label for s in groups[split]],
                "logits": [all_logits[Path(s.path)] for s in groups[split]],
            }
            for split in groups
            if "/" not in split
        }
    return report


def pixel_auc(heatmap: torch.Tensor, mask: torch.Tensor) -> float:
    """ROC AUC of heatmap values (H, W) as scores for mask pixels (H, W bool); nan if the mask is all one value."""
    from sklearn.metrics import roc_auc_score

    y = mask.reshape(-1).numpy().astype(np.int64)
    if y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, heatmap.reshape(-1).float().numpy()))


def localisation_score(
    model: PatchDetector | Predictor | str | Path,
    samples: Sequence[Any],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """How well the patch map localises spliced regions: mean per-image pixel AUC (and pooled over all pixels).

    Each sample (with ``.mask``) is resized to 256×256 like every input; its patch map (31×31 teacher,
    126×126 student) is placed on the pixels by :func:`~ladeda_lib.geometry.upsample_patch_map` (each pixel
    gets the mean logit of the patches covering it) and compared with the mask resized the same way.

    Returns:
        ``{"pixel_auc": mean per-image AUC, "pixel_auc_pooled": AUC over all pixels of all images,
        "n_images": count, "per_image": [..]}``.
    Introduced in notebook 06.
    """
    from ladeda_lib.data.tensors import load_tensors

    predictor = as_predictor(model, device)
    samples = [s for s in samples if s.mask is not None]
    if not samples:
        raise ValueError("localisation_score needs samples with ground-truth masks (spliced fakes of the toy set)")
    size = INPUT_GEOMETRY.image_size
    tensors = load_tensors(samples, progress=False)
    _, patches = predict(predictor, tensors.images, min(batch_size, CPU_BATCH_LIMIT), keep_patches=True)
    if patches is None:
        raise ValueError("localisation needs the patch map; this exported file has none (export it --with-patches)")
    if predictor.geometry is None:
        raise ModelFileError(
            f"{predictor.path}: no sidecar ({predictor.path}.ladeda.json) says which model made this file, so its "
            "patch map cannot be placed on the pixels; re-export it with ladeda export"
        )
    heatmaps = upsample_patch_map(patches, predictor.geometry, size)[:, 0]
    masks = torch.stack([load_mask(s.mask, size) for s in samples])
    per_image = [pixel_auc(h, m) for h, m in zip(heatmaps, masks, strict=True)]
    # Pooled AUC on a fixed pixel subsample (every 4th row and column) to keep it fast; per-image AUC uses all.
    pooled = pixel_auc(heatmaps[:, ::4, ::4].reshape(-1), masks[:, ::4, ::4].reshape(-1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_auc = float(np.nanmean(per_image)) if per_image else math.nan
    return {"pixel_auc": mean_auc, "pixel_auc_pooled": pooled, "n_images": len(samples), "per_image": per_image}


def _fmt(v: float) -> str:
    return "  -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def format_report(report: dict[str, Any], title: str = "") -> str:
    """A plain-text table of :func:`evaluate_model`'s result (one row per group)."""
    lines = [title] if title else []
    lines.append(f"{'group':<16} {'n':>5} {'acc':>6} {'AP':>6} {'AUC':>6} {'real':>6} {'fake':>6} {'ECE':>6}")
    for name, m in report["groups"].items():
        lines.append(
            f"{name:<16} {m['n']:>5} {_fmt(m['accuracy']):>6} {_fmt(m['ap']):>6} {_fmt(m['auc']):>6} "
            f"{_fmt(m['real_acc']):>6} {_fmt(m['fake_acc']):>6} {_fmt(m.get('ece', math.nan)):>6}"
        )
    if not math.isnan(report.get("mAP", math.nan)):
        lines.append(f"mAP over test platforms: {report['mAP']:.3f}")
    loc = report.get("localisation")
    if loc:
        lines.append(
            f"localisation on {loc['n_images']} spliced fakes: pixel AUC {_fmt(loc['pixel_auc'])} "
            f"(pooled {_fmt(loc['pixel_auc_pooled'])})"
        )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    out: dict[str, Any] = {}
    for path in args.model:
        predictor = load_predictor(path, threads=args.threads, device=device)
        report = evaluate_model(
            predictor,
            args.data,
            splits=args.splits,
            batch_size=args.batch_size,
            device=device,
            cache_dir=args.cache_dir,
            progress=not args.quiet,
            localisation=not args.no_localisation,
        )
        model = getattr(predictor, "model", None)
        what = f"{model.arch}, {model.num_parameters():,} parameters" if model is not None else predictor.backend
        calibrated = "calibrated" if predictor.calibration is not None else "no calibration record"
        print(format_report(report, f"{path} ({what}; {calibrated})"))
        print()
        out[str(path)] = report
    if args.json:
        write_json(args.json, out)
        print(f"metrics written to {args.json}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="accuracy, AP, AUC, real/fake accuracy per split and platform, and heatmap localisation"
    )
    p.add_argument(
        "--model",
        nargs="+",
        required=True,
        help="model file(s): checkpoint (ours or published), .onnx or .tflite; each scored per split and platform",
    )
    p.add_argument("--data", default=None, help="dataset root (default: the toy set, generated if absent)")
    p.add_argument("--splits", nargs="+", default=["val", "test"], help="splits to score (default: val test)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (PyTorch models)")
    p.add_argument("--threads", type=int, default=None, help="threads of the model's backend (default: PyTorch's)")
    p.add_argument("--cache-dir", default=None, help="image-tensor cache folder (default: none)")
    p.add_argument("--no-localisation", action="store_true", help="skip the heatmap localisation score")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=_run)
