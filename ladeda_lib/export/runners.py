"""Run exported files like a PyTorch model: ``runner(x) -> (logit, patch_logits or None)``.

:class:`OnnxModel` (onnxruntime) and :class:`TFLiteModel` (the LiteRT interpreter, ``ai_edge_litert``)
share one call convention, whatever the file looks like inside:

* input: float32 numpy array or torch tensor (B, 3, H, W), normalised like the PyTorch model's input
  (a single (3, H, W) image is accepted too);
* a file with a fixed batch of 1 is run once per image;
* NHWC files get the input transposed; int8/uint8 inputs and outputs are quantized and dequantized
  with the file's own scale and zero point;
* outputs are recognised by name (``logit``, ``patch_logits``) or, when a converter renamed them, by
  shape — a 2-D output is the image logit, a 4-D one the patch map (NHWC maps are transposed back);
* returns ``(logit float32 (B, 1), patch_logits float32 (B, 1, h, w) or None)``.

Introduced in notebook 07; ``ladeda_lib.inference`` uses these for its ``.onnx`` and ``.tflite`` backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.export.errors import ExportError
from ladeda_lib.export.onnx_export import LOGIT_NAME, PATCH_NAME


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of an exported file (quantization: ``scale`` and ``zero_point``, else 0)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


def _as_batch(x: torch.Tensor | np.ndarray) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1] != 3:
        raise ExportError(f"expected normalised images (B, 3, H, W), got shape {array.shape}")
    if array.dtype == np.uint8:
        raise ExportError("runners take normalised float images; normalise uint8 images first (normalize_uint8)")
    return array.astype(np.float32, copy=False)


def _input_layout(shape: tuple[int, ...]) -> str:
    """ "NCHW" or "NHWC" for a 4-D image input shape."""
    if len(shape) != 4:
        raise ExportError(f"expected a 4-D image input, the file has shape {shape}")
    if shape[1] == 3 and shape[3] != 3:
        return "NCHW"
    if shape[3] == 3:
        return "NHWC"
    raise ExportError(f"cannot tell the channel axis of input shape {shape}; expected 3 channels")


def _classify_outputs(outputs: list[TensorInfo]) -> tuple[int, int | None]:
    """Indices of the logit and (optional) patch-map outputs, by name first and by shape otherwise."""
    names = [o.name for o in outputs]
    logit = names.index(LOGIT_NAME) if LOGIT_NAME in names else None
    patch = names.index(PATCH_NAME) if PATCH_NAME in names else None
    if logit is None:
        two_d = [i for i, o in enumerate(outputs) if len(o.shape) == 2]
        if len(two_d) != 1:
            raise ExportError(f"cannot find the image-logit output among {[(o.name, o.shape) for o in outputs]}")
        logit = two_d[0]
    if patch is None:
        four_d = [i for i, o in enumerate(outputs) if len(o.shape) == 4]
        patch = four_d[0] if len(four_d) == 1 else None
    return logit, patch


def _patch_to_nchw(patches: np.ndarray) -> np.ndarray:
    """(B, 1, h, w) stays; (B, h, w, 1) (NHWC, h > 1) becomes (B, 1, h, w)."""
    if patches.shape[1] != 1 and patches.shape[-1] == 1:
        return patches.transpose(0, 3, 1, 2)
    return patches


class _Runner:
    """Shared logic: per-image loop for fixed batch 1, layout, output selection."""

    path: Path
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def _setup(self) -> None:
        if len(self.inputs) != 1:
            raise ExportError(f"{self.path}: expected one image input, found {[i.name for i in self.inputs]}")
        self.input = self.inputs[0]
        self.layout = _input_layout(self.input.shape)
        self.image_size = self.input.shape[2] if self.layout == "NCHW" else self.input.shape[1]
        self.fixed_batch = self.input.shape[0] if self.input.shape[0] > 0 else None
        self._logit_index, self._patch_index = _classify_outputs(self.outputs)

    @property
    def output_names(self) -> list[str]:
        """Names of the file's outputs, in the file's order."""
        return [o.name for o in self.outputs]

    @property
    def has_patches(self) -> bool:
        """Whether the file exports the patch-logit map."""
        return self._patch_index is not None

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - per backend
        raise NotImplementedError

    def __call__(self, x: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, 3, H, W) normalised float → (logit (B, 1), patch_logits (B, 1, h, w) or None)."""
        batch = _as_batch(x)
        if batch.shape[2:] != (self.image_size, self.image_size):
            raise ExportError(
                f"{self.path.name} expects {self.image_size}×{self.image_size} images, got {batch.shape[2]}×"
                f"{batch.shape[3]}; resize with ladeda_lib.data.preprocess"
            )
        if self.layout == "NHWC":
            batch = batch.transpose(0, 2, 3, 1)
        step = self.fixed_batch or batch.shape[0]
        logits, patches = [], []
        for start in range(0, batch.shape[0], step):
            chunk = np.ascontiguousarray(batch[start : start + step])
            if self.fixed_batch and chunk.shape[0] != step:
                raise ExportError(f"{self.path.name} has a fixed batch of {step}; got a final chunk of {len(chunk)}")
            results = self._run(chunk)
            logits.append(results[self._logit_index].reshape(chunk.shape[0], 1))
            if self._patch_index is not None:
                patches.append(_patch_to_nchw(results[self._patch_index]))
        logit = np.concatenate(logits).astype(np.float32)
        return logit, (np.concatenate(patches).astype(np.float32) if patches else None)

    def describe(self) -> dict[str, Any]:
        """Inputs, outputs and layout, for verification reports."""
        return {
            "path": str(self.path),
            "layout": self.layout,
            "inputs": [i.as_dict() for i in self.inputs],
            "outputs": [o.as_dict() for o in self.outputs],
            "has_patches": self.has_patches,
        }


