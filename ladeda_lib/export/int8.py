"""Full int8 for any student: bound the patch-logit range the int8 file has to represent.

A full-int8 file stores every tensor with one step per tensor: ``real = (q − zero_point) · scale``, 256 levels
between the calibrated minimum and maximum. A student whose patch logits span ±400 (the published WildRF file
on the toy images) gets a step of about 3, and the image logit — the mean of thousands of such patch logits,
a few units from the threshold — is no longer decided by the model. :func:`choose_clamp` picks the tightest
bound ``C`` for which clipping the patch logits to ``[-C, C]`` before pooling keeps every float decision on
the calibration images; the export puts that clip into the graph
(:class:`~ladeda_lib.export.onnx_export.ExportableDetector`). ``benchmarks/int8_study.py`` compares it with a
float head and with calibration alone. Introduced in notebook 07.
"""

from __future__ import annotations

import numpy as np
import torch

from ladeda_lib.export.tflite import normalised_images
from ladeda_lib.models import PatchDetector
from ladeda_lib.runtime import Calibration

#: Quantiles of |patch logit| tried as the bound, tightest first.
CLAMP_QUANTILES = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999)


def choose_clamp(
    model: PatchDetector,
    images: torch.Tensor | np.ndarray,
    calibration: Calibration | None = None,
    threshold_logit: float = 0.0,
    max_shift: float = 0.05,
) -> float | None:
    """The tightest decision-preserving bound for the patch logits, or None when no bound is needed.

    Args:
        model: the student (or teacher) to export.
        images: the int8 calibration images (N, 3, S, S), uint8 or normalised.
        calibration: the calibration baked into the graph (bounds are on calibrated patch logits).
        threshold_logit: the decision threshold on the image logit (0 = probability 0.5).
        max_shift: besides keeping every decision, the clip may move no image logit by more than this
            fraction of the image logits' standard deviation on ``images``.

    Returns:
        ``C`` such that pooling ``clamp(patch, -C, C)`` decides every calibration image as the unclipped model
        does; None if even the loosest quantile changes a decision (then the bound is left out).
    """
    x = torch.from_numpy(normalised_images(images))
    with torch.no_grad():
        patches = torch.cat([model.eval().patch_logits(x[i : i + 16]) for i in range(0, len(x), 16)])
        if calibration is not None:
            patches = calibration.apply(patches)
        pooled = model.pool(patches).reshape(-1)
        spread = float(pooled.std()) if len(pooled) > 1 else 1.0
        magnitude = patches.abs().flatten()
        sample = magnitude[torch.randperm(len(magnitude), generator=torch.Generator().manual_seed(0))[:1_000_000]]
        for q in CLAMP_QUANTILES:
            bound = float(torch.quantile(sample, q))
            clipped = model.pool(patches.clamp(-bound, bound)).reshape(-1)
            same = bool(((clipped >= threshold_logit) == (pooled >= threshold_logit)).all())
            if same and float((clipped - pooled).abs().max()) <= max_shift * spread:
                return bound
    return None
