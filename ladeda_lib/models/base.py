"""What teacher and student share: patch logits, top-K pooling and patch geometry."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ladeda_lib.geometry import INPUT_GEOMETRY, LayerSpec, PatchGeometry, trace_geometry
from ladeda_lib.models.pooling import DEFAULT_TOPK, KSpec, TopKPool


class PatchDetector(nn.Module):
    """A network that scores every patch of an image and pools the scores into one image logit.

    Subclasses build ``self.preprocess`` and define :meth:`features`, :meth:`main_path_specs` and
    :meth:`config`. ``forward`` returns the pooled logit (B, 1); :meth:`patch_logits` the map.
    """

    arch: str = ""

    def __init__(self, pool: KSpec = DEFAULT_TOPK) -> None:
        super().__init__()
        self.pool = TopKPool(pool)

    # -- to be provided by subclasses -------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def main_path_specs(self) -> list[LayerSpec]:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared behaviour ---------------------------------------------------------------------------
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits: (B, 3, H, W) normalised images → (B, 1, h, w) (``h = geometry().grid_size(H)``).

        The linear head ``fc`` is applied at every position (as a 1×1 convolution with fc's weights).
        """
        feats = self.features(x)
        return nn.functional.conv2d(feats, self.fc.weight[:, :, None, None], self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image logit: (B, 3, H, W) → (B, 1), top-K pooled patch logits."""
        return self.pool(self.patch_logits(x))

    def forward_with_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs at once: (B, 3, H, W) → ((B, 1) image logits, (B, 1, h, w) patch logits)."""
        patches = self.patch_logits(x)
        return self.pool(patches), patches

    def geometry(self) -> PatchGeometry:
        """Receptive field, stride and offset of the patch logits, derived from the layers."""
        return trace_geometry(self.main_path_specs())

    def grid_size(self, input_size: int = INPUT_GEOMETRY.image_size) -> int:
        """Side of the patch-logit grid for a square ``input_size`` input (256 → 31 or 126)."""
        return self.geometry().grid_size(input_size)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of (learnable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def freeze(self) -> PatchDetector:
        """Eval mode and no gradients for every parameter — how a teacher is used. Returns self."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self
