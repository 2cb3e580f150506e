"""One way to run a detector in every format, one way to time it, one thread policy.

Every model a user may hold — a :class:`~ladeda_lib.models.PatchDetector`, one of our checkpoints, a published
state_dict, an ``.onnx`` file (onnxruntime) or a ``.tflite`` file (LiteRT) — becomes a :class:`Predictor`::

    predictor = load_predictor("weights/export/student.tflite")
    logit, patches = predictor(x)   # (B, 3, 256, 256) normalised → (B, 1), (B, 1, h, w) or None

* :func:`load_predictor` chooses the backend by file suffix (case-insensitive).
* :func:`resolve_threads` is the thread policy: ``None`` means PyTorch's current thread count, and every
  backend (PyTorch, onnxruntime, LiteRT) gets the same number.
* :func:`measure_latency_ms` is the latency rule used by verification, the pipeline and the benchmarks:
  batch-1 calls in consecutive blocks, the median of the quietest block.
* :func:`optimize_for_inference` is the optimised PyTorch path: BatchNorm folded with
  :func:`torch.nn.utils.fusion.fuse_conv_bn_eval` and, for Tiny-LaDeDa with a fixed filter, the filter,
  ``conv1``, ``conv2`` and ``bn1`` composed into one 5×5 convolution (:func:`fuse_student_stem`). The float
  export uses the same composition, laid out for LiteRT's kernels (:mod:`ladeda_lib.export.column_pairs`; in
  PyTorch that layout measured only about 7 % faster, so this path keeps the plain fused stem).
* :class:`Calibration` is a decision offset and temperature fitted on labelled images (``ladeda calibrate``):
  ``calibrated = (logit − offset) / temperature``. Predictors apply it when the model carries one and say
  so otherwise.

Introduced in notebooks 06 and 07.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ladeda_lib.geometry import INPUT_GEOMETRY, PatchGeometry
from ladeda_lib.models import LaDeDa, PatchDetector, TinyLaDeDa
from ladeda_lib.models.preprocessing import FixedFilter, Identity

#: Names of an exported graph's input and outputs — the contract every runner and converter relies on.
INPUT_NAME = "input"
LOGIT_NAME = "logit"
PATCH_NAME = "patch_logits"
#: Input name of a *pixel-input* graph (the full-int8 student, :mod:`ladeda_lib.export.int8`): it takes
#: ``pixel − 128`` (0..255 grey levels shifted into int8's [-128, 127]) instead of normalised floats, so its
#: int8 input step is exactly one grey level. Predictors recognise such a file by this input name.
PIXEL_INPUT_NAME = "pixels"
#: Suffixes of the formats :func:`load_predictor` knows (compared lower-case).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
EXPORT_SUFFIXES = (".onnx", ".tflite")
#: The record written next to each exported file: what it is and how it is calibrated.
SIDECAR_SUFFIX = ".ladeda.json"


class ModelFileError(ValueError):
    """A model file that cannot be run as given (wrong type, shape, layout); the message says what to do."""


# ----------------------------------------------------------------------------------------------------
# Thread policy and device
# ----------------------------------------------------------------------------------------------------
def resolve_threads(threads: int | None = None) -> int:
    """The thread count every backend uses: ``threads`` if given, else PyTorch's current count
    (``torch.set_num_threads``, ``OMP_NUM_THREADS``). LiteRT's own default uses fewer threads than the
    machine has, so it is always given this number explicitly."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return int(threads or torch.get_num_threads())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda if available, else mps, else cpu; other names are checked and returned."""
    name = str(device)
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use cpu or auto")
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise ValueError(f"--device {name}: Apple MPS is not available on this machine; use cpu or auto")
    if dev.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"--device {name}: expected one of auto, cpu, cuda, mps")
    return dev


