"""ladeda_lib: Locally Aware Deepfake Detection (LaDeDa), Tiny-LaDeDa distillation and edge export.

The folder layout is the table of contents:

* ``geometry``      — the shared input geometry and the patch geometry of the models
* ``models``        — LaDeDa teacher, Tiny-LaDeDa student, top-K pooling, fixed preprocessing
* ``checkpoints``   — atomic saving, safe loading, published state_dicts
* ``data``          — image loading, dataset detection (folders / CSV), the offline toy dataset
* ``distill``       — teacher training, cached teacher targets, alignment, loss, student training
* ``evaluation``    — metrics per split and platform, heatmap localisation
* ``inference``     — one API for PyTorch, ONNX and TFLite models, patch heatmaps
* ``viz``           — heatmap figures and the ipywidgets explorer
* ``export``        — ONNX, TFLite (onnx2tf), quantization and verification
* ``pipeline``      — the whole path in one command
"""

__version__ = "0.1.0"
