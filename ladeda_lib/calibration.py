"""Calibrated decisions: a decision offset and a temperature fitted on labelled images, and how to check them.

A detector's ranking (AP) can be excellent while its threshold is meaningless: the published ForenSynth
Tiny-LaDeDa gives every photograph a logit between 300 and 5,000, so p(fake) = 1.00 for everything and
accuracy at 0.5 is chance. One offset and one temperature, ``calibrated = (logit − offset) / temperature``,
fitted by logistic regression on one labelled split, move the threshold to where the ranking separates the
classes and make the probabilities mean what they say.

* :func:`fit_calibration` — logits and labels → :class:`~ladeda_lib.contract.DecisionCalibration`;
* :func:`expected_calibration_error`, :func:`reliability_bins` — how far probabilities are from frequencies;
* :func:`calibrate_checkpoint` — ``ladeda calibrate``: score a split with any model file, fit, write a
  checkpoint that records what it was fitted on (exports carry it into the graph).

Introduced in notebook 07.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from ladeda_lib.contract import DecisionCalibration, sigmoid


def fit_calibration(logits: Any, labels: Any, fitted_on: dict[str, Any] | None = None) -> DecisionCalibration:
    """Fit ``p = sigmoid((logit − offset) / temperature)`` to 0/1 labels by logistic regression.

    Logits are standardised first, so logits in the thousands fit as well as tame ones.

    Args:
        logits: (N,) raw image logits; labels: (N,) 0 real / 1 fake, both classes present.
        fitted_on: what the logits came from (data root, split, …), stored in the record.

    Raises:
        ValueError: one class only, constant logits, or a model that ranks fakes *below* reals.
    """
    from sklearn.linear_model import LogisticRegression

    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(int)
    if len(z) != len(y):
        raise ValueError(f"{len(z)} logits but {len(y)} labels")
    if len(np.unique(y)) != 2:
        raise ValueError("calibration needs labelled images of both classes (real and fake)")
    mu, sd = float(z.mean()), float(z.std())
    if not sd > 0:
        raise ValueError("every image got the same logit: nothing to calibrate")
    fit = LogisticRegression(C=1e4, max_iter=1000).fit(((z - mu) / sd)[:, None], y)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if a <= 0:
        raise ValueError("on these images the model scores real images higher than fakes; calibration cannot fix that")
    temperature = sd / a
    offset = mu - b * sd / a
    record = dict(fitted_on or {})
    record.update({"n": int(len(y)), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())})
    return DecisionCalibration(offset, temperature, record)


def reliability_bins(labels: Any, probabilities: Any, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins of p(fake): per bin its count, mean predicted probability and fraction of fakes."""
    y = np.asarray(labels).reshape(-1).astype(float)
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": float(p[mask].mean()) if count else math.nan,
                "frequency": float(y[mask].mean()) if count else math.nan,
            }
        )
    return rows


def expected_calibration_error(labels: Any, probabilities: Any, bins: int = 10) -> float:
    """ECE: Σ_bins (count / N) · |fraction of fakes − mean p(fake)| over equal-width bins (0 = calibrated)."""
    rows = reliability_bins(labels, probabilities, bins)
    total = sum(r["count"] for r in rows)
    if total == 0:
        return math.nan
    return float(sum(r["count"] / total * abs(r["frequency"] - r["confidence"]) for r in rows if r["count"]))


def decision_metrics(labels: Any, logits: Any, threshold_logit: float = 0.0) -> dict[str, float]:
    """Accuracy, real/fake accuracy at ``threshold_logit``, AP and ECE of (N,) logits against 0/1 labels."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(labels).reshape(-1).astype(int)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    pred = z >= threshold_logit
    return {
        "accuracy": float(np.mean(pred == (y == 1))),
        "real_acc": float(np.mean(~pred[y == 0])) if (y == 0).any() else math.nan,
        "fake_acc": float(np.mean(pred[y == 1])) if (y == 1).any() else math.nan,
        "ap": float(average_precision_score(y, z)) if len(np.unique(y)) == 2 else math.nan,
        "ece": expected_calibration_error(y, sigmoid(z)),
    }


def calibrate_checkpoint(
    model: str | Path,
    data: str | Path,
    output: str | Path,
    split: str = "val",
    threads: int | None = None,
    progress: bool = True,
) -> tuple[Path, DecisionCalibration, dict[str, Any]]:
    """Fit a calibration on one labelled split and write a checkpoint carrying it (``ladeda calibrate``).

    Args:
        model: our checkpoint or a published state_dict (``.pt``/``.pth``).
        data: a dataset folder or CSV (:func:`~ladeda_lib.data.detect_dataset`).
        output: the checkpoint to write (the model's weights plus ``metadata["calibration"]``).
        split: the split whose labelled images are used (``val`` by default; never the test split you report).

    Returns:
        (output path, the calibration, {"before": metrics, "after": metrics} on that split).
    """
    from ladeda_lib.checkpoints import load_checkpoint, save_checkpoint
    from ladeda_lib.data import detect_dataset, load_tensors
    from ladeda_lib.predictors import TorchPredictor
    from ladeda_lib.runner import predict

    index = detect_dataset(data)
    samples = index.select(split=split)
    if not samples:
        raise ValueError(f"{data}: no images in split {split!r} (splits found: {index.splits})")
    ckpt = load_checkpoint(model)
    tensors = load_tensors(samples, progress=progress)
    logits = predict(TorchPredictor(ckpt.model, threads=threads), tensors.images, batch_size=16)[0].numpy()
    labels = tensors.labels.numpy()
    calibration = fit_calibration(
        logits, labels, {"model": str(model), "data": str(Path(data).resolve()), "split": split}
    )
    before = decision_metrics(labels, logits)
    after = decision_metrics(labels, calibration.apply(logits))
    calibration.fitted_on.update({"accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"]})
    metadata = dict(ckpt.metadata)
    metadata["calibration"] = calibration.to_dict()
    metadata.setdefault("source", str(model))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt.model, output, metadata=metadata)
    return output, calibration, {"before": before, "after": after}


def _run(args: argparse.Namespace) -> int:
    out, cal, metrics = calibrate_checkpoint(
        args.model, args.data, args.output, args.split, args.threads, progress=not args.quiet
    )
    b, a = metrics["before"], metrics["after"]
    print(
        f"fitted on {cal.fitted_on['n']} {args.split} images: offset {cal.offset:.4g}, temperature {cal.temperature:.4g}"
    )
    print(f"{'':8} {'accuracy':>9} {'real acc':>9} {'fake acc':>9} {'AP':>6} {'ECE':>6}")
    for name, m in (("before", b), ("after", a)):
        print(
            f"{name:8} {m['accuracy']:>9.3f} {m['real_acc']:>9.3f} {m['fake_acc']:>9.3f} {m['ap']:>6.3f} {m['ece']:>6.3f}"
        )
    print(f"calibrated checkpoint: {out}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ladeda calibrate``."""
    p = subparsers.add_parser(
        "calibrate",
        help="fit a decision offset and temperature on labelled images; write a calibrated checkpoint",
        description="Score one labelled split with the model, fit p = sigmoid((logit - offset) / temperature) and "
        "write a checkpoint that records the calibration and what it was fitted on. predict, evaluate and "
        "export use it.",
    )
    p.add_argument("--model", required=True, help="checkpoint or published state_dict (.pt/.pth)")
    p.add_argument("--data", required=True, help="labelled dataset folder or CSV")
    p.add_argument("--split", default="val", help="split to fit on (default: val)")
    p.add_argument("--output", required=True, help="calibrated checkpoint to write (.pt)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: PyTorch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_run)
