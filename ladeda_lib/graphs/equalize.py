"""Cross-layer channel equalization: the same float outputs, channels whose ranges an int8 tensor can share.

A full-int8 file quantizes each activation tensor with *one* step for all its channels; ReLU is
positive-homogeneous, so each channel can be rescaled and the next layer's weights on it divided by the same
factor (Nagel et al. 2019). :func:`equalize_channels` does it for a Tiny-LaDeDa; :func:`equalize_pairs` for any
chain of (producer, consumer) layers (the pixel-input graph uses it too). Introduced in notebook 08.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ladeda_lib.data.images import normalised_images
from ladeda_lib.graphs.fused import fold_batchnorm
from ladeda_lib.models import TinyLaDeDa


def equalize_pairs(
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
    equalize_pairs(pairs, folded.patch_logits, x, limit)
    return folded