# ----------------------------------------------------------------------------------------------------
# Latency: one rule everywhere
# ----------------------------------------------------------------------------------------------------
def latency_samples_ms(fn: Callable[[], Any], runs: int = 30, warmup: int = 3) -> list[float]:
    """``runs`` timed calls of ``fn()`` after ``warmup`` untimed ones, in milliseconds, in call order."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def quietest_block_median(times_ms: list[float], blocks: int = 3) -> float:
    """Median of the quietest of ``blocks`` consecutive blocks of ``times_ms``."""
    size = max(1, -(-len(times_ms) // max(1, blocks)))
    return float(min(np.median(times_ms[i : i + size]) for i in range(0, len(times_ms), size)))


def measure_latency_ms(fn: Callable[[], Any], runs: int = 30, warmup: int = 3, blocks: int = 3) -> float:
    """Batch-1 latency of ``fn()`` in milliseconds: the median of the quietest of ``blocks`` blocks of calls.

    On a shared machine a burst of outside load can slow a whole stretch of calls (measured: onnxruntime 7 ms
    instead of 2.3 ms in one of three identical runs); the quietest block's median is the closest to what the
    backend itself costs, and equals the plain median when nothing interferes. Works behind notebook 07.
    """
    return quietest_block_median(latency_samples_ms(fn, runs, warmup), blocks)


# ----------------------------------------------------------------------------------------------------
# Calibration: a decision offset and a temperature
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """``calibrated logit = (logit − offset) / temperature`` (``temperature > 0``; the ranking is unchanged).

    ``fitted_on`` records the data (root, split, image count, class counts, metrics before/after).
    Works behind notebook 06.
    """

    offset: float = 0.0
    temperature: float = 1.0
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature) and math.isfinite(self.offset)):
            raise ValueError(f"calibration needs a finite offset and a positive temperature, got {self}")

    def apply(self, logits: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Any shape of raw logits (image or patch) → calibrated logits, same shape and type."""
        return (logits - self.offset) / self.temperature

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any] | None) -> Calibration | None:
        if not record:
            return None
        return cls(float(record["offset"]), float(record["temperature"]), dict(record.get("fitted_on", {})))


NO_CALIBRATION_NOTE = (
    "this model carries no calibration record: its probabilities are the raw sigmoid of its logits, and a "
    "published checkpoint's threshold may be meaningless on your images (the ForenSynth student calls every "
    "photograph fake). Fit one with `ladeda calibrate --model M --data D`."
)


# ----------------------------------------------------------------------------------------------------
# The optimised PyTorch network: BatchNorm folding and the fused student stem
# ----------------------------------------------------------------------------------------------------
def fold_batchnorm(model: PatchDetector, check: bool = True) -> PatchDetector:
    """An inference copy of ``model`` with every BatchNorm folded into the convolution before it.

    A BatchNorm in eval mode is an affine map per channel, ``y = γ (x − μ) / √(σ² + ε) + β``; after a
    convolution it merges into the convolution's weights and bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`).
    A BatchNorm is folded into a ``Conv2d`` registered *immediately before it* in the same parent module
    (``conv2 → bn1`` in the stems, ``convN → bnN`` in the blocks, ``downsample.0 → .1``); the BN becomes
    ``nn.Identity``. The original model is not modified.

    Args:
        model: a teacher or student (any mode; the copy is put in eval mode and frozen).
        check: compare the copy with the original on a small random input and raise ``RuntimeError`` if
            they disagree, relative to the outputs' magnitude.

    Returns:
        the folded copy: same ``forward``/``patch_logits`` outputs (B, 3, H, W) → (B, 1) / (B, 1, h, w)
        within float32 rounding, no BatchNorm left. Works behind notebook 06.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        names = list(parent._modules)
        for prev, name in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[prev], parent._modules[name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                parent._modules[prev] = fuse_conv_bn_eval(conv, bn)
                parent._modules[name] = nn.Identity()
    folded.freeze()
    if check:
        _check_same(model, folded, "folding BatchNorm")
    return folded


def _check_same(model: PatchDetector, other: nn.Module, what: str) -> None:
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    probe = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
    with torch.inference_mode():
        want, got = model.patch_logits(probe), other.patch_logits(probe)
    model.train(was_training)
    scale = float(want.abs().max().clamp_min(1.0))
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-4 * scale):
        raise RuntimeError(
            f"{what} changed the outputs of {type(model).__name__} (max difference "
            f"{float((want - got).abs().max()):.3g} on logits up to {scale:.3g}); run the model unoptimised."
        )


def has_fusable_stem(model: nn.Module) -> bool:
    """Whether ``model`` is a Tiny-LaDeDa whose preprocessing is a convolution (a fixed filter or raw input), so
    that its filter, ``conv1``, ``conv2`` and ``bn1`` compose into one convolution (:func:`stem_kernel`)."""
    return isinstance(model, TinyLaDeDa) and isinstance(model.preprocess, FixedFilter | Identity)


def stem_kernel(model: TinyLaDeDa, with_filter: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fixed filter · ``conv1`` · ``conv2`` · ``bn1`` of a Tiny-LaDeDa as one convolution.

    All four are linear with no non-linearity between them, so they compose into one convolution: with a
    fixed 3×3 filter ("same" padding) a 5×5 kernel over the input padded by 1; with ``"raw"`` (or
    ``with_filter=False``: ``conv1`` · ``conv2`` · ``bn1`` alone, applied after the filter) a 3×3 kernel without
    padding. Returns ``(weight (8, 3, k, k), bias (8,), padding)``, computed in float64.
    Works behind notebook 07.
    """
    if isinstance(model.preprocess, FixedFilter) and with_filter:
        pre, size, padding = model.preprocess.kernel.double(), 5, 1
    elif isinstance(model.preprocess, FixedFilter | Identity):
        pre, size, padding = None, 3, 0
    else:
        raise ValueError(f"the {model.preprocess.name} preprocessing is not a convolution; it cannot be fused")
    # the composite's response to a unit impulse at each input channel and position is its kernel
    basis = torch.eye(3 * size * size, dtype=torch.float64).reshape(-1, 3, size, size)
    with torch.no_grad():
        x = F.conv2d(basis, pre, groups=3) if pre is not None else basis
        x = F.conv2d(x, model.conv1.weight.double())
        x = F.conv2d(x, model.conv2.weight.double())  # (3·k·k, 8, 1, 1)
        bn = model.bn1
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = x[:, :, 0, 0].T.reshape(-1, 3, size, size) * scale[:, None, None, None]
        bias = bn.bias.double() - bn.running_mean.double() * scale
    return weight, bias, padding


