"""The deployed student graph: the same network, laid out so that LiteRT runs it fast.

Two rewrites, both exact (the same outputs up to float rounding; checked when the graph is built):

* **Column pairs.** At full resolution Tiny-LaDeDa has only 8 channels, and XNNPACK (LiteRT's CPU kernels)
  ran a convolution with 8 outputs at about half the multiply-add rate of one with 16 (measured on the
  2-core x86 machine, ``benchmarks/RESULTS.md``). So every full-resolution map is stored with each pair of
  neighbouring columns side by side in the channels: column ``2j + p`` of an 8-channel map is column ``j``
  of channels ``8p … 8p + 7``, 16 channels at half the width. The fixed filter runs as its own small
  convolution writing column pairs; ``conv1``, ``conv2`` and ``bn1`` (linear, nothing in between) run as one
  3×3 convolution on the pairs — 27 multiply-adds per output instead of the 75 of the fused 5×5 stem —
  ``layer1``'s 1×1 convolution is block-diagonal on the pairs, and its stride-2 3×3 convolution reads the
  pairs and writes the patch grid in the ordinary layout, so the patch map comes out as before.
* **Pre-sorted top-K.** LiteRT's ``TOPK_V2`` keeps a heap of the best values seen so far: cheap when the
  largest values come first (0.05 ms for 1,588 of 15,876 patch logits), dear when they come last (0.7 ms),
  about 0.3 ms on real patch maps. Two rounds of pairwise ``max``/``min`` between the halves of the flattened
  map put the maximum of every group of four values in the first quarter (a third round, of eight in the
  first eighth, saves a little more). That only reorders the values — the top K are the same values, so their
  mean is exactly the same — and LiteRT's top-K alone then costs about a third.

:func:`deployable_student` builds this graph for ``ladeda export`` (the float files) and falls back to
:class:`~ladeda_lib.graphs.fused.FusedTinyLaDeDa` where it does not apply (an odd input width).
Introduced in notebook 08.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ladeda_lib.geometry import INPUT_GEOMETRY
from ladeda_lib.graphs.fused import FusedTinyLaDeDa, check_same, fold_batchnorm, fuse_student_stem, stem_kernel
from ladeda_lib.models import PatchDetector, TinyLaDeDa, TopKPool
from ladeda_lib.models.preprocessing import FixedFilter, Identity


def column_pair_conv(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    pairs_in: bool,
    pairs_out: bool,
    padding: int = 0,
) -> nn.Conv2d:
    """The convolution ``weight`` (Co, Ci, kh, kw) with ``stride``, rewritten for column-pair layouts.

    ``pairs_in``/``pairs_out``: whether the input/output map stores column ``2j + p`` as column ``j`` of
    channel block ``p``. The result reads and writes those layouts and computes exactly the same sums
    (unused taps are zero). ``padding`` is the original convolution's, allowed only on an ordinary input.
    """
    p_in, p_out = (2 if pairs_in else 1), (2 if pairs_out else 1)
    if pairs_in and padding:
        raise ValueError("padding cannot be applied to a column-pair input")
    co, ci, kh, kw = weight.shape
    sh, sw = stride
    if (sw * p_out) % p_in:
        raise ValueError(f"horizontal stride {sw} cannot map {p_in} input phases to {p_out} output phases")
    blocks = (sw * (p_out - 1) + kw - 1) // p_in + 1
    paired = torch.zeros(p_out * co, p_in * ci, kh, blocks, dtype=torch.float64)
    for q in range(p_out):  # output column u·p_out + q reads input columns sw·(u·p_out + q) + t
        for t in range(kw):
            block, phase = divmod(sw * q + t, p_in)
            paired[q * co : (q + 1) * co, phase * ci : (phase + 1) * ci, :, block] += weight[:, :, :, t].double()
    conv = nn.Conv2d(p_in * ci, p_out * co, (kh, blocks), stride=(sh, sw * p_out // p_in), padding=padding,
                     bias=bias is not None)  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(paired.float())
        if bias is not None:
            conv.bias.copy_(bias.double().repeat(p_out).float())
    return conv


class PresortedTopKPool(TopKPool):
    """:class:`~ladeda_lib.models.TopKPool` with the values reordered first (block maxima to the front).

    The same K values are selected and averaged, so the result is exactly the plain pool's; only LiteRT's
    top-K, whose cost depends on the order it meets the values in, runs faster. (B, 1, H, W) → (B, 1).
    """

    rounds = 3

    def forward(self, patch_logits: torch.Tensor) -> torch.Tensor:
        flat = patch_logits.flatten(1)
        k = self.num_selected(flat.shape[1])
        if k == flat.shape[1]:
            return flat.mean(dim=1, keepdim=True)
        return presort(flat, self.rounds).topk(k, dim=1).values.mean(dim=1, keepdim=True)


def presort(values: torch.Tensor, rounds: int = 3) -> torch.Tensor:
    """(B, N) → (B, N): the same values per row, reordered by ``rounds`` of pairwise max/min between halves.

    After one round the first half holds the larger of each pair, after two the first quarter the largest of
    each group of four, and so on. The last value of a segment of odd length stays behind, in its own segment.
    """
    segments = [values]
    for _ in range(rounds):
        nxt = []
        for seg in segments:
            half = seg.shape[1] // 2
            if half == 0:
                nxt.append(seg)
                continue
            first, second = seg[:, :half], seg[:, half : 2 * half]
            nxt += [torch.maximum(first, second), torch.minimum(first, second)]
            if seg.shape[1] % 2:
                nxt.append(seg[:, 2 * half :])
        segments = nxt
    return torch.cat(segments, dim=1)


class ColumnPairTinyLaDeDa(PatchDetector):
    """Tiny-LaDeDa with its full-resolution maps in column pairs and a pre-sorted top-K (see module doc).

    (B, 3, H, W) normalised → (B, 1, h, w) patch logits and (B, 1) image logits, the same as the model it was
    built from (to float rounding). ``W`` must be even (every 256×256 input is); :class:`ValueError` otherwise.
    """

    arch = "TinyLaDeDa"

    def __init__(self, model: TinyLaDeDa) -> None:
        super().__init__(model.pool.spec)
        self.pool = PresortedTopKPool(model.pool.spec)
        if isinstance(model.preprocess, FixedFilter):
            kernel = model.preprocess.kernel.double()  # (3, 1, 3, 3), one 3×3 per channel
            dense = torch.zeros(3, 3, 3, 3, dtype=torch.float64)
            for c in range(3):
                dense[c, c] = kernel[c, 0]
            self.filter: nn.Module = column_pair_conv(dense, None, (1, 1), False, True, padding=1)
            pairs_in = True
        elif isinstance(model.preprocess, Identity):
            self.filter = nn.Identity()
            pairs_in = False
        else:
            raise ValueError(f"the {model.preprocess.name} preprocessing is not a convolution; it cannot be laid out")
        merged, bias, _ = stem_kernel(model, with_filter=False)  # conv1 · conv2 · bn1: one 3×3 convolution
        self.stem = column_pair_conv(merged, bias, (1, 1), pairs_in, True)
        block = fold_batchnorm(model, check=False).layer1[0]
        self.conv3 = column_pair_conv(block.conv1.weight, block.conv1.bias, (1, 1), True, True)
        self.conv4 = column_pair_conv(block.conv2.weight, block.conv2.bias, (2, 2), True, False)
        self.fc = copy.deepcopy(model.fc)
        self._geometry = model.geometry()
        self._config = model.config()
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2:
            raise ValueError(f"the column-pair graph needs an even input width, got {x.shape[-1]}")
        x = F.relu(self.stem(self.filter(x)))
        x = F.relu(self.conv3(x))
        return F.relu(self.conv4(x))

    def geometry(self):  # the same geometry as the layers it replaces
        return self._geometry

    def config(self) -> dict[str, Any]:
        return dict(self._config)


def deployable_student(
    model: TinyLaDeDa, image_size: int = INPUT_GEOMETRY.image_size
) -> ColumnPairTinyLaDeDa | FusedTinyLaDeDa:
    """The graph the float export uses: :class:`ColumnPairTinyLaDeDa` for an even ``image_size``,
    :class:`~ladeda_lib.graphs.fused.FusedTinyLaDeDa` otherwise; either is checked against ``model``."""
    if image_size % 2:
        return fuse_student_stem(model)
    laid_out = ColumnPairTinyLaDeDa(model)
    check_same(model, laid_out, "laying the student out in column pairs")
    return laid_out


__all__ = ["ColumnPairTinyLaDeDa", "PresortedTopKPool", "column_pair_conv", "deployable_student", "presort"]
