"""``ladeda pipeline``: the whole path in one command, with a report.

data → teacher → teacher targets → single-stage student → the same student trained on labels alone (the
baseline distillation has to beat) → two-stage student → the deployed student (labels only, augmented, 60 epochs
of random 64-pixel crops) → evaluation per split and platform → export of the deployed student to every format
with verification → ``OUTPUT/report.md`` with figures.

* :mod:`~ladeda_lib.pipeline.stages` — :class:`PipelineConfig`, :func:`run_pipeline`: the stages, each skipped
  when its artifact is there (``--force`` rebuilds);
* :mod:`~ladeda_lib.pipeline.report` — ``report.md``, its figures and ``metrics.json``;
* :mod:`~ladeda_lib.pipeline.cli` — the command line.
"""

from ladeda_lib.pipeline.cli import register_cli
from ladeda_lib.pipeline.stages import STAGES, PipelineConfig, PipelineError, PipelineResult, run_pipeline

__all__ = ["STAGES", "PipelineConfig", "PipelineError", "PipelineResult", "register_cli", "run_pipeline"]