class OnnxModel(_Runner):
    """An ``.onnx`` file run by onnxruntime on CPU. ``threads``: intra-op threads (None = default)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ExportError(f"{self.path} is not a loadable ONNX model: {err}") from err

        def info(arg: Any) -> TensorInfo:
            dtype = arg.type.removeprefix("tensor(").removesuffix(")")
            dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
            shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
            return TensorInfo(arg.name, shape, dtype)

        self.inputs = [info(i) for i in self.session.get_inputs()]
        self.outputs = [info(o) for o in self.session.get_outputs()]
        self._setup()

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input.name: batch})


class TFLiteModel(_Runner):
    """A ``.tflite`` file run by the LiteRT interpreter. ``threads``: interpreter threads (None = default)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite file not found: {self.path}")
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ExportError(f"{self.path} is not a loadable TFLite model: {err}") from err

        def info(detail: dict[str, Any]) -> TensorInfo:
            scale, zero_point = detail.get("quantization", (0.0, 0))
            return TensorInfo(
                detail["name"],
                tuple(int(d) for d in detail["shape"]),
                np.dtype(detail["dtype"]).name,
                float(scale),
                int(zero_point),
            )

        self._input_details = self.interpreter.get_input_details()
        self._output_details = self.interpreter.get_output_details()
        self.inputs = [info(d) for d in self._input_details]
        self.outputs = [info(d) for d in self._output_details]
        self._setup()

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        detail = self._input_details[0]
        if self.input.quantized:
            limits = np.iinfo(np.dtype(self.input.dtype))
            q = np.round(batch / self.input.scale + self.input.zero_point)
            batch = np.clip(q, limits.min, limits.max).astype(self.input.dtype)
        self.interpreter.set_tensor(detail["index"], batch)
        self.interpreter.invoke()
        results = []
        for info, out in zip(self.outputs, self._output_details, strict=True):
            value = self.interpreter.get_tensor(out["index"])
            if info.quantized:
                value = (value.astype(np.float32) - info.zero_point) * info.scale
            results.append(value.astype(np.float32))
        return results


def load_runner(path: str | Path, threads: int | None = None) -> OnnxModel | TFLiteModel:
    """An :class:`OnnxModel` or :class:`TFLiteModel` for ``path``, chosen by its suffix."""
    path = Path(path)
    if path.suffix == ".onnx":
        return OnnxModel(path, threads)
    if path.suffix == ".tflite":
        return TFLiteModel(path, threads)
    raise ExportError(f"{path}: unknown model file type {path.suffix!r}; expected .onnx or .tflite")
