"""Full int8 for any student: bound the patch-logit range the int8 file has to represent.

:func:`convert_int8` is how ``ladeda export`` makes the int8 file: the *factorised* graph (the fused 5×5 stem
kernel's taps span a wide range per output channel, and int8 weights alone then moved image logits by up to ~5
on a large-logit student; the fixed filter's integer taps and the separate ``conv1``/``conv2`` quantize far
better) with its channels equalized (:func:`equalize_channels`: one int8 step per activation tensor must serve
channels whose ranges differ by orders of magnitude in a ForenSynth-like student). ``benchmarks/int8_study.py``
compares these with a clamp, a float head and calibration alone.

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

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.export.errors import ExportError
from ladeda_lib.export.onnx_export import export_onnx
from ladeda_lib.export.tflite import convert_to_tflite, normalised_images
from ladeda_lib.models import PatchDetector, TinyLaDeDa
from ladeda_lib.runtime import Calibration, fold_batchnorm

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


def equalize_channels(model: TinyLaDeDa, images: torch.Tensor | np.ndarray, limit: float = 1e4) -> TinyLaDeDa:
    """A BatchNorm-folded copy of a Tiny-LaDeDa whose ReLU outputs have equal ranges per channel; same outputs.

    A full-int8 file quantizes each activation tensor with *one* step for all its channels. When one channel
    spans ±1,000 and another ±10 (a student like the published ForenSynth file, whose ``bn1`` variance is
    tiny), the small channel is rounded away. ReLU is positive-homogeneous, ``relu(s·x) = s·relu(x)`` for
    ``s > 0``, so channel ``c`` of a layer can be multiplied by ``s_c`` and the next layer's weights on that
    channel divided by ``s_c`` without changing anything in float (cross-layer equalization, Nagel et al. 2019).
    ``s_c`` brings every channel's largest value on ``images`` to the largest channel's (at most ``limit``×).

    (B, 3, H, W) → the same (B, 1, h, w) patch logits as ``model`` to float rounding.
    """
    folded = fold_batchnorm(model, check=False)
    block = folded.layer1[0]
    pairs = ((folded.conv2, block.conv1), (block.conv1, block.conv2), (block.conv2, folded.fc))
    x = torch.from_numpy(normalised_images(images))
    with torch.no_grad():
        for producer, consumer in pairs:
            seen: list[torch.Tensor] = []
            hook = producer.register_forward_hook(
                lambda _m, _i, out, seen=seen: seen.append(out.relu().amax(dim=(0, 2, 3)))
            )
            for start in range(0, len(x), 16):
                folded.patch_logits(x[start : start + 16])
            hook.remove()
            peak = torch.stack(seen).amax(dim=0)
            scale = torch.where(peak > 0, peak.max() / peak.clamp_min(1e-12), torch.ones_like(peak)).clamp(max=limit)
            producer.weight.mul_(scale.view(-1, *([1] * (producer.weight.dim() - 1))))
            producer.bias.mul_(scale)
            shape = [1, -1] + [1] * (consumer.weight.dim() - 2)
            consumer.weight.div_(scale.view(shape))
    return folded


def convert_int8(
    model: PatchDetector,
    folder: str | Path,
    stem: str,
    calibration_images: torch.Tensor | np.ndarray,
    with_patches: bool = False,
    nhwc: bool = False,
    decision_calibration: Calibration | None = None,
    equalize: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Write ``<folder>/<stem>_int8.tflite``: the factorised, channel-equalized graph, calibrated on ``calibration_images``.

    Args:
        model: the detector; calibration_images: representative images (N, 3, 256, 256), uint8 or normalised.
        with_patches, nhwc: as for :func:`~ladeda_lib.export.chain.export_model`.
        decision_calibration: offset/temperature baked into the graph (the logits compared are calibrated).
        equalize: run :func:`equalize_channels`' copy (Tiny-LaDeDa only; outputs unchanged in float).
    Returns:
        (the int8 file, ``{"graph": …}`` saying which graph was converted).
    """
    if calibration_images is None:
        raise ExportError(
            "full int8 quantization needs representative calibration images (real training images through the "
            "same preprocessing, about 100); pass calibration=uint8 tensor (N, 3, 256, 256)"
        )
    x = normalised_images(calibration_images)

    source_model = model
    if equalize and isinstance(model, TinyLaDeDa):
        source_model = equalize_channels(model, x)

    with tempfile.TemporaryDirectory(prefix="ladeda_int8_") as tmp:
        source = export_onnx(
            source_model,
            Path(tmp) / f"{stem}.onnx",
            with_patches=with_patches,
            fuse=False,
            calibration=decision_calibration,
        )
        path = convert_to_tflite(source, folder, ("int8",), calibration=x, nhwc=nhwc, stem=stem)["int8"]
    return path, {"graph": "factorised stem" + (", channels equalized" if source_model is not model else "")}
