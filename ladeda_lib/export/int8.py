"""Full int8 for any student: convert the graph that keeps the decisions of students whose logits are large.

:func:`convert_int8` is how ``ladeda export`` makes the int8 file. For Tiny-LaDeDa with a fixed filter or raw
input it converts the :class:`~ladeda_lib.graphs.pixel_input.PixelInputStudent` with and without channel
equalization, and the factorised graph, and keeps the one closest to float on the representative images
(:data:`INT8_CANDIDATES`); other models get the factorised graph. The graphs themselves live in
:mod:`ladeda_lib.graphs`; ``benchmarks/int8_study.py`` measures every piece. Introduced in notebook 08.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.contract import LOGIT_NAME, PATCH_NAME, PIXEL_INPUT_NAME, DecisionCalibration
from ladeda_lib.data.images import normalised_images
from ladeda_lib.export.errors import ExportError
from ladeda_lib.export.onnx_export import check_writable_folder, export_onnx
from ladeda_lib.export.tflite import convert_to_tflite
from ladeda_lib.graphs.equalize import equalize_channels
from ladeda_lib.graphs.fused import has_fusable_stem
from ladeda_lib.graphs.pixel_input import PixelInputStudent, representative_pixels
from ladeda_lib.models import PatchDetector, TinyLaDeDa
from ladeda_lib.predictors import load_predictor


def export_pixel_onnx(graph: PixelInputStudent, path: str | Path, image_size: int = 256) -> Path:
    """Export a :class:`PixelInputStudent` to ONNX (opset 17): input :data:`PIXEL_INPUT_NAME` (1, 3, S, S)
    float → ``logit`` [, ``patch_logits``]; checked against PyTorch with onnxruntime (relative 1e-4)."""
    import onnx

    from ladeda_lib.export.onnx_export import check_against_onnxruntime, trace_to_onnx

    path = Path(path)
    example = torch.randint(-128, 128, (1, 3, image_size, image_size), generator=torch.Generator().manual_seed(0))
    example = example.float()
    names = [LOGIT_NAME, PATCH_NAME] if graph.with_patches else [LOGIT_NAME]
    expected = trace_to_onnx(graph, example, path, PIXEL_INPUT_NAME, names)
    # the tracer computes F.pad's pads with a chain of shape ops; onnx2tf mis-reads that chain (the patch map came
    # out 126×125 with batch 2), so fold it into constants first (onnx-graphsurgeon ships with onnx2tf)
    import onnx_graphsurgeon as gs

    folded = gs.import_onnx(onnx.load(str(path)))
    folded.fold_constants().cleanup().toposort()
    onnx.save(gs.export_onnx(folded), str(path))
    onnx.checker.check_model(onnx.load(str(path)))
    check_against_onnxruntime(path, example, names, expected, 1e-4)
    return path


#: int8 graphs ``convert_int8(graph="auto")`` tries: (graph, equalize, head on grid, bias corrected) → label.
INT8_CANDIDATES = {
    ("pixel", False, True, True): "pixel input + head on grid + bias corrected",
    ("pixel", True, True, True): "pixel input + equalized + head on grid + bias corrected",
    ("factorised", True, False, False): "factorised + equalized",
}


def convert_int8(
    model: PatchDetector,
    folder: str | Path,
    stem: str,
    representative_images: torch.Tensor | np.ndarray,
    with_patches: bool = False,
    nhwc: bool = False,
    decision_calibration: DecisionCalibration | None = None,
    equalize: bool = False,
    graph: str = "auto",
    snap_head: bool = True,
    correct_bias: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Write ``<folder>/<stem>_int8.tflite``, the full-int8 file, its activation ranges taken from ``representative_images``.

    Graphs (``benchmarks/int8_study.md`` compares them):

    * ``"pixel"``: the :class:`PixelInputStudent` — pixel input, zero-sum pre-rounded fused stem, mean pooling and
      head as one convolution; the file's input is named :data:`PIXEL_INPUT_NAME` and every predictor feeds it
      ``pixel − 128``. Tiny-LaDeDa with a fixed filter or raw input only.
    * ``"factorised"``: the normalised-input graph with the filter, ``conv1`` and ``conv2`` kept apart, channels
      equalized (the teacher and NPR students, whose preprocessing is not a convolution, get only this).
    * ``"auto"`` (default): for Tiny-LaDeDa with a fixed filter or raw input, converts the pixel graph with its
      head on the int8 grid (:func:`snap_to_grid`) and its biases corrected for rounding, with and without
      channel equalization, and the factorised graph (:data:`INT8_CANDIDATES`), and keeps the file whose logits
      are closest to the float model's on the representative images (smallest mean |Δ logit|: a continuous
      measure, where the agreement of 100 images moves in 1 % steps and picked the worse file for our toy
      student) — which one wins depends on the student (measured in the study); otherwise the factorised graph.

    Args:
        model: the detector; representative_images: representative images (N, 3, 256, 256), uint8 or normalised.
        with_patches, nhwc: as for :func:`~ladeda_lib.export.chain.export_model`.
        decision_calibration: offset/temperature baked into the graph (the logits compared are calibrated).
        equalize, snap_head, correct_bias: with ``graph="pixel"``, cross-layer channel equalization first, the
            head's weights put on their int8 grid (:func:`snap_to_grid`) — both keep the float outputs — and the
            biases corrected for rounding on the representative images (:class:`PixelInputStudent`).
        graph: ``"auto"``, ``"pixel"`` or ``"factorised"``.
    Returns:
        (the int8 file, ``{"graph": …, "input": …, "candidates": …}`` saying which graph was converted, what it
        takes, and each candidate's agreement on the representative images when several were tried).
    """
    if representative_images is None:
        raise ExportError(
            "full int8 quantization needs representative images (real training images through the "
            "same preprocessing, about 100); pass representative_images=uint8 tensor (N, 3, 256, 256)"
        )
    if graph == "auto":
        candidates = list(INT8_CANDIDATES) if has_fusable_stem(model) else [("factorised", True, False, False)]
    elif graph == "pixel":
        candidates = [("pixel", equalize, snap_head, correct_bias)]
    elif graph == "factorised":
        candidates = [("factorised", True, False, False)]
    else:
        raise ExportError(f"unknown int8 graph {graph!r}; choose auto, pixel or factorised")
    folder = Path(folder)
    if len(candidates) == 1:
        return _convert_one(
            model, candidates[0], folder, stem, representative_images, with_patches, nhwc, decision_calibration
        )
    scores: dict[str, dict[str, float]] = {}
    best: tuple[float, Path, dict[str, Any]] | None = None
    with tempfile.TemporaryDirectory(prefix="ladeda_int8_pick_") as tmp:
        for i, candidate in enumerate(candidates):
            path, info = _convert_one(
                model,
                candidate,
                Path(tmp) / str(i),
                stem,
                representative_images,
                with_patches,
                nhwc,
                decision_calibration,
            )
            agreement, max_abs, mean_abs = _decision_agreement(model, path, representative_images, decision_calibration)
            scores[INT8_CANDIDATES[candidate]] = {"agreement": agreement, "max_abs": max_abs, "mean_abs": mean_abs}
            if best is None or mean_abs < best[0]:
                best = (mean_abs, path, info)
        assert best is not None
        target = check_writable_folder(folder) / best[1].name
        shutil.copyfile(best[1], target)
    return target, {**best[2], "candidates (on representative images)": scores}