class FusedTinyLaDeDa(PatchDetector):
    """Tiny-LaDeDa for inference: one fused stem convolution · ReLU · BN-folded ``layer1.0`` · ``fc``.

    Same outputs as the model it was built from (to about 1e-6 relative), (B, 3, H, W) → (B, 1, h, w) patch
    logits and (B, 1) image logits; the exported graph and the optimised PyTorch path both use it.
    Works behind notebook 07.
    """

    arch = "TinyLaDeDa"

    def __init__(self, model: TinyLaDeDa) -> None:
        super().__init__(model.pool.spec)
        weight, bias, padding = stem_kernel(model)
        self.stem = nn.Conv2d(3, weight.shape[0], weight.shape[-1], padding=padding, bias=True)
        with torch.no_grad():
            self.stem.weight.copy_(weight.float())
            self.stem.bias.copy_(bias.float())
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = fold_batchnorm(model, check=False).layer1
        self.fc = copy.deepcopy(model.fc)
        self._geometry = model.geometry()
        self._config = model.config()
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.relu(self.stem(x)))

    def geometry(self):  # the fused stem has the same geometry as the layers it replaces
        return self._geometry

    def config(self) -> dict[str, Any]:
        return dict(self._config)


def fuse_student_stem(model: TinyLaDeDa, check: bool = True) -> FusedTinyLaDeDa:
    """:class:`FusedTinyLaDeDa` of ``model``; with ``check`` compared with ``model`` on a random input."""
    fused = FusedTinyLaDeDa(model)
    if check:
        _check_same(model, fused, "fusing the stem")
    return fused


def optimize_for_inference(model: PatchDetector) -> PatchDetector:
    """The fastest exact PyTorch copy of ``model``: the fused stem for Tiny-LaDeDa with a fixed filter or raw
    input, BatchNorm folded otherwise; eval mode, frozen, channels-last. Works behind notebook 06."""
    if has_fusable_stem(model):
        net: PatchDetector = fuse_student_stem(model)
    else:
        net = fold_batchnorm(model)
    return net.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------------
# Geometry of exported files (they carry a patch map but no architecture)
# ----------------------------------------------------------------------------------------------------
@functools.cache
def _reference_geometries() -> tuple[tuple[str, PatchGeometry], ...]:
    # Geometry depends only on the layer layout, not on the width: a width-1 teacher is enough.
    return (("TinyLaDeDa", TinyLaDeDa().geometry()), ("LaDeDa", LaDeDa(width=1).geometry()))


