"""The tensors a training run needs: train and validation images of a dataset, decoded once.

Introduced in notebook 03.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ladeda_lib.data.layouts import DatasetIndex, holdout_split, resolve_dataset
from ladeda_lib.data.tensors import ImageTensors, load_tensors

#: Share of a split-less dataset (single folder, CSV without splits) held out for validation.
HOLDOUT_FRACTION = 0.2


@dataclass
class TrainingData:
    """Train and validation tensors (uint8 (N, 3, 256, 256) images, long (N,) labels) and where they came from."""

    index: DatasetIndex
    train: ImageTensors
    val: ImageTensors
    note: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "root": str(self.index.root),
            "layout": self.index.layout,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "note": self.note,
        }


def labelled_subset(labels: torch.Tensor, fraction: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Which training images keep their label when only ``fraction`` of them are labelled: (N,) long → (N,) bool.

    Stratified (the same share of each class, at least one image per class when ``fraction`` > 0) and
    deterministic for a ``seed``. ``fraction`` 1 keeps every label. Works behind notebook 04.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must lie in (0, 1], got {fraction}")
    labels = torch.as_tensor(labels).reshape(-1)
    keep = torch.zeros(labels.numel(), dtype=torch.bool)
    if fraction == 1.0:
        return keep | True
    generator = torch.Generator().manual_seed(seed)
    for value in labels.unique().tolist():
        members = (labels == value).nonzero().reshape(-1)
        count = max(1, round(fraction * members.numel()))
        keep[members[torch.randperm(members.numel(), generator=generator)[:count]]] = True
    return keep


def load_training_data(
    data: str | Path | DatasetIndex | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> TrainingData:
    """Detect the dataset at ``data`` (None: the toy set, generated if absent) and decode train + val.

    Without a ``val`` split, :func:`ladeda_lib.data.layouts.holdout_split` holds out a deterministic 20 %
    of ``train`` (and says so in ``note``). Raises ``ValueError`` when there are no training images.
    """
    index = resolve_dataset(data, progress=progress)
    train, val = index.select(split="train"), index.select(split="val")
    note = ""
    if not train:
        raise ValueError(f"{index.root}: no training images (split 'train' is empty; found splits {index.splits})")
    if not val:
        train, val = holdout_split(train, HOLDOUT_FRACTION)
        note = f"no val split in {index.root}: held out {len(val)} of the training images for validation"
        if not val or not train:
            raise ValueError(f"{index.root}: too few images to hold out a validation part ({len(train) + len(val)})")
    return TrainingData(
        index, load_tensors(train, cache_dir=cache_dir, progress=progress), load_tensors(val, cache_dir, progress), note
    )


def teacher_label_note(teacher_config: dict[str, Any] | None, fraction: float, seed: int) -> str | None:
    """A warning when a student trained on the labels of ``labelled_subset(..., fraction, seed)`` distils a
    teacher that saw labels it withholds (a teacher trained on all of them, or on another subset); else None.

    ``teacher_config`` is the teacher checkpoint's recorded training config (None: unknown, e.g. published)."""
    if fraction >= 1.0:
        return None
    if not teacher_config or "label_fraction" not in teacher_config:
        return (
            f"label fraction {fraction:g}: the teacher's training labels are not recorded, so it may have seen the "
            "labels this student withholds"
        )
    t_fraction = float(teacher_config["label_fraction"])
    t_seed = teacher_config.get("label_seed")
    t_seed = teacher_config.get("seed", 0) if t_seed is None else t_seed
    if t_fraction >= 1.0:
        return (
            f"label fraction {fraction:g}: the teacher was trained on every training label, so it carries the labels "
            "this student withholds (train one with the same --label-fraction and --label-seed)"
        )
    if (t_fraction, int(t_seed)) != (fraction, int(seed)):
        return (
            f"label fraction {fraction:g} (label seed {seed}): the teacher was trained on another labelled subset "
            f"(fraction {t_fraction:g}, label seed {t_seed}), so it saw labels this student withholds"
        )
    return None
