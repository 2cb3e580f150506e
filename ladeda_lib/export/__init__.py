"""Deployment: PyTorch → ONNX → TFLite (float32, float16, dynamic-range, int8), verified at every step.

* :mod:`~ladeda_lib.export.onnx_export` — :func:`export_onnx` (input ``input`` (1, 3, 256, 256), output
  ``logit`` (1, 1) and optionally ``patch_logits``; the names are :mod:`ladeda_lib.contract`'s)
* :mod:`~ladeda_lib.export.tflite` — :func:`convert_to_tflite` with onnx2tf, offline, on a copy
* :mod:`~ladeda_lib.export.int8` — :func:`convert_int8`: which int8 graph to convert and how (the graphs
  themselves are in :mod:`ladeda_lib.graphs`)
* :mod:`~ladeda_lib.export.quantizer` — :class:`DynamicRangeQuantizer` (PyTorch-side int8 weights)
* :mod:`~ladeda_lib.export.verify` — :func:`verify_exports`, :class:`Tolerances`
* :mod:`~ladeda_lib.export.chain` — :func:`export_model`, the whole chain (``ladeda export``)

The files run through :mod:`ladeda_lib.predictors` (``load_predictor(path)(x) -> (logit, patches)``).
Heavy libraries (onnx, onnxruntime, onnx2tf/TensorFlow, LiteRT) are imported only when used.
Introduced in notebook 08.
"""

from ladeda_lib.export.chain import QUANTIZATION_CHOICES, ExportResult, export_model, load_export_images
from ladeda_lib.export.errors import ExportError
from ladeda_lib.export.int8 import convert_int8
from ladeda_lib.export.onnx_export import export_onnx, topk_k_as_constant_nodes
from ladeda_lib.export.quantizer import DynamicRangeQuantizer, quantize_per_channel
from ladeda_lib.export.tflite import QUANTIZATIONS, convert_to_tflite
from ladeda_lib.export.verify import Tolerances, VerificationReport, compare_with_pytorch_quantizer, verify_exports

__all__ = [
    "QUANTIZATIONS",
    "QUANTIZATION_CHOICES",
    "DynamicRangeQuantizer",
    "ExportError",
    "ExportResult",
    "Tolerances",
    "VerificationReport",
    "compare_with_pytorch_quantizer",
    "convert_int8",
    "convert_to_tflite",
    "export_model",
    "export_onnx",
    "load_export_images",
    "quantize_per_channel",
    "topk_k_as_constant_nodes",
    "verify_exports",
]
