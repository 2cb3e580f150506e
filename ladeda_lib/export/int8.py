"""Full int8 for any student: keep the decisions of students whose patch logits are large or cancel.

A full-int8 file stores every tensor with one step per tensor: ``real = (q − zero_point) · scale``, 256 levels
between the calibrated minimum and maximum, and every weight with 255 levels per output channel. A student whose
patch logits span ±400 (the published WildRF file on the toy images) gets a patch-logit step of about 3, and the
image logit — the mean of thousands of such patch logits, a few units from the threshold — is no longer decided
by the model. :func:`convert_int8` is how ``ladeda export`` makes the int8 file; for Tiny-LaDeDa with a fixed
filter or raw input it converts the :class:`PixelInputStudent` (pixel input, zero-sum pre-rounded stem, mean
pooling and head as one convolution, the head's weights on their grid, biases corrected for rounding) with and
without channel equalization, and the factorised graph, and keeps the one closest to float on the calibration
images. ``benchmarks/int8_study.py`` measures every piece, with a clamp (:func:`choose_clamp`), a float head and
calibration alone beside them. Introduced in notebook 07.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ladeda_lib.export.errors import ExportError
from ladeda_lib.export.onnx_export import check_writable_folder, export_onnx
from ladeda_lib.export.tflite import convert_to_tflite, normalised_images
from ladeda_lib.geometry import INPUT_GEOMETRY
from ladeda_lib.models import PatchDetector, TinyLaDeDa
from ladeda_lib.runtime import (
    LOGIT_NAME,
    PATCH_NAME,
    PIXEL_INPUT_NAME,
    Calibration,
    fold_batchnorm,
    has_fusable_stem,
    load_predictor,
    normalised_to_pixels,
    stem_kernel,
)

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


def _equalize_pairs(
    pairs: tuple[tuple[nn.Module, nn.Module], ...],
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    limit: float,
) -> None:
    """Cross-layer channel equalization in place (see :func:`equalize_channels`).

    For each ``(producer, consumer)`` pair, in order: run ``forward`` over ``x`` (batches of 16) to find each
    producer channel's largest ReLU output, multiply that channel (weight and bias) by ``s_c`` (equal peaks, at
    most ``limit``×) and divide the consumer's weights on it by ``s_c``; float outputs stay the same.
    """
    with torch.no_grad():
        for producer, consumer in pairs:
            seen: list[torch.Tensor] = []
            hook = producer.register_forward_hook(
                lambda _m, _i, out, seen=seen: seen.append(out.relu().amax(dim=(0, 2, 3)))
            )
            for start in range(0, len(x), 16):
                forward(x[start : start + 16])
            hook.remove()
            peak = torch.stack(seen).amax(dim=0)
            scale = torch.where(peak > 0, peak.max() / peak.clamp_min(1e-12), torch.ones_like(peak)).clamp(max=limit)
            producer.weight.mul_(scale.view(-1, *([1] * (producer.weight.dim() - 1))))
            producer.bias.mul_(scale)
            consumer.weight.div_(scale.view([1, -1] + [1] * (consumer.weight.dim() - 2)))


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
    _equalize_pairs(pairs, folded.patch_logits, x, limit)
    return folded


def zero_sum_round(weight: torch.Tensor, zero_sum: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Round a convolution kernel onto the int8 grid the converter uses, keeping each (out, in) kernel's sum.

    The grid is symmetric per output channel, ``scale_o = max|w_o| / 127``, so the largest tap of each output
    channel is exactly ±127 and the converter's own rounding of ``q · scale`` is lossless. With ``zero_sum``
    the integer taps of every (out, in) kernel are then nudged (by one step each, largest rounding residual
    first, never beyond ±127) until their sum equals the rounded sum of the float kernel — 0 for Tiny-LaDeDa's
    fused stem, whose fixed diagonal filter sums to zero. A kernel that sums to zero ignores brightness; naive
    rounding breaks the zero sum and the image's brightness leaks into every patch logit.

    Args:
        weight: (O, C, k, k) float kernel.
        zero_sum: restore each (out, in) kernel's sum (in steps) after rounding.
    Returns:
        (integer taps (O, C, k, k) float64 in [-127, 127], scale (O,) float64); ``taps · scale`` is the
        rounded kernel. Works behind notebook 07.
    """
    w = weight.detach().double()
    scale = w.abs().flatten(1).amax(dim=1).clamp_min(1e-30) / 127.0
    exact = w / scale.view(-1, 1, 1, 1)
    taps = torch.round(exact)
    if zero_sum:
        residual = exact - taps
        for o in range(w.shape[0]):
            for c in range(w.shape[1]):
                flat, res = taps[o, c].flatten(), residual[o, c].flatten()
                missing = int(torch.round(exact[o, c].sum()).item() - flat.sum().item())
                step = 1.0 if missing > 0 else -1.0
                # taps whose value was rounded *away* from the needed direction the most go first
                for j in torch.argsort(res, descending=missing > 0).tolist():
                    if missing == 0:
                        break
                    if abs(flat[j] + step) <= 127:
                        flat[j] += step
                        missing -= int(step)
                taps[o, c] = flat.view_as(taps[o, c])
    return taps, scale


