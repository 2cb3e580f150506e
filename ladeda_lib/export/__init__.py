"""Deployment: PyTorch → ONNX → TFLite (float32, float16, dynamic-range, int8), verified at every step.

* :mod:`~ladeda_lib.export.onnx_export` — :func:`export_onnx` (input ``input`` (1, 3, 256, 256), output
  ``logit`` (1, 1) and optionally ``patch_logits``)
* :mod:`~ladeda_lib.export.tflite` — :func:`convert_to_tflite` with onnx2tf, offline, on a copy
* :mod:`~ladeda_lib.export.int8` — :func:`convert_int8` (the factorised, channel-equalized graph that
  ``ladeda export`` quantizes), :func:`equalize_channels`, :func:`choose_clamp`
* :mod:`~ladeda_lib.export.quantizer` — :class:`DynamicRangeQuantizer` (PyTorch-side int8 weights),
  :func:`fold_batchnorm`
* :mod:`ladeda_lib.runtime` runs the files: :class:`OnnxModel`, :class:`TFLiteModel` (aliases of its
  ``OnnxPredictor``/``TFLitePredictor``): ``predictor(x) -> (logit, patches)``
* :mod:`~ladeda_lib.export.verify` — :func:`verify_exports`, :class:`Tolerances`
* :mod:`~ladeda_lib.export.chain` — :func:`export_model`, the whole chain (``ladeda export``)

Heavy libraries (onnx, onnxruntime, onnx2tf/TensorFlow, LiteRT) are imported only when used.
Introduced in notebook 07.
"""

from ladeda_lib.export.chain import QUANTIZATION_CHOICES, ExportResult, export_model, load_export_images
from ladeda_lib.export.errors import ExportError
from ladeda_lib.export.int8 import choose_clamp, convert_int8, equalize_channels
from ladeda_lib.export.onnx_export import INPUT_NAME, LOGIT_NAME, PATCH_NAME, export_onnx, topk_k_as_constant_nodes
from ladeda_lib.export.quantizer import DynamicRangeQuantizer, quantize_per_channel
from ladeda_lib.export.tflite import QUANTIZATIONS, convert_to_tflite
from ladeda_lib.export.verify import Tolerances, VerificationReport, compare_with_pytorch_quantizer, verify_exports
from ladeda_lib.runtime import OnnxPredictor as OnnxModel
from ladeda_lib.runtime import TFLitePredictor as TFLiteModel
from ladeda_lib.runtime import fold_batchnorm, load_predictor
from ladeda_lib.runtime import measure_latency_ms as median_latency_ms

__all__ = [
    "INPUT_NAME",
    "LOGIT_NAME",
    "PATCH_NAME",
    "QUANTIZATIONS",
    "QUANTIZATION_CHOICES",
    "DynamicRangeQuantizer",
    "ExportError",
    "ExportResult",
    "OnnxModel",
    "TFLiteModel",
    "Tolerances",
    "VerificationReport",
    "choose_clamp",
    "compare_with_pytorch_quantizer",
    "convert_int8",
    "convert_to_tflite",
    "equalize_channels",
    "export_model",
    "export_onnx",
    "fold_batchnorm",
    "load_export_images",
    "load_predictor",
    "median_latency_ms",
    "quantize_per_channel",
    "topk_k_as_constant_nodes",
    "verify_exports",
]