def geometry_for_grid(grid: int, input_size: int = INPUT_GEOMETRY.image_size) -> PatchGeometry:
    """The patch geometry of the default student or teacher whose grid at ``input_size`` has side ``grid``.

    Used when a heatmap comes from an exported file, which does not record its architecture:
    126 → Tiny-LaDeDa (``right_diag``: RF 7, stride 2, offset −1), 31 → LaDeDa (RF 9, stride 8).
    A student exported with another preprocessing has the same grid but a different offset; pass its
    ``model.geometry()`` explicitly in that case. Works behind notebook 06.
    """
    for _, geometry in _reference_geometries():
        if geometry.grid_size(input_size) == grid:
            return geometry
    known = ", ".join(f"{name}: {g.grid_size(input_size)}" for name, g in _reference_geometries())
    raise ValueError(f"no known model gives a {grid}×{grid} patch grid at {input_size}×{input_size} ({known})")


# ----------------------------------------------------------------------------------------------------
# Predictors
# ----------------------------------------------------------------------------------------------------
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
    """Normalised float images (B, 3, H, W) or one (3, H, W) → float32 numpy (B, 3, H, W)."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1] != 3:
        raise ModelFileError(f"expected normalised images (B, 3, H, W), got shape {array.shape}")
    if array.dtype == np.uint8:
        raise ModelFileError("predictors take normalised float images; normalise uint8 images first")
    return array.astype(np.float32, copy=False)


class Predictor:
    """The interface: ``predictor(x) -> (logit (B, 1), patch_logits (B, 1, h, w) or None)``, float32 numpy.

    ``x``: normalised float images (B, 3, H, W) (numpy or torch; one (3, H, W) image is accepted).
    Logits are *calibrated* when :attr:`calibration` is set and ``calibrated=True`` (the default) — for
    exported files the calibration is already inside the graph and is only recorded. Works behind notebook 06.
    """

    backend: str = ""
    path: Path | None = None
    calibration: Calibration | None = None
    threads: int = 1

    @property
    def has_patches(self) -> bool:
        return True

    def __call__(self, x: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover
        raise NotImplementedError

    def latency_ms(self, runs: int = 30, image_size: int = 256) -> float:
        """Batch-1 latency on a fixed random input (:func:`measure_latency_ms`)."""
        x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size)).astype(np.float32)
        return measure_latency_ms(lambda: self(x), runs)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "path": None if self.path is None else str(self.path)}


class TorchPredictor(Predictor):
    """A PatchDetector run for inference. ``optimize=True``: :func:`optimize_for_inference`'s copy
    (fused stem / folded BN, channels-last) under ``torch.inference_mode``; ``False``: the model eager."""

    def __init__(
        self,
        model: PatchDetector,
        device: str | torch.device = "cpu",
        optimize: bool = True,
        threads: int | None = None,
        calibration: Calibration | None = None,
        path: Path | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.optimize = optimize
        self.net = optimize_for_inference(self.model) if optimize else self.model
        self.pool = self.model.pool
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


def _input_layout(shape: tuple[int, ...]) -> str:
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


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The ``<file>.ladeda.json`` record written by the export next to ``path``, or None."""
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return None
    return json.loads(sidecar.read_text())


def write_sidecar(path: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (architecture, pooling, calibration) to ``<file>.ladeda.json``; returns its path."""
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return sidecar


class ExportedPredictor(Predictor):
    """Shared logic of exported files: per-image loop for a fixed batch of 1, layout, output selection,
    the sidecar record (calibration baked into the graph at export)."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def _setup(self) -> None:
        if len(self.inputs) != 1:
            raise ModelFileError(f"{self.path}: expected one image input, found {[i.name for i in self.inputs]}")
        self.input = self.inputs[0]
        self.layout = _input_layout(self.input.shape)
        self.image_size = self.input.shape[2] if self.layout == "NCHW" else self.input.shape[1]
        self.fixed_batch = self.input.shape[0] if self.input.shape[0] > 0 else None
        self._logit_index, self._patch_index = classify_outputs(self.outputs)
        self.record = read_sidecar(self.path) or {}
        self.calibration = Calibration.from_dict(self.record.get("calibration"))
        # the full-int8 student takes pixel − 128 (LiteRT may prefix/suffix the name: "serving_default_pixels:0")
        self.pixel_input = PIXEL_INPUT_NAME in self.input.name.lower()

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
        """(B, 3, H, W) normalised float → (logit (B, 1), patch_logits (B, 1, h, w) or None).

        A pixel-input file (input named :data:`PIXEL_INPUT_NAME`) is fed :func:`normalised_to_pixels` of ``x``.
        """
        batch = as_batch(x)
        if batch.shape[2:] != (self.image_size, self.image_size):
            raise ModelFileError(
                f"{self.path.name} expects {self.image_size}×{self.image_size} images, got {batch.shape[2]}×"
                f"{batch.shape[3]}; resize with ladeda_lib.data.preprocess"
            )
        if self.pixel_input:
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
        return logit, (np.concatenate(patches).astype(np.float32) if patches else None)

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

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        self.threads = resolve_threads(threads)
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

        self.inputs = [info(i) for i in self.session.get_inputs()]
        self.outputs = [info(o) for o in self.session.get_outputs()]
        self._setup()

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input.name: batch})


