"""Proof that each exported file still says what the PyTorch model says.

For every file (``.onnx`` and each ``.tflite``): its input/output names, shapes, dtypes and int8
scale/zero point; inference through onnxruntime or the LiteRT interpreter; parity with PyTorch on held-out
images (max and mean |Δ logit|, decision agreement at the threshold, patch-map cosine where exported);
accuracy and AP when labels are given; file size; batch-1 latency (median of the quietest of three blocks).
Each format is checked against a :class:`Tolerances`; the report is a Markdown table and a JSON file next to
the models.
Introduced in notebook 08.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ladeda_lib.contract import DecisionCalibration
from ladeda_lib.data.images import normalised_images
from ladeda_lib.export.errors import ExportError
from ladeda_lib.jsonio import write_json
from ladeda_lib.models import PatchDetector
from ladeda_lib.predictors import load_predictor
from ladeda_lib.timing import measure_latency_ms, resolve_threads


@dataclass(frozen=True)
class Tolerances:
    """What each format must achieve against PyTorch (``threshold`` is on the fake probability).

    ``max_rel`` bounds max |Δ logit| *relative to the logit magnitude* — divided by
    :func:`logit_scale` (the largest |patch logit| of the reference, at least 1): float32 itself differs by
    about 1e-7 of the largest value it sums, so a checkpoint whose logits run into the thousands needs a
    relative tolerance. ``agreement`` is the smallest fraction of images with the same decision (what
    matters). None means "reported, not checked".
    """

    threshold: float = 0.5
    onnx_max_rel: float | None = 1e-4
    float32_max_rel: float | None = 1e-4
    float16_max_rel: float | None = 1e-2
    dynamic_range_max_rel: float | None = None
    dynamic_range_agreement: float | None = 0.99
    int8_agreement: float | None = 0.99

    def limits(self, fmt: str) -> tuple[float | None, float | None]:
        """(max_rel, agreement) limits for a format name ("onnx", "float32", …)."""
        return getattr(self, f"{fmt}_max_rel", None), getattr(self, f"{fmt}_agreement", None)

    @property
    def logit_threshold(self) -> float:
        """The logit at which the probability equals ``threshold``."""
        return math.log(self.threshold / (1 - self.threshold))


@dataclass
class FormatResult:
    """Verification of one file (or of the PyTorch reference, ``format="pytorch"``)."""

    format: str
    path: str | None
    size_bytes: int | None
    latency_ms: float
    io: dict[str, Any] = field(default_factory=dict)
    max_abs: float | None = None
    mean_abs: float | None = None
    agreement: float | None = None
    patch_cosine: float | None = None
    patch_rel_error: float | None = None
    max_rel: float | None = None
    accuracy: float | None = None
    ap: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class VerificationReport:
    """All rows plus the tolerances they were checked against."""

    rows: list[FormatResult]
    tolerances: Tolerances
    num_images: int
    has_labels: bool

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[str]:
        return [f"{r.format}: {f}" for r in self.rows for f in r.failures]

    def row(self, fmt: str) -> FormatResult:
        """The row of format ``fmt`` ("pytorch", "onnx", "float32", …)."""
        for r in self.rows:
            if r.format == fmt:
                return r
        raise KeyError(fmt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "num_images": self.num_images,
            "tolerances": asdict(self.tolerances),
            "formats": [{**asdict(r), "passed": r.passed} for r in self.rows],
        }

    def to_markdown(self) -> str:
        """One row per format: size, latency, parity, accuracy/AP, pass/fail; failures listed below."""

        def num(value: float | None, fmt: str) -> str:
            return "–" if value is None else format(value, fmt)

        lines = [
            f"Parity on {self.num_images} held-out images; decision threshold p = {self.tolerances.threshold}; "
            "relative Δ = |Δ logit| / the largest |patch logit| of the reference (at least 1); patch rel. "
            "error = ‖Δ patch map‖ / ‖patch map‖.",
            "",
            "| format | input | size (KiB) | latency (ms) | max abs Δlogit | max rel Δlogit | agreement | "
            "patch cosine | patch rel. error | accuracy | AP | check |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|",
        ]
        for r in self.rows:
            inputs = r.io.get("inputs", [{}])
            first = inputs[0] if inputs else {}
            quant = f" q({first['scale']:.3g},{first['zero_point']})" if first.get("scale") else ""
            shape = "×".join(map(str, first.get("shape", []))) or "–"
            io = f"{first.get('dtype', 'float32')} {shape}{quant}" if r.io else "float32 (B×3×H×W)"
            size = "–" if r.size_bytes is None else f"{r.size_bytes / 1024:.1f}"
            lines.append(
                f"| {r.format} | {io} | {size} | {r.latency_ms:.2f} | {num(r.max_abs, '.2e')} | {num(r.max_rel, '.2e')} | "
                f"{num(r.agreement, '.2%')} | {num(r.patch_cosine, '.5f')} | {num(r.patch_rel_error, '.2e')} | "
                f"{num(r.accuracy, '.3f')} | "
                f"{num(r.ap, '.3f')} | {'pass' if r.passed else 'FAIL'} |"
            )
        if self.failures:
            lines += ["", "Failed checks:", *[f"- {f}" for f in self.failures]]
        return "\n".join(lines)

    def write(self, folder: str | Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>_verification.md`` and ``<stem>_verification.json`` into ``folder``."""
        folder = Path(folder)
        md, js = folder / f"{stem}_verification.md", folder / f"{stem}_verification.json"
        md.write_text(f"# Export verification: {stem}\n\n{self.to_markdown()}\n")
        write_json(js, self.to_dict())
        return md, js