def snap_to_grid(before: nn.Conv2d, head: nn.Conv2d) -> torch.Tensor:
    """Rescale ``before``'s output channels so that every weight of the one-output ``head`` lies on its int8 grid.

    The head's 8 weights share one int8 scale, ``max |w| / 127``; rounding each to that grid moves it by up to
    half a step, and when the head's terms cancel (large features of both signs) the image logit moves by far
    more than its spread. A ReLU lets a positive factor pass: multiplying output channel ``c`` of ``before``
    (weights and bias) by ``s_c`` and dividing the head's weight ``c`` by it changes nothing in float. With
    ``s_c = |w_c| / (k_c · step)``, ``k_c = round(|w_c| / step)`` (at least 1), the head's weights become exactly
    ``± k_c · step``: no rounding left in the head, and every factor stays within half a step of 1 in relative
    terms (``1 ± 1 / (2 k_c)``). Modifies both layers in place; returns the factors (C,).
    """
    with torch.no_grad():
        w = head.weight[0, :, 0, 0].double()
        step = w.abs().max() / 127
        if step <= 0:
            return torch.ones_like(w)
        k = torch.clamp(torch.round(w.abs() / step), min=1)
        factors = torch.where(w != 0, w.abs() / (k * step), torch.ones_like(w))
        before.weight.mul_(factors.view(-1, 1, 1, 1).to(before.weight.dtype))
        if before.bias is not None:
            before.bias.mul_(factors.to(before.bias.dtype))
        head.weight.div_(factors.view(1, -1, 1, 1).to(head.weight.dtype))
    return factors


