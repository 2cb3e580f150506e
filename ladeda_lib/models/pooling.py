"""Top-K pooling: from a map of patch logits to one image logit.

The image logit is the mean of the K highest patch logits. A few strongly "fake" patches are enough
to flag an image — useful when only a region was generated — while averaging over K patches keeps the
score stable. K = all patches is the published mean pooling; K = 1 is max pooling.
Introduced in notebook 01.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Default K for teacher and student alike: the top 10 % of patches (97 of 961 teacher patches,
#: 1,588 of 15,876 student patches at 256×256).
DEFAULT_TOPK: float = 0.1

KSpec = int | float | str | None


def parse_k(k: KSpec) -> int | float | None:
    """Normalise a K specification: ``None``/``"all"`` → None; ``"0.1"`` → 0.1; ``"8"`` → 8."""
    if k is None or (isinstance(k, str) and k.lower() in {"all", "mean"}):
        return None
    if isinstance(k, str):
        k = float(k) if any(c in k for c in ".eE") else int(k)
    if isinstance(k, bool):
        raise TypeError("K must be a count, a fraction or 'all', not a bool")
    if isinstance(k, float):
        if not 0.0 < k <= 1.0:
            raise ValueError(f"a fractional K must lie in (0, 1], got {k}")
        return k
    if isinstance(k, int):
        if k < 1:
            raise ValueError(f"K must be at least 1, got {k}")
        return k
    raise TypeError(f"K must be an int, a float fraction or 'all', got {type(k).__name__}")


class TopKPool(nn.Module):
    """Mean of the K highest patch logits. (B, 1, H, W) → (B, 1); differentiable; any grid size.

    ``k`` is a fraction of the patches (``0 < k <= 1``, rounded up, at least 1), a count (int ≥ 1,
    capped at the number of patches) or ``"all"``/``None`` for the plain mean (published pooling).
    """

    def __init__(self, k: KSpec = DEFAULT_TOPK) -> None:
        super().__init__()
        self.k = parse_k(k)

    def num_selected(self, num_patches: int) -> int:
        """How many patches are averaged for a grid of ``num_patches``."""
        if self.k is None:
            return num_patches
        if isinstance(self.k, float):
            return max(1, min(num_patches, math.ceil(self.k * num_patches - 1e-9)))
        return min(self.k, num_patches)

    def forward(self, patch_logits: torch.Tensor) -> torch.Tensor:
        flat = patch_logits.flatten(1)
        k = self.num_selected(flat.shape[1])
        if k == flat.shape[1]:
            return flat.mean(dim=1, keepdim=True)
        return flat.topk(k, dim=1).values.mean(dim=1, keepdim=True)

    def extra_repr(self) -> str:
        return f"k={'all' if self.k is None else self.k}"

    def warmup(self, num_patches: int, epoch: int, warmup_epochs: int) -> int:
        """How many patches a training loss pools in epoch ``epoch`` (from 0) of a pooling warm-up.

        All of them in the first epoch (the plain mean: every patch gets a gradient), then geometrically fewer,
        and this pool's K from epoch ``warmup_epochs`` on. With top-K alone, the gradient of an untrained
        network reaches only the K patches it already scores highest — edges of the scene, not the generator's
        trace — and some seeds sit at chance for tens of epochs (measured in ``docs/results.md``).
        """
        k = self.num_selected(num_patches)
        if epoch >= warmup_epochs or k >= num_patches:
            return k
        return max(k, min(num_patches, round(num_patches * (k / num_patches) ** (epoch / warmup_epochs))))

    @property
    def spec(self) -> str | int | float:
        """K as stored in checkpoint metadata."""
        return "all" if self.k is None else self.k
