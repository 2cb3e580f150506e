"""The full-int8 student graph: ``pixel − 128`` in, logits out, built so that one rounding per tensor keeps
the float model's decisions.

A full-int8 file stores every tensor with one step per tensor: ``real = (q − zero_point) · scale``, 256 levels
between the calibrated minimum and maximum, and every weight with 255 levels per output channel. A student whose
patch logits span ±400 (the published WildRF file on the toy images) gets a patch-logit step of about 3, and the
image logit — the mean of thousands of such patch logits, a few units from the threshold — is no longer decided
by the model. :class:`PixelInputStudent` is the graph :func:`ladeda_lib.export.int8.convert_int8` converts for
Tiny-LaDeDa with a fixed filter or raw input: pixel input, zero-sum pre-rounded stem (:func:`zero_sum_round`),
mean pooling and head as one convolution, the head's weights on their grid (:func:`snap_to_grid`), biases
corrected for rounding. ``benchmarks/int8_study.md`` measures every piece. Introduced in notebook 08.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ladeda_lib.contract import DecisionCalibration
from ladeda_lib.geometry import INPUT_GEOMETRY
from ladeda_lib.graphs.equalize import equalize_pairs
from ladeda_lib.graphs.fused import fold_batchnorm, has_fusable_stem, stem_kernel
from ladeda_lib.models import TinyLaDeDa


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
        rounded kernel. Works behind notebook 08.
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
    """The fused stem (:func:`~ladeda_lib.graphs.fused.stem_kernel`) re-expressed for ``pixel − 128`` input.

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
        raise ValueError(
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
    * BatchNorm folded into ``layer1.0`` (:func:`~ladeda_lib.graphs.fused.fold_batchnorm`), the head ``fc`` as a 1×1
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
    Introduced in notebook 08.
    """

    def __init__(
        self,
        model: TinyLaDeDa,
        with_patches: bool = False,
        decision_calibration: DecisionCalibration | None = None,
        round_stem: bool = True,
        equalize_images: torch.Tensor | np.ndarray | None = None,
        image_size: int = INPUT_GEOMETRY.image_size,
        snap_head: bool = True,
        correct_images: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if not has_fusable_stem(model):
            raise ValueError(
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
        offset = 0.0 if decision_calibration is None else float(decision_calibration.offset)
        temperature = 1.0 if decision_calibration is None else float(decision_calibration.temperature)
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
            self._correct_rounding(reference, torch.from_numpy(representative_pixels(correct_images)))

    def _equalize(self, pixels: torch.Tensor, limit: float = 1e4) -> None:
        """Cross-layer channel equalization (see :func:`equalize_channels`) on this graph, in float."""
        block = self.layer1[0]
        pairs = ((self.stem, block.conv1), (block.conv1, block.conv2), (block.conv2, self.head))
        equalize_pairs(pairs, self.features, pixels, limit)

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


def normalised_to_pixels(x: np.ndarray) -> np.ndarray:
    """Normalised float images (B, 3, H, W) → ``pixel − 128`` float32 in [-128, 127], same shape.

    Inverts the shared normalisation (:data:`~ladeda_lib.geometry.INPUT_GEOMETRY`) and rounds to whole grey
    levels: exact for images that came from uint8, which is what the pixel-input int8 file expects
    (:data:`~ladeda_lib.contract.PIXEL_INPUT_NAME`). Works behind notebook 08.
    """
    mean = np.asarray(INPUT_GEOMETRY.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(INPUT_GEOMETRY.std, np.float32).reshape(1, 3, 1, 1)
    pixels = np.round((np.asarray(x, np.float32) * std + mean) * 255.0)
    return (np.clip(pixels, 0, 255) - 128.0).astype(np.float32)


def representative_pixels(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """The pixel graph's int8 representative data: ``pixel − 128`` of ``images``, spanning exactly [-128, 127].

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