def int8_round(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``t`` rounded to the 256 levels a full-int8 file gives a tensor whose calibrated range is [low, high]:
    ``scale = (high − low) / 255`` over a range widened to include 0, an integer zero point (0 is a level),
    values beyond the range clipped — the rounding LiteRT applies to every activation."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 if high > low else 1.0
    zero_point = round(-128 - low / scale)
    return (torch.clamp(torch.round(t / scale) + zero_point, -128, 127) - zero_point) * scale


def border_pixels(rounded: bool = True) -> torch.Tensor:
    """``255 · mean_c − 128`` per channel (3,), rounded by default: the pixel value the float model sees at its
    zero-padded border (normalised 0), i.e. the pixel-input graph's padding. The graph holds the exact values
    (float-identical to the model); the int8 file stores them rounded to whole grey levels."""
    values = 255 * torch.tensor(INPUT_GEOMETRY.mean, dtype=torch.float64) - 128
    return torch.round(values) if rounded else values


def pixel_stem(model: TinyLaDeDa) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The fused stem (:func:`~ladeda_lib.runtime.stem_kernel`) re-expressed for ``pixel − 128`` input.

    Normalised input is ``x_n = (p − 255·mean_c) / (255·std_c)`` with ``p = pixel − 128 + 128``, so the kernel
    becomes ``w / (255·std_c)`` and the mean subtraction adds ``Σ w'·(128 − 255·mean_c)`` to the bias. With a
    zero-sum fixed filter that term is 0 wherever the kernel sees the image only; at the border the float model
    pads normalised zeros, i.e. pixel ``255·mean_c`` — the pixel graph pads with :func:`border_pixels` instead.

    Returns:
        (weight (8, 3, k, k) float64, bias (8,) float64, padded): ``padded`` is True for a fixed filter (5×5,
        pad top/left by one border pixel), False for ``"raw"`` (3×3, no padding, the mean folded into the bias).
    """
    weight, bias, padding = stem_kernel(model)
    std = torch.tensor(INPUT_GEOMETRY.std, dtype=torch.float64).view(1, 3, 1, 1)
    mean = torch.tensor(INPUT_GEOMETRY.mean, dtype=torch.float64)
    weight = weight / (255 * std)
    if padding == 0:
        bias = bias + (weight.sum(dim=(2, 3)) * (128 - 255 * mean)).sum(dim=1)
        return weight, bias, False
    sums = weight.sum(dim=(2, 3)).abs().max()
    if float(sums) > 1e-9 * float(weight.abs().max()):
        raise ExportError(
            f"the {model.preprocess.name} filter does not sum to zero; the pixel-input int8 graph needs a "
            "zero-sum fixed filter (right_diag, left_diag, x_grad, y_grad) or raw input"
        )
    return weight, bias, True


class PixelInputStudent(nn.Module):
    """Tiny-LaDeDa as the full-int8 file computes it: ``pixel − 128`` in, logits out, one rounding per tensor.

    (B, 3, 256, 256) float ``pixel − 128`` (whole numbers in [-128, 127]) → ``logit`` (B, 1)
    [, ``patch_logits`` (B, 1, 126, 126)].

    * the ImageNet normalisation is folded into the stem (:func:`pixel_stem`), so the int8 input step is one
      grey level (a normalised input quantised per tensor has a step of 0.0187, more than a grey level's
      0.0171, re-rounding exactly the faint high-frequency traces the detector reads);
    * border: one row on top and one column on the left of :func:`border_pixels` per channel (the bottom/right
      padding never reaches the 126×126 grid: stem row 253 is not read by ``layer1.0.conv2``);
    * the stem kernel is pre-rounded by :func:`zero_sum_round` so brightness cannot leak into the patches;
    * BatchNorm folded into ``layer1.0`` (:func:`~ladeda_lib.runtime.fold_batchnorm`), the head ``fc`` as a 1×1
      convolution, a decision calibration folded into it (``(fc − offset) / T``);
    * with ``snap_head`` the head's weights are put exactly on their int8 grid by rescaling ``layer1.0.conv2``'s
      output channels (:func:`snap_to_grid`): a head whose terms cancel no longer loses the decision to rounding;
    * with ``correct_images`` (the calibration images) every weight is pre-rounded to its int8 grid and each
      layer's bias moved so that the int8 file matches the float model on average over those images, and the
      logit's decision threshold is put between two int8 levels (:meth:`_correct_rounding`); the graph's float
      outputs then differ from the model's by design (they are what makes the *int8* file match it);
    * mean pooling ("all", the published files): ``logit = fc(mean of features)`` — the same number in float,
      and the int8 file never rounds the large patch-logit tensor on the way to the decision; top-K students
      pool the patch map.
    Introduced in notebook 07.
    """

    def __init__(
        self,
        model: TinyLaDeDa,
        with_patches: bool = False,
        calibration: Calibration | None = None,
        round_stem: bool = True,
        equalize_images: torch.Tensor | np.ndarray | None = None,
        image_size: int = INPUT_GEOMETRY.image_size,
        snap_head: bool = True,
        correct_images: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if not has_fusable_stem(model):
            raise ExportError(
                "the pixel-input int8 graph is built for Tiny-LaDeDa with a fixed filter or raw input; "
                f"{type(model).__name__} with {getattr(model.preprocess, 'name', '?')} preprocessing is converted "
                "through the normalised-input graph instead"
            )
        weight, bias, padded = pixel_stem(model.eval())
        self.stem = nn.Conv2d(3, weight.shape[0], weight.shape[-1], bias=True)
        self.padded = padded
        self.border = tuple(float(v) for v in border_pixels(rounded=False))
        folded = fold_batchnorm(model, check=False)
        self.layer1 = folded.layer1
        self.relu = nn.ReLU()
        self.head = nn.Conv2d(weight.shape[0], 1, 1)
        offset = 0.0 if calibration is None else float(calibration.offset)
        temperature = 1.0 if calibration is None else float(calibration.temperature)
        with torch.no_grad():
            self.stem.weight.copy_(weight.float())
            self.stem.bias.copy_(bias.float())
            self.head.weight.copy_(model.fc.weight.view(1, -1, 1, 1) / temperature)
            self.head.bias.copy_((model.fc.bias - offset) / temperature)
        self.pool = copy.deepcopy(model.pool)
        self.mean_first = model.pool.k is None
        self.with_patches = with_patches
        self.equalized = equalize_images is not None
        if equalize_images is not None:
            self._equalize(torch.from_numpy(pixel_images(equalize_images)))
        self.head_snapped = snap_head
        if snap_head:
            snap_to_grid(self.layer1[0].conv2, self.head)
        float_stem = self.stem.weight.detach().clone()
        if round_stem:
            taps, scale = zero_sum_round(weight if not self.equalized else self.stem.weight, zero_sum=padded)
            with torch.no_grad():
                self.stem.weight.copy_((taps * scale.view(-1, 1, 1, 1)).float())
        if self.mean_first:
            # mean pooling + head as ONE convolution over the whole patch grid: (B, 8, h, w) → (B, 1, 1, 1).
            # Its int32 accumulator sums every patch; no int8 tensor of mean features (measured: 256 levels over
            # the mean features' range moved calibrated decisions) and no int8 patch-logit tensor on the way.
            grid = model.grid_size(image_size)
            self.pooled_head = nn.Conv2d(weight.shape[0], 1, grid)
            with torch.no_grad():
                self.pooled_head.weight.copy_(self.head.weight.expand(1, -1, grid, grid) / grid**2)
                self.pooled_head.bias.copy_(self.head.bias)
        self.eval()
        for param in self.parameters():
            param.requires_grad_(False)
        self.bias_corrected = correct_images is not None
        if correct_images is not None:
            reference = copy.deepcopy(self)
            reference.stem.weight.copy_(float_stem)
            self._correct_rounding(reference, torch.from_numpy(pixel_calibration(correct_images)))

    def _equalize(self, pixels: torch.Tensor, limit: float = 1e4) -> None:
        """Cross-layer channel equalization (see :func:`equalize_channels`) on this graph, in float."""
        block = self.layer1[0]
        pairs = ((self.stem, block.conv1), (block.conv1, block.conv2), (block.conv2, self.head))
        _equalize_pairs(pairs, self.features, pixels, limit)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if not self.padded:
            return x
        # per-channel constant padding. ONNX Pad takes one value, and onnx2tf mis-lays out Concats with border
        # rows and Pads of channel slices; whole-tensor Pads and a per-channel Mul convert cleanly:
        # pad(x, 0) + pad(0·x, 1)·b puts b_c on the border and x inside (its int8 values are whole grey levels)
        border = torch.tensor(self.border, dtype=x.dtype).view(1, 3, 1, 1)
        return F.pad(x, (1, 0, 1, 0)) + F.pad(x * 0.0, (1, 0, 1, 0), value=1.0) * border

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) ``pixel − 128`` → (B, 8, 126, 126) features."""
        return self.layer1(self.relu(self.stem(self._pad(x))))

    def _stages(
        self, x: torch.Tensor, ranges: dict[int, tuple[float, float]] | None = None, last: int = 3
    ) -> list[torch.Tensor]:
        """Pre-activations of the stem, ``layer1.0.conv1`` and ``layer1.0.conv2`` (and the logit with mean
        pooling); with ``ranges`` (stage → (low, high) of its ReLU output) each ReLU output is rounded to the 256
        levels the int8 file gives it, as the converter calibrates them (:func:`int8_round`). Stops after stage
        ``last``."""
        block = self.layer1[0]
        out, t = [], self._pad(x)
        for stage, conv in enumerate((self.stem, block.conv1, block.conv2)[: last + 1]):
            t = conv(t)
            out.append(t)
            t = t.relu()
            if ranges is not None and stage < last:
                t = int8_round(t, *ranges[stage])
        if self.mean_first and last >= 3:
            out.append(self.pooled_head(t))
        return out

    def _ranges(self, pixels: torch.Tensor, last: int = 3) -> dict[int, tuple[float, float]]:
        """Each stage's output range on ``pixels`` (ReLU outputs; the logit as it is), as the converter records it."""
        low: dict[int, float] = {}
        high: dict[int, float] = {}
        for start in range(0, len(pixels), 20):
            for stage, t in enumerate(self._stages(pixels[start : start + 20], last=last)):
                t = t.relu() if stage < 3 else t
                low[stage] = min(low.get(stage, np.inf), float(t.min()))
                high[stage] = max(high.get(stage, -np.inf), float(t.max()))
        return {stage: (low[stage], high[stage]) for stage in low}

    def _correct_rounding(self, reference: PixelInputStudent, pixels: torch.Tensor) -> None:
        """Round every weight onto its int8 grid here, then move each layer's bias so that, on ``pixels``, the
        int8 file's outputs agree with the float ``reference`` *on average* (empirical bias correction, Nagel et
        al. 2019); finally put the decision threshold halfway between two int8 levels of the logit.

        Rounding a weight by up to half a step is not noise that the mean over 15,876 patches averages away: the
        same error repeats in every patch, a systematic shift per channel. Layer by layer (stem, ``conv1``,
        ``conv2``, then the pooled head), with the layers before it rounded and corrected and every ReLU output
        rounded to its 256 levels, the mean difference to the float pre-activation — where the float one is
        positive, the values the ReLU lets through — is subtracted from that layer's bias. What remains is the
        part that varies from image to image.

        The logit's int8 levels are ``k · step`` with 0 among them, so a logit a hair below 0 rounds to exactly 0,
        a "fake". Shifting the logit by ``−step / 2`` puts the threshold between the levels ``−step`` and ``0``:
        rounding the output can then no longer flip a decision (the reported logit is at most one step low). With
        top-K pooling the shift goes into the head, so the patch map is reported half a logit step low as well.
        """
        block = self.layer1[0]
        for conv in (block.conv1, block.conv2):
            taps, scale = zero_sum_round(conv.weight, zero_sum=False)
            conv.weight.copy_((taps * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        biases = [self.stem.bias, block.conv1.bias, block.conv2.bias]
        if self.mean_first:
            biases.append(self.pooled_head.bias)
        for stage, bias in enumerate(biases):
            ranges = self._ranges(pixels, last=stage - 1) if stage > 0 else {}
            shift = torch.zeros_like(bias, dtype=torch.float64)
            count = torch.zeros_like(shift)
            for start in range(0, len(pixels), 20):
                batch = pixels[start : start + 20]
                want = reference._stages(batch, last=stage)[stage]
                got = self._stages(batch, ranges, last=stage)[stage]
                active = (want > 0).to(want.dtype) if stage < 3 else torch.ones_like(want)
                shift += ((got - want) * active).sum(dim=(0, 2, 3)).double()
                count += active.sum(dim=(0, 2, 3)).double()
            bias.sub_((shift / count.clamp_min(1)).to(bias.dtype))
        low, high = np.inf, -np.inf
        for start in range(0, len(pixels), 20):
            out = self(pixels[start : start + 20])
            logit = out[0] if isinstance(out, tuple) else out
            low, high = min(low, float(logit.min())), max(high, float(logit.max()))
        half_step = (max(high, 0.0) - min(low, 0.0)) / 255 / 2
        # top-K: every patch logit moves by the same amount, so the pooled logit does too
        (self.pooled_head if self.mean_first else self.head).bias.sub_(half_step)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        patches = self.head(feats)
        if self.mean_first:
            logit = self.pooled_head(feats).flatten(1)
        else:
            logit = self.pool(patches)
        return (logit, patches) if self.with_patches else logit


def pixel_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) images (or normalised float ones) → float32 ``pixel − 128``, the pixel graph's input."""
    tensor = torch.as_tensor(images)
    if tensor.dtype == torch.uint8:
        return (tensor.float() - 128.0).numpy()
    return normalised_to_pixels(tensor.float().numpy())


def export_pixel_onnx(graph: PixelInputStudent, path: str | Path, image_size: int = 256) -> Path:
    """Export a :class:`PixelInputStudent` to ONNX (opset 17): input :data:`PIXEL_INPUT_NAME` (1, 3, S, S)
    float → ``logit`` [, ``patch_logits``]; checked against PyTorch with onnxruntime (relative 1e-4)."""
    import onnx

    from ladeda_lib.export.onnx_export import DEFAULT_OPSET, run_onnxruntime

    path = Path(path)
    example = torch.randint(-128, 128, (1, 3, image_size, image_size), generator=torch.Generator().manual_seed(0))
    example = example.float()
    names = [LOGIT_NAME, PATCH_NAME] if graph.with_patches else [LOGIT_NAME]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=[PIXEL_INPUT_NAME],
            output_names=names,
            opset_version=DEFAULT_OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
        expected = graph(example)
    # the tracer computes F.pad's pads with a chain of shape ops; onnx2tf mis-reads that chain (the patch map came
    # out 126×125 with batch 2), so fold it into constants first (onnx-graphsurgeon ships with onnx2tf)
    import onnx_graphsurgeon as gs

    folded = gs.import_onnx(onnx.load(str(path)))
    folded.fold_constants().cleanup().toposort()
    onnx.save(gs.export_onnx(folded), str(path))
    onnx.checker.check_model(onnx.load(str(path)))
    expected = expected if isinstance(expected, tuple) else (expected,)
    for name, want, have in zip(names, expected, run_onnxruntime(path, example.numpy()), strict=True):
        scale = max(1.0, float(want.abs().max()))
        if float(np.abs(want.numpy() - have).max()) > 1e-4 * scale:
            raise ExportError(f"{path}: onnxruntime output {name!r} differs from PyTorch beyond 1e-4 of {scale:.3g}")
    return path


def pixel_calibration(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """The pixel graph's int8 calibration data: ``pixel − 128`` of ``images``, spanning exactly [-128, 127].

    The converter sets the input's scale from the calibration data's range; only a range of exactly
    [-128, 127] gives scale 1 and zero point 0 (one grey level per int8 step, no re-rounding of the input).
    When the images never reach 0 or 255, one pixel in a corner of the first image is set to the missing
    extreme (one pixel of one image; it moves the other tensors' ranges negligibly).
    """
    pixels = pixel_images(images).copy()
    if pixels.min() > -128:
        pixels[0, :, -1, -1] = -128.0
    if pixels.max() < 127:
        pixels[0, :, -1, 0] = 127.0
    return pixels


#: int8 graphs ``convert_int8(graph="auto")`` tries: (graph, equalize, head on grid, bias corrected) → label.
INT8_CANDIDATES = {
    ("pixel", False, True, True): "pixel input + head on grid + bias corrected",
    ("pixel", True, True, True): "pixel input + equalized + head on grid + bias corrected",
    ("factorised", True, False, False): "factorised + equalized",
}


def convert_int8(
    model: PatchDetector,
    folder: str | Path,
    stem: str,
    calibration_images: torch.Tensor | np.ndarray,
    with_patches: bool = False,
    nhwc: bool = False,
    decision_calibration: Calibration | None = None,
    equalize: bool = False,
    graph: str = "auto",
    snap_head: bool = True,
    correct_bias: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Write ``<folder>/<stem>_int8.tflite``, the full-int8 file, calibrated on ``calibration_images``.

    Graphs (``benchmarks/int8_study.md`` compares them):

    * ``"pixel"``: the :class:`PixelInputStudent` — pixel input, zero-sum pre-rounded fused stem, mean pooling and
      head as one convolution; the file's input is named :data:`PIXEL_INPUT_NAME` and every predictor feeds it
      ``pixel − 128``. Tiny-LaDeDa with a fixed filter or raw input only.
    * ``"factorised"``: the normalised-input graph with the filter, ``conv1`` and ``conv2`` kept apart, channels
      equalized (the teacher and NPR students, whose preprocessing is not a convolution, get only this).
    * ``"auto"`` (default): for Tiny-LaDeDa with a fixed filter or raw input, converts the pixel graph with its
      head on the int8 grid (:func:`snap_to_grid`) and its biases corrected for rounding, with and without
      channel equalization, and the factorised graph (:data:`INT8_CANDIDATES`), and keeps the file whose logits
      are closest to the float model's on the calibration images (smallest mean |Δ logit|: a continuous
      measure, where the agreement of 100 images moves in 1 % steps and picked the worse file for our toy
      student) — which one wins depends on the student (measured in the study); otherwise the factorised graph.

    Args:
        model: the detector; calibration_images: representative images (N, 3, 256, 256), uint8 or normalised.
        with_patches, nhwc: as for :func:`~ladeda_lib.export.chain.export_model`.
        decision_calibration: offset/temperature baked into the graph (the logits compared are calibrated).
        equalize, snap_head, correct_bias: with ``graph="pixel"``, cross-layer channel equalization first, the
            head's weights put on their int8 grid (:func:`snap_to_grid`) — both keep the float outputs — and the
            biases corrected for rounding on the calibration images (:class:`PixelInputStudent`).
        graph: ``"auto"``, ``"pixel"`` or ``"factorised"``.
    Returns:
        (the int8 file, ``{"graph": …, "input": …, "candidates": …}`` saying which graph was converted, what it
        takes, and each candidate's agreement on the calibration images when several were tried).
    """
    if calibration_images is None:
        raise ExportError(
            "full int8 quantization needs representative calibration images (real training images through the "
            "same preprocessing, about 100); pass calibration=uint8 tensor (N, 3, 256, 256)"
        )
    if graph == "auto":
        candidates = list(INT8_CANDIDATES) if has_fusable_stem(model) else [("factorised", True, False, False)]
    elif graph == "pixel":
        candidates = [("pixel", equalize, snap_head, correct_bias)]
    elif graph == "factorised":
        candidates = [("factorised", True, False, False)]
    else:
        raise ExportError(f"unknown int8 graph {graph!r}; choose auto, pixel or factorised")
    folder = Path(folder)
    if len(candidates) == 1:
        return _convert_one(
            model, candidates[0], folder, stem, calibration_images, with_patches, nhwc, decision_calibration
        )
    scores: dict[str, dict[str, float]] = {}
    best: tuple[float, Path, dict[str, Any]] | None = None
    with tempfile.TemporaryDirectory(prefix="ladeda_int8_pick_") as tmp:
        for i, candidate in enumerate(candidates):
            path, info = _convert_one(
                model, candidate, Path(tmp) / str(i), stem, calibration_images, with_patches, nhwc, decision_calibration
            )
            agreement, max_abs, mean_abs = _decision_agreement(model, path, calibration_images, decision_calibration)
            scores[INT8_CANDIDATES[candidate]] = {"agreement": agreement, "max_abs": max_abs, "mean_abs": mean_abs}
            if best is None or mean_abs < best[0]:
                best = (mean_abs, path, info)
        assert best is not None
        target = check_writable_folder(folder) / best[1].name
        shutil.copyfile(best[1], target)
    return target, {**best[2], "candidates (on calibration images)": scores}


def _decision_agreement(
    model: PatchDetector,
    path: Path,
    images: torch.Tensor | np.ndarray,
    calibration: Calibration | None,
) -> tuple[float, float, float]:
    """(decision agreement, max |Δ logit|, mean |Δ logit|) of an int8 file against the float model on ``images``."""
    x = normalised_images(images)
    with torch.no_grad():
        ref = torch.cat([model.eval()(torch.from_numpy(x[i : i + 16])) for i in range(0, len(x), 16)]).numpy()
    if calibration is not None:
        ref = calibration.apply(ref)
    got, _ = load_predictor(path)(x)
    ref, got = ref.reshape(-1), got.reshape(-1)
    return float(np.mean((got >= 0) == (ref >= 0))), float(np.abs(got - ref).max()), float(np.abs(got - ref).mean())


def _convert_one(
    model: PatchDetector,
    candidate: tuple[str, bool, bool, bool],
    folder: Path,
    stem: str,
    calibration_images: torch.Tensor | np.ndarray,
    with_patches: bool,
    nhwc: bool,
    decision_calibration: Calibration | None,
) -> tuple[Path, dict[str, Any]]:
    graph, equalize, snap_head, correct_bias = candidate
    if graph == "factorised":
        return _convert_factorised(model, folder, stem, calibration_images, with_patches, nhwc, decision_calibration)
    pixel_graph = PixelInputStudent(
        model,
        with_patches,
        decision_calibration,
        equalize_images=calibration_images if equalize else None,
        snap_head=snap_head,
        correct_images=calibration_images if correct_bias else None,
    )
    with tempfile.TemporaryDirectory(prefix="ladeda_int8_") as tmp:
        source = export_pixel_onnx(pixel_graph, Path(tmp) / f"{stem}.onnx")
        data = pixel_calibration(calibration_images)
        path = convert_to_tflite(source, folder, ("int8",), calibration=data, nhwc=nhwc, stem=stem)["int8"]
    info = {
        "graph": "pixel input, zero-sum int8 stem"
        + (", mean pooling and head as one convolution" if pixel_graph.mean_first else "")
        + (", channels equalized" if equalize else "")
        + (", head on the int8 grid" if snap_head else "")
        + (", biases corrected for rounding" if correct_bias else ""),
        "input": f"{PIXEL_INPUT_NAME}: pixel - 128",
    }
    return path, info


def _convert_factorised(
    model: PatchDetector,
    folder: str | Path,
    stem: str,
    calibration_images: torch.Tensor | np.ndarray,
    with_patches: bool,
    nhwc: bool,
    decision_calibration: Calibration | None,
    equalize: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """The normalised-input int8 file: factorised stem, channels equalized for Tiny-LaDeDa."""
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
