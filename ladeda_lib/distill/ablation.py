"""Students trained at an equal budget to compare recipes: the distillation ablation and "load if present".

:func:`distillation_ablation` trains (or loads) one student per run of :data:`ABLATION_RUNS` — same epochs,
batch, seed and data, only the loss weights and the share of labels differ; :func:`train_or_load_student` is
the notebooks' "load if present, train if not". Introduced in notebook 04.
"""

from __future__ import annotations

from dataclasses import replace

from ladeda_lib.checkpoints import Checkpoint
from ladeda_lib.distill.config import StudentTrainConfig
from ladeda_lib.distill.data import TrainingData
from ladeda_lib.distill.train import load_student, train_student
from ladeda_lib.models import PatchDetector, TinyLaDeDa

#: The runs of the distillation ablation: name → (alpha_distill, alpha_task, label_fraction).
ABLATION_RUNS = {
    "label-only": (0.0, 1.0, 1.0),
    "distilled": (0.5, 0.5, 1.0),
    "label-only, 20 % labels": (0.0, 1.0, 0.2),
    "distilled, 20 % labels": (0.5, 0.5, 0.2),
}


def train_or_load_student(
    config: StudentTrainConfig,
    *,
    teacher: PatchDetector | Checkpoint | None = None,
    data: TrainingData | None = None,
    progress: bool = True,
) -> TinyLaDeDa:
    """The student ``config.resolved_output()/student_final.pt`` if it exists, else train it with :func:`train_student`.

    The notebooks' "load if present, train if not": a second run of a notebook reuses its students.
    Introduced in notebook 05.
    """
    final = config.resolved_output() / "student_final.pt"
    if final.is_file():
        return load_student(final, config.pool)
    return train_student(config, teacher=teacher, data=data, progress=progress).model


def distillation_ablation(
    base: StudentTrainConfig,
    runs: dict[str, tuple[float, float, float]] | None = None,
    *,
    teacher: PatchDetector | Checkpoint | None = None,
    data: TrainingData | None = None,
    progress: bool = True,
) -> dict[str, TinyLaDeDa]:
    """Train (or load) one student per ablation run at equal budget: same epochs, batch, seed and data.

    ``base`` gives everything shared (``output`` is the parent folder: each run goes to a sub-folder named
    after it); ``runs`` maps a name to ``(alpha_distill, alpha_task, label_fraction)`` (default
    :data:`ABLATION_RUNS`). Labels-only runs use no teacher. Returns ``{name: trained student}``.
    Introduced in notebook 04.
    """
    root = base.resolved_output()
    students = {}
    for name, (alpha_distill, alpha_task, fraction) in (runs or ABLATION_RUNS).items():
        folder = root / name.replace(",", "").replace("%", "pct").replace(" ", "_")
        cfg = replace(base, output=folder, alpha_distill=alpha_distill, alpha_task=alpha_task, label_fraction=fraction)
        students[name] = train_or_load_student(cfg, teacher=teacher, data=data, progress=progress)
    return students
