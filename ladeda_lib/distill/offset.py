"""The decision offset: after training, shift the student's ``fc.bias`` so p = 0.5 is a sensible threshold.

Not to be confused with the two other things the project calibrates: the images an int8 file is calibrated on
(*representative* images, :mod:`ladeda_lib.export.int8`) and the decision record — offset and temperature —
fitted on labelled images to any model file (:class:`~ladeda_lib.contract.DecisionCalibration`,
``ladeda calibrate``). This one changes the weights themselves, once, at the end of every student run:
:func:`decision_offset_hook` is the finishing hook :func:`~ladeda_lib.distill.loop.fit` calls on the final
and the best model before writing them. Introduced in notebook 04.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ladeda_lib.data.tensors import release_pages
from ladeda_lib.distill.loop import Finished
from ladeda_lib.evaluation import binary_metrics
from ladeda_lib.models import PatchDetector
from ladeda_lib.runner import predict

#: Images per :func:`~ladeda_lib.runner.predict` call when only some rows of a (memory-mapped) image tensor are used.
OFFSET_CHUNK = 256


def pooled_logits_of_rows(
    model: PatchDetector, images: torch.Tensor, mask: torch.Tensor | None, batch_size: int, device: Any
) -> torch.Tensor:
    """Pooled logits (M,) of the rows of ``images`` (N, 3, S, S) where ``mask`` (N,) bool is true (all if None).

    The selected rows are gathered ``OFFSET_CHUNK`` at a time: ``images[mask]`` would copy every one of
    them into memory at once (590 MB for 3,000 images of a memory-mapped cache).
    """
    if mask is None or bool(mask.all()):
        return predict(model, images, batch_size, device)[0]
    rows = mask.nonzero().flatten()
    parts = []
    for lo in range(0, len(rows), OFFSET_CHUNK):
        parts.append(predict(model, images[rows[lo : lo + OFFSET_CHUNK]], batch_size, device)[0])
        release_pages()
    return torch.cat(parts) if parts else torch.zeros(0)


def fit_decision_offset(
    model: PatchDetector,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 32,
    device: Any = "cpu",
    mask: torch.Tensor | None = None,
) -> float:
    """Shift ``fc.bias`` so the pooled logits fit the labels best (BCE) on these images; returns the shift.

    Adding δ to ``fc.bias`` adds δ to every patch logit and hence exactly δ to the top-K pooled logit, so
    this changes the decision threshold only — never the ranking (AP, AUC) or the heatmap's shape. It is
    needed because the student copies the teacher's patch levels (MSE): the teacher is mean-pooled, so the
    top 10 % of its patches are positive even on real images, and a top-K student inherits that offset
    (accuracy at 0.5 fell to 50 % on the toy set, with AP unchanged). Fitted on the TRAINING images.
    ``mask`` (N,) bool: fit on those rows of ``images`` / ``labels`` only (default: all), read chunk by chunk,
    so a memory-mapped image cache is never copied whole. Works behind notebook 04.
    """
    logits = pooled_logits_of_rows(model, images, mask, batch_size, device)
    target = (labels if mask is None else labels[mask]).float().reshape(-1)
    delta = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([delta], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logits + delta, target)
        loss.backward()
        return loss

    opt.step(closure)
    shift = float(delta.detach())
    with torch.no_grad():
        model.fc.bias.add_(shift)
    return shift


def decision_offset_hook(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    labelled: torch.Tensor | None = None,
    batch_size: int = 32,
    device: Any = "cpu",
) -> Callable[[PatchDetector, str], Finished]:
    """The finishing hook that fits the decision offset of the final and the best model (see :func:`fit`).

    Fitted on the training images whose labels training may use (``labelled``, all if None). For the final
    model it also measures validation before and after (AP must not move) and returns them for ``log.json``
    (entry ``decision_offset``) with a one-line note; the checkpoints record ``decision_offset``.
    """

    def finish(model: PatchDetector, which: str) -> Finished:
        if which != "final":
            shift = fit_decision_offset(model, train_images, train_labels, batch_size, device, mask=labelled)
            return Finished(metadata={"decision_offset": shift})
        before = binary_metrics(val_labels, predict(model, val_images, batch_size, device)[0])
        shift = fit_decision_offset(model, train_images, train_labels, batch_size, device, mask=labelled)
        after = binary_metrics(val_labels, predict(model, val_images, batch_size, device)[0])
        note = (
            f"decision offset fitted on the training images: fc.bias {shift:+.3f}; val accuracy "
            f"{before['accuracy']:.3f} -> {after['accuracy']:.3f} (AP {after['ap']:.3f} unchanged)"
        )
        return Finished(
            metadata={"decision_offset": shift, "val_after_offset": after},
            log={"decision_offset": {"offset": shift, "val_before": before, "val_after": after}},
            note=note,
        )

    return finish