class TFLitePredictor(ExportedPredictor):
    """A ``.tflite`` file run by the LiteRT interpreter with :func:`resolve_threads` threads.

    int8/uint8 inputs are quantized and outputs dequantized with the file's own scale and zero point
    (``real = (q − zero_point) · scale``)."""

    backend = "litert"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite file not found: {self.path}")
        self.threads = resolve_threads(threads)
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


def normalised_to_pixels(x: np.ndarray) -> np.ndarray:
    """Normalised float images (B, 3, H, W) → ``pixel − 128`` float32 in [-128, 127], same shape.

    Inverts the shared normalisation (:data:`~ladeda_lib.geometry.INPUT_GEOMETRY`) and rounds to whole grey
    levels: exact for images that came from uint8, which is what the pixel-input int8 file expects
    (:data:`PIXEL_INPUT_NAME`). Works behind notebook 07.
    """
    mean = np.asarray(INPUT_GEOMETRY.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(INPUT_GEOMETRY.std, np.float32).reshape(1, 3, 1, 1)
    pixels = np.round((np.asarray(x, np.float32) * std + mean) * 255.0)
    return (np.clip(pixels, 0, 255) - 128.0).astype(np.float32)


def model_kind(path: str | Path) -> str:
    """``"checkpoint"``, ``"onnx"`` or ``"tflite"`` by suffix (case-insensitive); ValueError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in EXPORT_SUFFIXES:
        return suffix[1:]
    known = ", ".join(CHECKPOINT_SUFFIXES + EXPORT_SUFFIXES)
    raise ModelFileError(f"{path}: unknown model file type {Path(path).suffix!r}; expected one of {known}")


def load_predictor(
    model: PatchDetector | str | os.PathLike,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    optimize: bool = True,
) -> Predictor:
    """The :class:`Predictor` for a model or a model file, chosen by suffix (case-insensitive).

    ``.pt/.pth/.ckpt/.bin``: our checkpoint or a published state_dict (its calibration record, if any, is
    applied); ``.onnx``: onnxruntime; ``.tflite``: LiteRT. ``threads``: see :func:`resolve_threads`.
    Introduced in notebook 06.
    """
    if isinstance(model, PatchDetector):
        return TorchPredictor(model, device, optimize, threads)
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    kind = model_kind(path)
    if kind == "onnx":
        return OnnxPredictor(path, threads)
    if kind == "tflite":
        return TFLitePredictor(path, threads)
    from ladeda_lib.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    calibration = Calibration.from_dict(ckpt.metadata.get("calibration"))
    return TorchPredictor(ckpt.model, device, optimize, threads, calibration, path)


def predict_logits(
    predictor: Predictor, images: torch.Tensor, batch_size: int = 16, keep_patches: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run ``predictor`` over uint8 images (N, 3, S, S) in batches → (logits (N,), patches (N, 1, h, w) or None).

    The one scoring loop behind ``ladeda evaluate`` and ``ladeda calibrate`` for every format.
    """
    logits, patches = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = INPUT_GEOMETRY.normalize(chunk.float() / 255.0) if chunk.dtype == torch.uint8 else chunk.float()
        logit, patch = predictor(x)
        logits.append(logit.reshape(-1))
        if keep_patches and patch is not None:
            patches.append(patch)
    return np.concatenate(logits) if logits else np.zeros(0, np.float32), (np.concatenate(patches) if patches else None)
