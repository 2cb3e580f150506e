"""ONNX → TFLite with onnx2tf: float32, float16, dynamic-range and full-int8 files, fully offline.

TensorFlow has no ONNX importer (``tf.lite.TFLiteConverter.from_onnx_model`` does not exist); onnx2tf
rebuilds the graph in TensorFlow, writes a SavedModel and lets TensorFlow's converter produce the files.
Three habits of onnx2tf are tamed here:

* It **rewrites its input .onnx in place** — we convert a copy in a temporary working folder, so the
  user's file is never touched.
* It **downloads a sample-image file** whenever every input is a 4-D, 3-channel image (even for float
  conversion) and int8 quantization has no representative data. We keep the input NCHW (then it is not a
  3-channel-last image), always pass our own representative images, and place a locally made sample file in the working folder
  (onnx2tf reads it from the current directory first). Nothing is requested from the network.
* It prints a lot — its output goes to a log that is shown only when something fails.

Full int8 ("int8") quantizes weights *and* activations, input and output included, so it needs
representative inputs: real training images through the same preprocessing (uint8 (N, 3, 256, 256) is
normalised here with the shared :data:`~ladeda_lib.geometry.INPUT_GEOMETRY`). Introduced in notebook 08.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ladeda_lib.contract import INPUT_NAME, read_sidecar, write_sidecar
from ladeda_lib.data.images import normalised_images
from ladeda_lib.export.errors import ExportError
from ladeda_lib.export.onnx_export import check_writable_folder, topk_k_as_constant_nodes
from ladeda_lib.geometry import INPUT_GEOMETRY

#: Formats we produce, in the order of the verification table.
QUANTIZATIONS: tuple[str, ...] = ("float32", "float16", "dynamic_range", "int8")
#: What each format means.
DESCRIPTIONS = {
    "float32": "float32 weights and activations (reference)",
    "float16": "float16 weights, float32 compute",
    "dynamic_range": "int8 weights (tensors ≥ 1024 weights), float activations quantized on the fly",
    "int8": "full integer: int8 weights, activations, input and output (calibrated)",
}
#: The file onnx2tf writes for each format (after its ``<stem>``).
_ONNX2TF_SUFFIX = {
    "float32": "_float32.tflite",
    "float16": "_float16.tflite",
    "dynamic_range": "_dynamic_range_quant.tflite",
    "int8": "_full_integer_quant.tflite",
}
#: The sample file onnx2tf would otherwise download (it looks in the current folder first).
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _sample_file_data(representative: np.ndarray | None) -> np.ndarray:
    """20 NHWC 128×128 images in [0, 1] for onnx2tf's own sanity check (never used for the int8 ranges)."""
    if representative is None:
        return np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)
    images = torch.from_numpy(representative[:20])
    images = INPUT_GEOMETRY.denormalize(images).clamp(0, 1)
    images = torch.nn.functional.interpolate(images, size=(128, 128), mode="bilinear", antialias=True)
    if images.shape[0] < 20:
        images = images.repeat((20 + images.shape[0] - 1) // images.shape[0], 1, 1, 1)[:20]
    return images.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


@contextlib.contextmanager
def _quiet(log_path: Path) -> Iterator[None]:
    """Send everything written to file descriptors 1 and 2 (Python and C++ alike) to ``log_path``."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "wb") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _log_tail(log_path: Path, lines: int = 25) -> str:
    try:
        text = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def convert_to_tflite(
    onnx_path: str | Path,
    output_dir: str | Path,
    quantizations: Sequence[str] = QUANTIZATIONS,
    representative: torch.Tensor | np.ndarray | None = None,
    nhwc: bool = False,
    stem: str | None = None,
    quiet: bool = True,
) -> dict[str, Path]:
    """Convert an ONNX detector to TFLite files, one per requested format.

    Args:
        onnx_path: the ``.onnx`` file (input ``input`` (1, 3, S, S)); it is copied, never modified.
        output_dir: folder for the results, created if needed.
        quantizations: any of ``"float32"``, ``"float16"``, ``"dynamic_range"``, ``"int8"``.
        representative: representative images (N, 3, S, S), uint8 (normalised here) or already-normalised
            float, from which the int8 file takes its activation ranges; required for ``"int8"``, also used for
            onnx2tf's internal sanity check.
        nhwc: give the TFLite files TFLite's native (1, S, S, 3) input instead of (1, 3, S, S).
        stem: file-name stem; files are ``<stem>_<format>.tflite`` (default: the ONNX file's stem).
        quiet: hide onnx2tf's and TensorFlow's console output (shown on failure).

    Returns:
        ``{format: path}`` in the order of ``quantizations``; each file gets the ONNX file's sidecar
        (``<file>.ladeda.json``: architecture, geometry, decision calibration), with its own ``format``.

    Raises:
        ExportError: unknown format, int8 without representative images, images of the wrong shape, failed
            conversion.
    Introduced in notebook 08.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    unknown = [q for q in quantizations if q not in QUANTIZATIONS]
    if unknown or not quantizations:
        raise ExportError(f"unknown quantization {unknown or quantizations}; choose from {', '.join(QUANTIZATIONS)}")
    output_dir = check_writable_folder(output_dir)
    stem = stem or onnx_path.stem

    import onnx

    model = onnx.load(str(onnx_path))
    record = read_sidecar(onnx_path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    input_name = model.graph.input[0].name
    calib = None if representative is None else normalised_images(representative)
    if calib is not None and (len(dims) != 4 or list(calib.shape[1:]) != dims[1:]):
        raise ExportError(
            f"representative images have shape {tuple(calib.shape[1:])} per image, but {onnx_path.name} expects "
            f"{tuple(dims[1:])} (input {input_name!r})"
        )
    if "int8" in quantizations and calib is None:
        raise ExportError(
            "full int8 quantization needs representative images (real training images through the "
            "same preprocessing, about 100); pass representative=uint8 tensor (N, 3, 256, 256)"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory(prefix="ladeda_onnx2tf_") as tmp:
        work = Path(tmp)
        work_onnx = work / "model.onnx"
        topk_k_as_constant_nodes(model)
        onnx.save(model, str(work_onnx))  # onnx2tf rewrites this copy, never the user's file
        np.save(work / ONNX2TF_SAMPLE_FILE, _sample_file_data(calib))
        kwargs: dict[str, object] = {}
        if calib is not None:
            data = calib.transpose(0, 2, 3, 1) if nhwc else calib
            np.save(work / "calibration.npy", np.ascontiguousarray(data, dtype=np.float32))
            zeros, ones = np.zeros((1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1), np.float32)
            # already normalised: onnx2tf computes (x - mean) / std with mean 0, std 1
            kwargs["custom_input_op_name_np_data_path"] = [[input_name, str(work / "calibration.npy"), zeros, ones]]
        if not nhwc:
            kwargs["keep_ncw_or_nchw_or_ncdhw_input_names"] = [input_name]
        log_path = work / "onnx2tf.log"
        out = work / "saved_model"
        quiet_ctx = _quiet(log_path) if quiet else contextlib.nullcontext()
        try:
            with contextlib.chdir(work), quiet_ctx:
                import onnx2tf

                onnx2tf.convert(
                    input_onnx_file_path=str(work_onnx),
                    output_folder_path=str(out),
                    output_dynamic_range_quantized_tflite="dynamic_range" in quantizations,
                    output_integer_quantized_tflite="int8" in quantizations,
                    not_use_onnxsim=True,
                    non_verbose=quiet,
                    verbosity="error" if quiet else "info",
                    **kwargs,
                )
        except (Exception, SystemExit) as err:
            raise ExportError(f"onnx2tf could not convert {onnx_path}: {err!r}\n{_log_tail(log_path)}") from err
        results: dict[str, Path] = {}
        for q in quantizations:
            produced = out / f"model{_ONNX2TF_SUFFIX[q]}"
            if not produced.is_file():
                raise ExportError(f"onnx2tf did not produce the {q} file for {onnx_path}:\n{_log_tail(log_path)}")
            target = output_dir / f"{stem}_{q}.tflite"
            shutil.copyfile(produced, target)
            if record is not None:  # the file describes itself as its ONNX source does
                write_sidecar(target, {**record, "format": q})
            results[q] = target
    return results


__all__ = ["DESCRIPTIONS", "INPUT_NAME", "ONNX2TF_SAMPLE_FILE", "QUANTIZATIONS", "convert_to_tflite"]
