"""The whole chain in one call: PyTorch → ONNX → TFLite (one or all formats) → verification report.

``ladeda export`` is a thin shell around :func:`export_model`; notebooks and the project pipeline call it
directly. Introduced in notebook 08.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.contract import DecisionCalibration, describe_model, write_sidecar
from ladeda_lib.export.errors import ExportError
from ladeda_lib.export.int8 import convert_int8
from ladeda_lib.export.onnx_export import check_writable_folder, export_onnx
from ladeda_lib.export.tflite import QUANTIZATIONS, convert_to_tflite
from ladeda_lib.export.verify import Tolerances, VerificationReport, verify_exports
from ladeda_lib.graphs.fused import has_fusable_stem
from ladeda_lib.models import PatchDetector

#: ``--quantization`` choices: "none" is the float32 file, "all" every format.
QUANTIZATION_CHOICES = ("none", "float16", "dynamic_range", "int8", "all")


def formats_for(quantization: str) -> tuple[str, ...]:
    """TFLite formats for a ``--quantization`` choice ("none" → float32, "all" → all four)."""
    if quantization == "all":
        return QUANTIZATIONS
    if quantization == "none":
        return ("float32",)
    if quantization in QUANTIZATIONS:
        return (quantization,)
    raise ExportError(f"unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATION_CHOICES)}")


@dataclass
class ExportResult:
    """What :func:`export_model` produced: the ONNX file, the TFLite files and the verification."""

    onnx: Path
    tflite: dict[str, Path]
    report: VerificationReport | None = None
    report_files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def files(self) -> dict[str, Path]:
        """``{"onnx": …, <format>: …}`` — every model file produced."""
        return {"onnx": self.onnx, **self.tflite}


def export_model(
    model: PatchDetector,
    output: str | Path,
    quantization: str = "dynamic_range",
    representative_images: torch.Tensor | np.ndarray | None = None,
    eval_images: torch.Tensor | np.ndarray | None = None,
    eval_labels: torch.Tensor | np.ndarray | None = None,
    nhwc: bool = False,
    with_patches: bool = False,
    tolerances: Tolerances | None = None,
    latency_runs: int = 30,
    threads: int | None = None,
    progress: bool = True,
    decision_calibration: DecisionCalibration | None = None,
    record: dict[str, Any] | None = None,
    fuse: bool = True,
) -> ExportResult:
    """Export ``model`` to ONNX and TFLite, then verify every file against PyTorch.

    Args:
        model: the detector (eval mode is set).
        output: ``NAME.tflite`` — with one format the TFLite file is exactly this path; with
            ``quantization="all"`` the files are ``NAME_<format>.tflite``. ``NAME.onnx`` and
            ``NAME_verification.{md,json}`` are written next to it.
        quantization: one of :data:`QUANTIZATION_CHOICES`.
        representative_images: training-split images (N, 3, 256, 256) uint8 or normalised float, from which a
            full-int8 file takes its activation ranges; needed for int8.
        eval_images / eval_labels: held-out images (and 0/1 labels) for parity, accuracy and AP; without
            them no verification report is made.
        nhwc: TFLite input (1, 256, 256, 3) instead of (1, 3, 256, 256).
        with_patches: also export the patch-logit map.
        tolerances, latency_runs, threads, progress: passed to :func:`verify_exports`.
        decision_calibration: a decision offset and temperature (``ladeda calibrate``) to bake into every file; the
            files' logits are then the calibrated ones, and each file's ``<file>.ladeda.json`` records it.
        record: more facts for the ``.ladeda.json`` records (source checkpoint, int8 representative data).
        fuse: export Tiny-LaDeDa as the deployed graph (``conv1``, ``conv2`` and ``bn1`` as one convolution,
            column pairs, a pre-sorted top-K; identical outputs to ~1e-6, about half the time in LiteRT; see
            :mod:`ladeda_lib.export.column_pairs`).
    Introduced in notebook 08.
    """
    output = Path(output)
    if output.suffix != ".tflite":
        raise ExportError(f"--output must name a .tflite file (got {output}); the .onnx is written next to it")
    formats = formats_for(quantization)
    folder = check_writable_folder(output.parent)
    onnx_path = export_onnx(
        model,
        folder / f"{output.stem}.onnx",
        with_patches=with_patches,
        fuse=fuse,
        decision_calibration=decision_calibration,
    )
    float_formats = tuple(f for f in formats if f != "int8")
    produced = {}
    if float_formats:
        produced = convert_to_tflite(
            onnx_path, folder, float_formats, representative=representative_images, nhwc=nhwc, stem=output.stem
        )
    int8_info: dict[str, Any] = {}
    if "int8" in formats:
        # pixel-input graph for Tiny-LaDeDa (factorised otherwise): ladeda_lib/export/int8.py, benchmarks/int8_study.md
        produced["int8"], int8_info = convert_int8(
            model, folder, output.stem, representative_images, with_patches, nhwc, decision_calibration
        )
        produced = {f: produced[f] for f in formats}
    if len(formats) == 1:
        single = produced[formats[0]]
        single.replace(output)
        produced = {formats[0]: output}
    result = ExportResult(onnx_path, produced)
    facts = {**describe_model(model, decision_calibration), **(record or {})}
    for fmt, path in result.files.items():
        graph = "deployed graph (column pairs, pre-sorted top-K)" if fuse and has_fusable_stem(model) else "as trained"
        extra = int8_info if fmt == "int8" else {}
        write_sidecar(path, {**facts, "format": fmt, "graph": graph, **extra})
    if eval_images is not None:
        result.report = verify_exports(
            model,
            result.files,
            eval_images,
            eval_labels,
            tolerances,
            latency_runs,
            threads,
            progress=progress,
            decision_calibration=decision_calibration,
        )
        result.report_files = result.report.write(folder, output.stem)
    return result


def load_export_images(
    data: str | Path | None,
    representative_count: int = 100,
    eval_count: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Int8 representative images and evaluation images from a dataset (via :mod:`ladeda_lib.data`; None: the
    toy set).

    Representative: ``representative_count`` images drawn at random (``seed``) from the training split, real and
    fake alike. Evaluation: the test split (every platform), or the validation split when there is no test
    split; ``eval_count`` caps it (random, ``seed``).

    Returns:
        (representative uint8 (C, 3, 256, 256), eval images uint8 (E, 3, 256, 256), eval labels long (E,)).
    """
    from ladeda_lib.data import load_tensors, resolve_dataset

    index = resolve_dataset(data, progress=progress)
    rng = np.random.default_rng(seed)

    def pick(samples: list, count: int | None) -> list:
        if count is None or count >= len(samples):
            return list(samples)
        return [samples[i] for i in sorted(rng.choice(len(samples), size=count, replace=False))]

    train = index.select(split="train")
    if not train:
        raise ExportError(f"{data}: no training images to take int8 representative images from")
    held_out = index.select(split="test") or index.select(split="val")
    if not held_out:
        raise ExportError(f"{data}: no test or validation images to verify the exported files on")
    representative = load_tensors(pick(train, representative_count), progress=progress).images
    evaluation = load_tensors(pick(held_out, eval_count), progress=progress)
    return representative, evaluation.images, evaluation.labels