def _metrics(
    logits: np.ndarray, labels: np.ndarray | None, logit_threshold: float
) -> tuple[float | None, float | None]:
    if labels is None:
        return None, None
    from sklearn.metrics import accuracy_score, average_precision_score

    scores = logits.reshape(-1)
    accuracy = float(accuracy_score(labels, scores >= logit_threshold))
    ap = float(average_precision_score(labels, scores)) if len(np.unique(labels)) == 2 else None
    return accuracy, ap


def logit_scale(patch_logits: np.ndarray) -> float:
    """The magnitude parity is judged against: the largest |patch logit| of the reference, at least 1."""
    return max(1.0, float(np.abs(patch_logits).max())) if patch_logits.size else 1.0


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖ over all images and patches (patch-map fidelity; 0 = identical)."""
    norm = float(np.linalg.norm(b.astype(np.float64)))
    return float(np.linalg.norm((a - b).astype(np.float64))) / max(norm, 1e-30)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.maximum(denom, 1e-30), 1.0)
    return float(cos.mean())


def verify_exports(
    model: PatchDetector,
    files: Mapping[str, str | Path],
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | None = None,
    tolerances: Tolerances | None = None,
    latency_runs: int = 30,
    threads: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    decision_calibration: DecisionCalibration | None = None,
) -> VerificationReport:
    """Check every exported file against ``model`` on ``images``.

    Args:
        model: the PyTorch model the files were exported from (reference).
        files: ``{format: path}``, e.g. ``{"onnx": …, "float32": …, "int8": …}``; the format names pick the
            tolerances (unknown names are reported without checks).
        images: held-out images (N, 3, 256, 256), uint8 (normalised here like training) or normalised float.
        labels: (N,) 0 real / 1 fake to also report accuracy and AP per format.
        tolerances: limits per format (default :class:`Tolerances`).
        latency_runs: batch-1 calls timed per format (see :func:`~ladeda_lib.timing.measure_latency_ms`); 0 skips timing.
        threads: threads for every backend (None: :func:`~ladeda_lib.timing.resolve_threads`).
        batch_size: PyTorch reference batch size.
        progress: show a progress bar over the files.
        decision_calibration: the decision calibration baked into the exported graphs (applied to the PyTorch
            reference).

    Returns:
        a :class:`VerificationReport`; ``report.passed`` is False when any check failed.
    Introduced in notebook 08.
    """
    tol = tolerances or Tolerances()
    x = normalised_images(images)
    if len(x) == 0:
        raise ExportError("verification needs at least one held-out image")
    y = None if labels is None else np.asarray(labels).reshape(-1).astype(int)
    if y is not None and len(y) != len(x):
        raise ExportError(f"{len(x)} images but {len(y)} labels")
    model = model.eval()
    threads = resolve_threads(threads)
    one = torch.from_numpy(x[:1])
    with torch.no_grad():
        outs = [
            model.forward_with_patches(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)
        ]
        ref_logit = torch.cat([o[0] for o in outs]).numpy()
        ref_patch = torch.cat([o[1] for o in outs]).numpy()
        if decision_calibration is not None:  # the exported graphs carry it: compare like with like
            ref_logit, ref_patch = decision_calibration.apply(ref_logit), decision_calibration.apply(ref_patch)
        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            torch_latency = measure_latency_ms(lambda: model(one), latency_runs) if latency_runs else math.nan
        finally:
            torch.set_num_threads(old_threads)
    accuracy, ap = _metrics(ref_logit, y, tol.logit_threshold)
    rows = [FormatResult("pytorch", None, None, torch_latency, accuracy=accuracy, ap=ap)]
    ref_decision = ref_logit.reshape(-1) >= tol.logit_threshold
    scale = logit_scale(ref_patch)

    for fmt, path in tqdm(list(files.items()), desc="verify", disable=not progress, leave=False):
        path = Path(path)
        predictor = load_predictor(path, threads)
        logit, patch = predictor(x)
        diff = np.abs(logit - ref_logit)
        agreement = float(np.mean((logit.reshape(-1) >= tol.logit_threshold) == ref_decision))
        accuracy, ap = _metrics(logit, y, tol.logit_threshold)
        latency = measure_latency_ms(lambda r=predictor: r(x[:1]), latency_runs) if latency_runs else math.nan
        same_patch_shape = patch is not None and patch.shape == ref_patch.shape
        row = FormatResult(
            fmt,
            str(path),
            path.stat().st_size,
            latency,
            predictor.describe(),
            float(diff.max()),
            float(diff.mean()),
            agreement,
            _cosine(patch, ref_patch) if same_patch_shape else None,
            _relative_error(patch, ref_patch) if same_patch_shape else None,
            float(diff.max()) / scale,
            accuracy,
            ap,
        )
        if logit.shape != ref_logit.shape:
            row.failures.append(f"logit shape {logit.shape}, expected {ref_logit.shape}")
        if patch is not None and patch.shape != ref_patch.shape:
            row.failures.append(f"patch_logits shape {patch.shape}, expected {ref_patch.shape}")
        max_rel, min_agreement = tol.limits(fmt)
        if max_rel is not None and row.max_rel > max_rel:
            row.failures.append(
                f"max |Δlogit| {row.max_abs:.2e} is {row.max_rel:.1e} of the logit scale {scale:.3g} "
                f"(limit {max_rel:.0e})"
            )
        if min_agreement is not None and agreement < min_agreement:
            row.failures.append(f"decision agreement {agreement:.2%} below {min_agreement:.0%}")
        rows.append(row)
    return VerificationReport(rows, tol, len(x), y is not None)


def compare_with_pytorch_quantizer(
    model: PatchDetector, tflite_dynamic_range: str | Path, images: torch.Tensor | np.ndarray, **quantizer_kwargs: Any
) -> dict[str, float]:
    """Max |Δ logit| between :class:`DynamicRangeQuantizer`'s model, the float model and a TFLite
    dynamic-range file on ``images`` — what quantizing the weights does, seen from both sides.
    Introduced in notebook 08.
    """
    from ladeda_lib.export.quantizer import DynamicRangeQuantizer

    x = torch.from_numpy(normalised_images(images))
    quantized = DynamicRangeQuantizer(**quantizer_kwargs).quantize(model)
    with torch.no_grad():
        ref, qlog = model.eval()(x).numpy(), quantized(x).numpy()
    tfl, _ = load_predictor(tflite_dynamic_range)(x)
    return {
        "pytorch_quantized_vs_float": float(np.abs(qlog - ref).max()),
        "tflite_dynamic_range_vs_float": float(np.abs(tfl - ref).max()),
        "pytorch_quantized_vs_tflite_dynamic_range": float(np.abs(qlog - tfl).max()),
    }
