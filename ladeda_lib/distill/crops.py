"""Training a student on random crops instead of whole images (``--crop-size``, ``--crops-per-image``).

The patch detector is local: inside a crop every student and teacher patch is the whole image's patch. So each
epoch a :class:`~ladeda_lib.distill.train.StudentTask` with a crop draws ``crops_per_image`` random crops of every
training image, their corners on ``step`` (the teacher's patch stride, which the student's stride divides); cached
teacher targets are the matching window of the whole image's map, and a live teacher scores the crop. Four
64-pixel crops hold a quarter of an image's pixels and, per epoch, teach about as much as the whole image
(``docs/results.md``). Validation always uses whole images.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ladeda_lib.geometry import align_indices
from ladeda_lib.models import PatchDetector, TinyLaDeDa


def crop_options(cfg: Any, teacher: PatchDetector) -> dict[str, Any]:
    """:class:`~ladeda_lib.distill.train.StudentTask`'s crop arguments for a training config (none for whole images
    or a two-stage run): the crop, its corners' step (the teacher's patch stride, a multiple of the student's) and
    the student rows aligned with the crop's teacher grid."""
    crop = getattr(cfg, "crop_size", None)
    if crop is None:
        return {}
    student, geometry = TinyLaDeDa().geometry(), teacher.geometry()
    return {  # check_crop (called by StudentTask) checks that the crop fits the images and the step
        "crop_size": crop,
        "crops_per_image": cfg.crops_per_image,
        "crop_step": math.lcm(student.stride, geometry.stride),
        "crop_indices": align_indices(student, geometry, crop),
    }


def check_crop(crop: int, copies: int, step: int, size: int, indices: torch.Tensor | None) -> int:
    """``ValueError`` unless ``crop`` is a multiple of ``step`` in [max(16, step), size], ``copies`` ≥ 1 and the
    aligned rows are given; returns the number of corner positions per side."""
    low = max(16, step)
    if crop % step or not low <= crop <= size:
        raise ValueError(f"crop_size must be a multiple of {step} in [{low}, {size}], got {crop}")
    if copies < 1:
        raise ValueError(f"crops_per_image must be at least 1, got {copies}")
    if indices is None:
        raise ValueError("crop_size needs crop_indices: the student rows aligned with the crop's teacher grid")
    return (size - crop) // step + 1


def plan_crops(n: int, copies: int, positions: int, step: int, generator: torch.Generator, batch_size: int) -> list:
    """One epoch's batches: (image indices, crop tops, crop lefts), every image ``copies`` times in random order."""
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(copies)])
    tops = torch.randint(0, positions, (order.numel(),), generator=generator) * step
    lefts = torch.randint(0, positions, (order.numel(),), generator=generator) * step
    return list(zip(order.split(batch_size), tops.split(batch_size), lefts.split(batch_size), strict=True))


def cut_crops(
    images: torch.Tensor, maps: torch.Tensor | None, spec: Any, crop: int, step: int, grid: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The crops of one planned batch, (B, 3, crop, crop), and (with cached ``maps``) the window of each whole
    image's teacher map that covers its crop, (B, 1, grid, grid)."""
    corners = list(zip(*(t.tolist() for t in spec), strict=True))
    crops = torch.stack([images[i, :, t : t + crop, x : x + crop] for i, t, x in corners])
    if maps is None:
        return crops, None
    return crops, torch.stack(
        [maps[i, :, t // step : t // step + grid, x // step : x // step + grid] for i, t, x in corners]
    )