def _decision_agreement(
    model: PatchDetector,
    path: Path,
    images: torch.Tensor | np.ndarray,
    decision_calibration: DecisionCalibration | None,
) -> tuple[float, float, float]:
    """(decision agreement, max |Δ logit|, mean |Δ logit|) of an int8 file against the float model on ``images``."""
    x = normalised_images(images)
    with torch.no_grad():
        ref = torch.cat([model.eval()(torch.from_numpy(x[i : i + 16])) for i in range(0, len(x), 16)]).numpy()
    if decision_calibration is not None:
        ref = decision_calibration.apply(ref)
    got, _ = load_predictor(path)(x)
    ref, got = ref.reshape(-1), got.reshape(-1)
    return float(np.mean((got >= 0) == (ref >= 0))), float(np.abs(got - ref).max()), float(np.abs(got - ref).mean())


def _convert_one(
    model: PatchDetector,
    candidate: tuple[str, bool, bool, bool],
    folder: Path,
    stem: str,
    representative_images: torch.Tensor | np.ndarray,
    with_patches: bool,
    nhwc: bool,
    decision_calibration: DecisionCalibration | None,
) -> tuple[Path, dict[str, Any]]:
    graph, equalize, snap_head, correct_bias = candidate
    if graph == "factorised":
        return _convert_factorised(model, folder, stem, representative_images, with_patches, nhwc, decision_calibration)
    pixel_graph = PixelInputStudent(
        model,
        with_patches,
        decision_calibration,
        equalize_images=representative_images if equalize else None,
        snap_head=snap_head,
        correct_images=representative_images if correct_bias else None,
    )
    with tempfile.TemporaryDirectory(prefix="ladeda_int8_") as tmp:
        source = export_pixel_onnx(pixel_graph, Path(tmp) / f"{stem}.onnx")
        data = representative_pixels(representative_images)
        path = convert_to_tflite(source, folder, ("int8",), representative=data, nhwc=nhwc, stem=stem)["int8"]
    info = {
        "graph": "pixel input, zero-sum int8 stem"
        + (", mean pooling and head as one convolution" if pixel_graph.mean_first else "")
        + (", channels equalized" if equalize else "")
        + (", head on the int8 grid" if snap_head else "")
        + (", biases corrected for rounding" if correct_bias else ""),
        "input": f"{PIXEL_INPUT_NAME}: pixel - 128",
    }
    return path, info


def _convert_factorised(
    model: PatchDetector,
    folder: str | Path,
    stem: str,
    representative_images: torch.Tensor | np.ndarray,
    with_patches: bool,
    nhwc: bool,
    decision_calibration: DecisionCalibration | None,
    equalize: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """The normalised-input int8 file: factorised stem, channels equalized for Tiny-LaDeDa."""
    if representative_images is None:
        raise ExportError(
            "full int8 quantization needs representative images (real training images through the "
            "same preprocessing, about 100); pass representative_images=uint8 tensor (N, 3, 256, 256)"
        )
    x = normalised_images(representative_images)

    source_model = model
    if equalize and isinstance(model, TinyLaDeDa):
        source_model = equalize_channels(model, x)

    with tempfile.TemporaryDirectory(prefix="ladeda_int8_") as tmp:
        source = export_onnx(
            source_model,
            Path(tmp) / f"{stem}.onnx",
            with_patches=with_patches,
            fuse=False,
            decision_calibration=decision_calibration,
        )
        path = convert_to_tflite(source, folder, ("int8",), representative=x, nhwc=nhwc, stem=stem)["int8"]
    return path, {"graph": "factorised stem" + (", channels equalized" if source_model is not model else "")}
