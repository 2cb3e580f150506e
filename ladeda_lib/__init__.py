"""ladeda_lib: Locally Aware Deepfake Detection (LaDeDa), Tiny-LaDeDa distillation and edge export.

The folder layout is the table of contents:

* ``geometry``      — the shared input geometry and the patch geometry of the models
* ``models``        — LaDeDa teacher, Tiny-LaDeDa student, top-K pooling, fixed preprocessing
* ``checkpoints``   — atomic saving, safe loading, published state_dicts
* ``data``          — image loading, dataset detection (folders / CSV), the offline toy dataset
* ``distill``       — teacher training, cached teacher targets, alignment, loss, student training
* ``evaluation``    — metrics per split and platform, heatmap localisation
* ``runner``        — the one scoring loop over uint8 images, for any model or file
* ``inference``     — one API for PyTorch, ONNX and TFLite models, patch heatmaps
* ``viz``           — heatmap figures and the ipywidgets explorer
* ``decode``        — decoding that keeps up with the model: integer bicubic, JPEG draft mode, decoding ahead
* ``video``         — video files and streams (``read``, ``scoring``, ``overlay``, ``live``): threaded decoding, score
  tracks, fake segments, overlays
* ``export``        — ONNX, TFLite (onnx2tf), quantization and verification
* ``graphs``        — deployment graphs: folded BatchNorm, fused stem, column pairs, the pixel-input int8 graph
* ``contract``      — exported files' input/output names, their sidecar (arch, config, geometry), the decision record
* ``predictors``    — one way to run a model or model file in every format
* ``timing``        — one thread policy, one device resolver, one latency rule
* ``jsonio``        — the JSON the project writes: NaN as null, paths as strings
* ``pipeline``      — the whole path in one command (stages, report, command line)
* ``calibration``   — the decision calibration (offset, temperature) fitted on labelled images, expected calibration error
* ``robustness``    — AP and flipped decisions under JPEG, rescale, blur and platform sweeps
* ``audit``         — false-positive audit on real photographs (``audit_cli``: ``ladeda audit``)
* ``registry``      — every weights file the project knows: shipped, published layouts
* ``distributed``   — torchrun / DistributedDataParallel helpers
* ``paths``         — where data, weights and runs live; paths printed relative to the project
* ``cli``           — the ``ladeda`` command (``inference_cli``: ``ladeda predict`` and ``watch``; ``video_cli``:
  their video options)
"""

__version__ = "0.1.0"
