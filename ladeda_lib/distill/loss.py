"""The distillation loss: match the teacher's patch map, and still answer the real/fake question.

Alignment — why the student's 126×126 map is *sampled*, not resized
--------------------------------------------------------------------
At 256×256 the teacher (LaDeDa) scores a 31×31 grid: patch ``I`` covers input rows ``8I … 8I+8``
(receptive field 9, stride 8, offset 0), so its centre is pixel ``8I + 4``. The student (Tiny-LaDeDa)
scores a 126×126 grid: patch ``i`` covers rows ``2i − 1 … 2i + 5`` (receptive field 7, stride 2, offset −1:
the "same" padding of its first filter reaches one pixel outside the image), centre ``2i + 2``.
Equal centres give ``2i + 2 = 8I + 4``, i.e. ``i = 4I + 1``: student rows/columns 1, 5, 9, …, 121. Each
picked student patch (rows ``8I+1 … 8I+7``) lies entirely inside its teacher patch (rows ``8I … 8I+8``),
so both look at the same pixels. A bilinear resize of 126 → 31 would instead blend student patches whose
receptive fields straddle two teacher patches, and shift the map by a fraction of a patch.

The indices come from :func:`ladeda_lib.geometry.align_indices`, which derives them from the models'
traced layer geometry (nothing is typed in); :func:`ladeda_lib.geometry.align_student_to_teacher` picks
them (differentiably). Only the picked 31×31 student logits get the distillation gradient; the other
positions share the same convolution weights, so they learn too. Introduced in notebook 04.

The loss
--------
``total = α_distill · MSE(aligned student patches, scaled teacher patches) + α_task · BCE(pooled student
logit, label)``, α = 0.5 each by default.

Why the teacher's patches are scaled first. A teacher trained with BCE on its pooled logit has patch logits
of any size — tens of units on the toy set, thousands for some published checkpoints — so a raw MSE is
tens to thousands while the BCE of a pooled logit is about 0.7: the first term swamps the second, the
student spends its 1,297 parameters copying the teacher's *scale*, and the image-level answer is left to
chance (our first runs measured MSE 26–37 against BCE 0.7). Dividing the teacher's patch logits by one
number, ``target_scale`` — the root mean square of the teacher's patch logits over the training images —
puts them on a unit scale: signs (the teacher's patch decisions) and ranking are kept, and both terms
start at about 1. ``target_clip`` then caps the few extreme patches at ±clip (in those units), so a heavy
tail cannot dominate the mean either. The student learns the teacher's map on that unit scale; its
pooled logit gets its decision offset afterwards (:func:`~ladeda_lib.distill.offset.fit_decision_offset`).

Label-scarce training. ``labelled`` marks which images of the batch have a label: the BCE term averages
over those only, while the MSE term uses the teacher's maps for every image — the practical reason to
distil: the teacher labels the data the people did not.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ladeda_lib.geometry import align_indices, align_student_to_teacher


class DistillLoss(NamedTuple):
    """The total loss (a scalar tensor with gradient) and its two weighted-before terms (scalar tensors)."""

    total: torch.Tensor
    distill: torch.Tensor
    task: torch.Tensor


@lru_cache(maxsize=16)
def _default_indices(input_size: int) -> torch.Tensor:
    # Geometry does not depend on the teacher's width or the student's weights; width=1 is cheap to build.
    from ladeda_lib.models import LaDeDa, TinyLaDeDa

    return align_indices(TinyLaDeDa().geometry(), LaDeDa(width=1).geometry(), input_size)


def default_alignment(input_size: int = 256) -> torch.Tensor:
    """Student rows aligned with the teacher grid for Tiny-LaDeDa → LaDeDa at ``input_size`` (256 → ``4I + 1``).

    Returns a LongTensor of shape (teacher_grid,), e.g. (31,) at 256. Works behind notebook 04.
    """
    return _default_indices(int(input_size)).clone()


def infer_input_size(student_grid: int, teacher_grid: int) -> int:
    """The smallest square input size giving these Tiny-LaDeDa and LaDeDa grid sizes (126, 31 → 256).

    Raises ``ValueError`` when no input size produces both grids.
    """
    from ladeda_lib.models import LaDeDa, TinyLaDeDa

    student, teacher = TinyLaDeDa().geometry(), LaDeDa(width=1).geometry()
    for n in sorted(range(max(16, 2 * student_grid), 2 * student_grid + 8), key=lambda n: (n % 2, n)):
        if student.grid_size(n) == student_grid and teacher.grid_size(n) == teacher_grid:
            return n
    raise ValueError(
        f"a {student_grid}×{student_grid} student map and a {teacher_grid}×{teacher_grid} teacher map do not come "
        "from the same input size"
    )


def scale_targets(teacher_patches: torch.Tensor, scale: float = 1.0, clip: float | None = None) -> torch.Tensor:
    """Teacher patch logits on the unit scale the MSE compares: ``clamp(t / scale, −clip, clip)`` (any shape).

    ``scale`` must be positive; ``clip`` None leaves the tail as it is. Works behind notebook 04.
    """
    if not scale > 0:
        raise ValueError(f"target scale must be positive, got {scale}")
    target = teacher_patches.float() / float(scale)
    return target if clip is None else target.clamp(-float(clip), float(clip))


def target_scale(teacher_patches: torch.Tensor) -> float:
    """The root mean square of teacher patch logits (N, 1, h, w) → one float: the unit of :func:`scale_targets`.

    Computed over the training images' cached targets, so every batch uses the same unit.
    """
    rms = float(teacher_patches.float().pow(2).mean().sqrt())
    return rms if rms > 0 else 1.0


def distillation_loss(
    student_patches: torch.Tensor,
    student_logit: torch.Tensor,
    teacher_patches: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha_distill: float = 0.5,
    alpha_task: float = 0.5,
    indices: torch.Tensor | None = None,
    scale: float = 1.0,
    clip: float | None = None,
    labelled: torch.Tensor | None = None,
) -> DistillLoss:
    """α_distill·MSE(aligned student patches, scaled teacher patches) + α_task·BCE-with-logits(student logit, label).

    Args:
        student_patches: (B, 1, 126, 126) student patch logits (any grid; or already aligned (B, 1, 31, 31)).
        student_logit: (B, 1) or (B,) pooled student logits.
        teacher_patches: (B, 1, 31, 31) teacher patch logits (no gradient needed).
        labels: (B,) 0 = real, 1 = fake (int or float).
        alpha_distill, alpha_task: weights of the two terms.
        indices: student rows/columns aligned with the teacher grid (default: :func:`default_alignment`
            for the input size the two grids imply).
        scale, clip: the teacher targets are ``clamp(teacher / scale, −clip, clip)`` (:func:`scale_targets`);
            the defaults (1, None) compare raw logits.
        labelled: (B,) bool, which images' labels the BCE may use (None = all). The BCE is the mean over
            the labelled images, and 0 when the batch has none.

    Returns:
        :class:`DistillLoss` ``(total, distill, task)``; ``distill`` and ``task`` are the unweighted terms.
    Introduced in notebook 04.
    """
    if student_patches.dim() != 4 or teacher_patches.dim() != 4:
        raise ValueError(
            f"expected patch maps of shape (B, 1, h, w); got student {tuple(student_patches.shape)}, "
            f"teacher {tuple(teacher_patches.shape)}"
        )
    if student_patches.shape[-2:] != teacher_patches.shape[-2:]:
        if indices is None:
            indices = default_alignment(infer_input_size(student_patches.shape[-1], teacher_patches.shape[-1]))
        aligned = align_student_to_teacher(student_patches, indices)
    else:
        aligned = student_patches
    if aligned.shape != teacher_patches.shape:
        raise ValueError(
            f"aligned student patches {tuple(aligned.shape)} do not match teacher patches {tuple(teacher_patches.shape)}"
        )
    target = scale_targets(teacher_patches, scale, clip)
    distill = F.mse_loss(aligned.float(), target)
    logit = student_logit.reshape(-1).float()
    per_image = F.binary_cross_entropy_with_logits(logit, labels.reshape(-1).to(logit.dtype), reduction="none")
    if labelled is None:
        task = per_image.mean()
    else:
        mask = labelled.reshape(-1).to(per_image.device, torch.bool)
        task = per_image[mask].mean() if bool(mask.any()) else per_image.sum() * 0.0
    total = alpha_distill * distill + alpha_task * task
    return DistillLoss(total, distill, task)
