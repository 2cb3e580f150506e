"""One way to run a detector in every format.

Every model a user may hold — a :class:`~ladeda_lib.models.PatchDetector`, one of our checkpoints, a published
state_dict, an ``.onnx`` file (onnxruntime) or a ``.tflite`` file (LiteRT) — becomes a :class:`Predictor`::

    predictor = load_predictor("weights/export/student.tflite")
    logit, patches = predictor(x)   # (B, 3, 256, 256) uint8 or normalised → (B, 1), (B, 1, h, w) or None

* :func:`load_predictor` chooses the backend by file suffix (case-insensitive) and checks the file once.
* Every backend gets the thread count of :func:`~ladeda_lib.timing.resolve_threads`.
* PyTorch models run as :func:`~ladeda_lib.graphs.fused.optimize_for_inference`'s exact copy.
* Exported files describe themselves: their sidecar (:mod:`ladeda_lib.contract`) gives the architecture, the
  patch geometry (:attr:`Predictor.geometry`) and the decision calibration baked into the graph.
* A model that carries a :class:`~ladeda_lib.contract.DecisionCalibration` gives calibrated logits.

Introduced in notebooks 06 and 08.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.contract import (
    LOGIT_NAME,
    PATCH_NAME,
    PIXEL_INPUT_NAME,
    DecisionCalibration,
    ModelFileError,
    model_kind,
    read_sidecar,
    sidecar_geometry,
)
from ladeda_lib.data.images import normalised_images, normalize_uint8
from ladeda_lib.geometry import PatchGeometry
from ladeda_lib.graphs.fused import optimize_for_inference
from ladeda_lib.graphs.pixel_input import normalised_to_pixels
from ladeda_lib.models import PatchDetector, TopKPool
from ladeda_lib.models.pooling import KSpec
from ladeda_lib.timing import measure_latency_ms, resolve_threads


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


def as_batch(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images (B, 3, H, W) or one (3, H, W), numpy or torch → numpy (B, 3, H, W): uint8 pixels stay uint8,
    anything else becomes float32 (normalised images)."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1] != 3:
        raise ModelFileError(f"expected images (B, 3, H, W), uint8 or normalised float, got shape {array.shape}")
    return array if array.dtype == np.uint8 else array.astype(np.float32, copy=False)


class Predictor:
    """The interface: ``predictor(x) -> (logit (B, 1), patch_logits (B, 1, h, w) or None)``, float32 numpy.

    ``x``: uint8 images (B, 3, H, W) — the resized pixels, which every predictor turns into what its model takes
    (normalised floats, or ``pixel − 128`` for a pixel-input int8 file) — or images already normalised (float);
    numpy or torch; one (3, H, W) image is accepted. Logits are *calibrated* when :attr:`calibration` (a
    :class:`~ladeda_lib.contract.DecisionCalibration`) is set — for exported files the calibration is already
    inside the graph and is only recorded. :attr:`geometry` is the patch geometry of the map (for exported files:
    what their sidecar says; None without one). Works behind notebook 06.
    """

    backend: str = ""
    path: Path | None = None
    calibration: DecisionCalibration | None = None
    geometry: PatchGeometry | None = None
    threads: int = 1

    @property
    def has_patches(self) -> bool:
        return True

    def __call__(self, x: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover
        raise NotImplementedError

    def latency_ms(self, runs: int = 30, image_size: int = 256) -> float:
        """Batch-1 latency on a fixed random input (:func:`measure_latency_ms`)."""
        x = np.random.default_rng(0).integers(0, 256, (1, 3, image_size, image_size), dtype=np.uint8)
        return measure_latency_ms(lambda: self(x), runs)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "path": None if self.path is None else str(self.path)}


class TorchPredictor(Predictor):
    """A PatchDetector run for inference. ``optimize=True``: :func:`~ladeda_lib.graphs.fused.optimize_for_inference`'s
    copy (fused stem / folded BN, channels-last) under ``torch.inference_mode``; ``False``: the model eager.
    ``pooling`` replaces the model's top-K for the image logit (a fraction, a count or ``"all"``)."""

    def __init__(
        self,
        model: PatchDetector,
        device: str | torch.device = "cpu",
        optimize: bool = True,
        threads: int | None = None,
        calibration: DecisionCalibration | None = None,
        path: Path | None = None,
        pooling: KSpec = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.optimize = optimize
        self.net = optimize_for_inference(self.model) if optimize else self.model
        self.pool = self.model.pool if pooling is None else TopKPool(pooling)
        self.geometry = self.model.geometry()
        self.threads = resolve_threads(threads)
        self.calibration = calibration
        self.path = path
        self.backend = "pytorch" if optimize else "pytorch-eager"

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised float32 → (B, 1, h, w) raw patch logits (on the predictor's device)."""
        x = torch.as_tensor(x).to(self.device, torch.float32)
        if self.optimize:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.net.patch_logits(x).contiguous()

    def __call__(self, x: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(as_batch(x)) if not isinstance(x, torch.Tensor) or x.dim() != 4 else x
        if x.dtype == torch.uint8:
            x = normalize_uint8(x)
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            patches = self.patch_logits(x)
            with torch.inference_mode():
                logits = self.pool(patches)
        finally:
            torch.set_num_threads(old)
        if self.calibration is not None:
            logits, patches = self.calibration.apply(logits), self.calibration.apply(patches)
        return logits.float().cpu().numpy(), patches.float().cpu().numpy()


def input_layout(shape: tuple[int, ...]) -> str:
    """ "NCHW" or "NHWC" for a 4-D image input shape."""
    if len(shape) != 4:
        raise ModelFileError(f"expected a 4-D image input, the file has shape {shape}")
    if shape[1] == 3 and shape[3] != 3:
        return "NCHW"
    if shape[3] == 3:
        return "NHWC"
    raise ModelFileError(f"cannot tell the channel axis of input shape {shape}; expected 3 channels")


def classify_outputs(outputs: list[TensorInfo]) -> tuple[int, int | None]:
    """Indices of the logit and (optional) patch-map outputs, by name first and by shape otherwise
    (full-int8 TFLite files may rename and reorder their outputs)."""
    names = [o.name for o in outputs]
    logit = names.index(LOGIT_NAME) if LOGIT_NAME in names else None
    patch = names.index(PATCH_NAME) if PATCH_NAME in names else None
    if logit is None:
        two_d = [i for i, o in enumerate(outputs) if len(o.shape) == 2]
        if len(two_d) != 1:
            raise ModelFileError(f"cannot find the image-logit output among {[(o.name, o.shape) for o in outputs]}")
        logit = two_d[0]
    if patch is None:
        four_d = [i for i, o in enumerate(outputs) if len(o.shape) == 4]
        patch = four_d[0] if len(four_d) == 1 else None
    return logit, patch


def patch_to_nchw(patches: np.ndarray) -> np.ndarray:
    """(B, 1, h, w) stays; (B, h, w, 1) (NHWC, h > 1) becomes (B, 1, h, w)."""
    if patches.shape[1] != 1 and patches.shape[-1] == 1:
        return patches.transpose(0, 3, 1, 2)
    return patches


class ExportedPredictor(Predictor):
    """Shared logic of exported files: per-image loop for a fixed batch of 1, layout, output selection,
    the sidecar record (architecture, geometry; the calibration baked into the graph at export) and an optional
    ``pooling`` of the patch map that replaces the file's own top-K."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    kind = ""  # the format's name in messages

    def __init__(self, path: str | Path, threads: int | None = None, pooling: KSpec = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.kind} file not found: {self.path}")
        self.threads = resolve_threads(threads)
        self.inputs, self.outputs = self._open()
        self._setup(pooling)

    def _open(self) -> tuple[list[TensorInfo], list[TensorInfo]]:  # pragma: no cover - per backend
        """Load the file; its (inputs, outputs)."""
        raise NotImplementedError

    def _setup(self, pooling: KSpec = None) -> None:
        if len(self.inputs) != 1:
            raise ModelFileError(f"{self.path}: expected one image input, found {[i.name for i in self.inputs]}")
        self.input = self.inputs[0]
        self.layout = input_layout(self.input.shape)
        self.image_size = self.input.shape[2] if self.layout == "NCHW" else self.input.shape[1]
        self.fixed_batch = self.input.shape[0] if self.input.shape[0] > 0 else None
        self._logit_index, self._patch_index = classify_outputs(self.outputs)
        self.record = read_sidecar(self.path) or {}
        self.calibration = DecisionCalibration.from_dict(self.record.get("calibration"))
        self.geometry = sidecar_geometry(self.record)
        # the full-int8 student takes pixel − 128 (LiteRT may prefix/suffix the name: "serving_default_pixels:0")
        self.pixel_input = PIXEL_INPUT_NAME in self.input.name.lower()
        self.pool = None
        if pooling is not None:
            if self._patch_index is None:
                raise ModelFileError(
                    f"pooling={pooling!r} needs the patch map, but {self.path} has no patch_logits output; "
                    "re-export it with patches (ladeda export --with-patches) or drop pooling"
                )
            self.pool = TopKPool(pooling)

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
        """(B, 3, H, W) uint8 or normalised float → (logit (B, 1), patch_logits (B, 1, h, w) or None).

        A pixel-input file (input named :data:`~ladeda_lib.contract.PIXEL_INPUT_NAME`) is fed ``pixel − 128``: of
        uint8 images directly, of normalised ones through :func:`~ladeda_lib.graphs.pixel_input.normalised_to_pixels`.
        """
        batch = as_batch(x)
        if batch.shape[2:] != (self.image_size, self.image_size):
            raise ModelFileError(
                f"{self.path.name} expects {self.image_size}×{self.image_size} images, got {batch.shape[2]}×"
                f"{batch.shape[3]}; resize with ladeda_lib.data.preprocess"
            )
        if batch.dtype == np.uint8:
            batch = batch.astype(np.float32) - 128.0 if self.pixel_input else normalised_images(batch)
        elif self.pixel_input:
            batch = normalised_to_pixels(batch)
        if self.layout == "NHWC":
            batch = batch.transpose(0, 2, 3, 1)
        step = self.fixed_batch or batch.shape[0]
        logits, patches = [], []
        for start in range(0, batch.shape[0], step):
            chunk = np.ascontiguousarray(batch[start : start + step])
            if self.fixed_batch and chunk.shape[0] != step:
                raise ModelFileError(f"{self.path.name} has a fixed batch of {step}; got a final chunk of {len(chunk)}")
            results = self._run(chunk)
            logits.append(results[self._logit_index].reshape(chunk.shape[0], 1))
            if self._patch_index is not None:
                patches.append(patch_to_nchw(results[self._patch_index]))
        logit = np.concatenate(logits).astype(np.float32)
        patch = np.concatenate(patches).astype(np.float32) if patches else None
        if self.pool is not None and patch is not None:
            logit = self.pool(torch.from_numpy(patch)).numpy()
        return logit, patch

    def describe(self) -> dict[str, Any]:
        """Inputs, outputs and layout, for verification reports."""
        return {
            "backend": self.backend,
            "path": str(self.path),
            "layout": self.layout,
            "inputs": [i.as_dict() for i in self.inputs],
            "outputs": [o.as_dict() for o in self.outputs],
            "has_patches": self.has_patches,
        }


class OnnxPredictor(ExportedPredictor):
    """An ``.onnx`` file run by onnxruntime on the CPU with :func:`resolve_threads` intra-op threads."""

    backend = "onnxruntime"

    kind = "ONNX"

    def _open(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{self.path} is not a loadable ONNX model: {err}") from err

        def info(arg: Any) -> TensorInfo:
            dtype = arg.type.removeprefix("tensor(").removesuffix(")")
            dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
            shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
            return TensorInfo(arg.name, shape, dtype)

        return [info(i) for i in self.session.get_inputs()], [info(o) for o in self.session.get_outputs()]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input.name: batch})


class TFLitePredictor(ExportedPredictor):
    """A ``.tflite`` file run by the LiteRT interpreter with :func:`resolve_threads` threads.

    int8/uint8 inputs are quantized and outputs dequantized with the file's own scale and zero point
    (``real = (q − zero_point) · scale``)."""

    backend = "litert"

    kind = "TFLite"

    def _open(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelFileError(f"{self.path} is not a loadable TFLite model: {err}") from err

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
        return [info(d) for d in self._input_details], [info(d) for d in self._output_details]

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


def load_predictor(
    model: PatchDetector | str | os.PathLike,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    optimize: bool = True,
    pooling: KSpec = None,
) -> Predictor:
    """The :class:`Predictor` for a model or a model file, chosen by suffix (case-insensitive).

    ``.pt/.pth/.ckpt/.bin``: our checkpoint or a published state_dict (its calibration record, if any, is
    applied); ``.onnx``: onnxruntime; ``.tflite``: LiteRT. ``threads``: see :func:`~ladeda_lib.timing.resolve_threads`;
    ``pooling``: a top-K that replaces the model's own for the image logit (exported files: needs their patch map).
    Introduced in notebook 06.
    """
    if isinstance(model, PatchDetector):
        return TorchPredictor(model, device, optimize, threads, pooling=pooling)
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    kind = model_kind(path)
    if kind == "onnx":
        return OnnxPredictor(path, threads, pooling)
    if kind == "tflite":
        return TFLitePredictor(path, threads, pooling)
    from ladeda_lib.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    calibration = DecisionCalibration.from_dict(ckpt.metadata.get("calibration"))
    return TorchPredictor(ckpt.model, device, optimize, threads, calibration, path, pooling)
