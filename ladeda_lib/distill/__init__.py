"""Distillation: a frozen LaDeDa teacher, cached teacher targets, single- and two-stage Tiny-LaDeDa training.

The folder is the table of contents: :mod:`.config` (dataclasses), :mod:`.data` (decoded training data),
:mod:`.teacher` (get or train the teacher), :mod:`.targets` (cached teacher outputs), :mod:`.loss`
(alignment + MSE + BCE), :mod:`.loop` (the shared training loop), :mod:`.runfiles` (what a run writes and
resumes from), :mod:`.train` (single-stage and two-stage students), :mod:`.crops` (training on random crops),
:mod:`.offset` (the decision offset fitted after training), :mod:`.ablation` (students at an equal budget),
:mod:`.cli` (commands).
Introduced in notebooks 01, 03, 04 and 05.
"""

from ladeda_lib.distill.ablation import ABLATION_RUNS, distillation_ablation, train_or_load_student
from ladeda_lib.distill.config import (
    STAGE1_FROZEN,
    STAGE2_FROZEN,
    StudentTrainConfig,
    TeacherTrainConfig,
    TwoStageTrainConfig,
)
from ladeda_lib.distill.data import TrainingData, load_training_data
from ladeda_lib.distill.loop import Stage, TrainResult, fit
from ladeda_lib.distill.loss import DistillLoss, default_alignment, distillation_loss
from ladeda_lib.distill.runfiles import TrainingDiverged
from ladeda_lib.distill.targets import TeacherTargets, compute_teacher_targets
from ladeda_lib.distill.teacher import get_teacher, train_teacher
from ladeda_lib.distill.train import train_student, train_student_two_stage

__all__ = [
    "STAGE1_FROZEN",
    "STAGE2_FROZEN",
    "DistillLoss",
    "Stage",
    "StudentTrainConfig",
    "TeacherTargets",
    "TeacherTrainConfig",
    "TrainResult",
    "TrainingData",
    "TrainingDiverged",
    "TwoStageTrainConfig",
    "compute_teacher_targets",
    "default_alignment",
    "distillation_loss",
    "fit",
    "get_teacher",
    "load_training_data",
    "train_student",
    "train_or_load_student",
    "distillation_ablation",
    "ABLATION_RUNS",
    "train_student_two_stage",
    "train_teacher",
]
