"""LaDeDa, the teacher: a ResNet-50-style network whose every output sees one small patch (9×9 pixels).

The layout matches the published ``LaDeDa9`` exactly at ``width=64`` (13,641,793 parameters, the
published state_dict keys), so ``WildRF_LaDeDa.pth`` loads strictly. A smaller ``width`` keeps the
same geometry — 31×31 patch grid at 256×256, stride 8, receptive field 9 (11 when the preprocessing filter
reaches one pixel further, as the shipped compact teacher's does; notebook 01) — at a fraction of the cost.
Introduced in notebook 01.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ladeda_lib.geometry import LayerSpec, conv_spec
from ladeda_lib.models.base import PatchDetector
from ladeda_lib.models.pooling import DEFAULT_TOPK, KSpec
from ladeda_lib.models.preprocessing import make_preprocess

#: Blocks per stage, as in ResNet-50.
LAYERS = (3, 4, 6, 3)
#: Stride of each stage, applied in the first block's conv2.
STRIDES = (2, 2, 2, 1)
#: Kernel of the first block's conv2 in each stage (3×3 only in layer1 and layer2; all others 1×1).
FIRST_KERNELS = (3, 3, 1, 1)


class Bottleneck(nn.Module):
    """ResNet bottleneck with no padding: 1×1 → k×k (stride) → 1×1 (×4 channels), plus a residual.

    (B, C_in, H, W) → (B, 4·planes, H', W'). When the residual is larger than the output (no padding
    shrinks the main path), it is cropped at the bottom/right.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        h, w = out.shape[-2:]
        if identity.shape[-2:] != (h, w):
            identity = identity[..., :h, :w]
        return self.relu(out + identity)

    def layer_specs(self, prefix: str) -> list[LayerSpec]:
        return [conv_spec(getattr(self, f"conv{i}"), f"{prefix}.conv{i}") for i in (1, 2, 3)]


class LaDeDa(PatchDetector):
    """The LaDeDa teacher. (B, 3, 256, 256) → patch logits (B, 1, 31, 31) → image logit (B, 1).

    Args:
        width: channels of the stem (64 = published); stage planes are width, 2·, 4·, 8·width.
        preprocess: fixed residual fed to the network (published: ``"NPR"``).
        pool: top-K of the patch logits (see :class:`~ladeda_lib.models.pooling.TopKPool`).
    """

    arch = "LaDeDa"

    def __init__(self, width: int = 64, preprocess: str = "NPR", pool: KSpec = DEFAULT_TOPK) -> None:
        super().__init__(pool)
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        self.width = width
        self.preprocess = make_preprocess(preprocess)
        self.conv1 = nn.Conv2d(3, width, 1, bias=False)
        self.conv2 = nn.Conv2d(width, width, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for index, (blocks, stride, kernel) in enumerate(zip(LAYERS, STRIDES, FIRST_KERNELS, strict=True)):
            planes = width * 2**index
            stage = [Bottleneck(inplanes, planes, kernel, stride)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.fc = nn.Linear(inplanes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 32·width, h, w) features, one vector per patch."""
        x = self.preprocess(x)
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def main_path_specs(self) -> list[LayerSpec]:
        specs = [*self.preprocess.layer_specs(), conv_spec(self.conv1, "conv1"), conv_spec(self.conv2, "conv2")]
        for index in range(1, 5):
            for b, block in enumerate(getattr(self, f"layer{index}")):
                specs += block.layer_specs(f"layer{index}.{b}")
        return specs

    def config(self) -> dict[str, Any]:
        return {"width": self.width, "preprocess": self.preprocess.name, "pool": self.pool.spec}
