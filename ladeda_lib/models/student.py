"""Tiny-LaDeDa, the student: four convolutions and 1,297 parameters.

The layout matches the published checkpoints (``WildRF_Tiny_LaDeDa.pth``, ``ForenSynth_Tiny_LaDeDa.pth``)
key for key, so they load strictly. At 256×256 it gives a 126×126 patch-logit map (stride 2).
Introduced in notebook 04.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ladeda_lib.geometry import LayerSpec, conv_spec
from ladeda_lib.models.base import PatchDetector
from ladeda_lib.models.pooling import DEFAULT_TOPK, KSpec
from ladeda_lib.models.preprocessing import make_preprocess

#: Channels of every Tiny-LaDeDa layer.
TINY_WIDTH = 8


class TinyBlock(nn.Module):
    """``layer1.0``: 1×1 conv · BN · ReLU · 3×3 stride-2 conv · BN · ReLU (no conv3, no residual)."""

    def __init__(self, channels: int = TINY_WIDTH) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class TinyLaDeDa(PatchDetector):
    """The Tiny-LaDeDa student. (B, 3, 256, 256) → patch logits (B, 1, 126, 126) → image logit (B, 1).

    Args:
        preprocess: fixed filter applied first (published default ``"right_diag"``).
        pool: top-K of the patch logits (see :class:`~ladeda_lib.models.pooling.TopKPool`).
    """

    arch = "TinyLaDeDa"

    def __init__(self, preprocess: str = "right_diag", pool: KSpec = DEFAULT_TOPK) -> None:
        super().__init__(pool)
        self.preprocess = make_preprocess(preprocess)
        self.conv1 = nn.Conv2d(3, TINY_WIDTH, 1, bias=False)
        self.conv2 = nn.Conv2d(TINY_WIDTH, TINY_WIDTH, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(TINY_WIDTH, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(TinyBlock())
        self.fc = nn.Linear(TINY_WIDTH, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 8, h, w) features, one vector per patch."""
        x = self.preprocess(x)
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        return self.layer1(x)

    def main_path_specs(self) -> list[LayerSpec]:
        block = self.layer1[0]
        return [
            *self.preprocess.layer_specs(),
            conv_spec(self.conv1, "conv1"),
            conv_spec(self.conv2, "conv2"),
            conv_spec(block.conv1, "layer1.0.conv1"),
            conv_spec(block.conv2, "layer1.0.conv2"),
        ]

    def config(self) -> dict[str, Any]:
        return {"preprocess": self.preprocess.name, "pool": self.pool.spec}
