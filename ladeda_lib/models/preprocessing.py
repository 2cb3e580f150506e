"""Fixed (not learned) preprocessing applied inside the models.

LaDeDa looks at local traces, not at content, so both networks first turn the image into a residual:

* ``"NPR"`` — neighbouring-pixel relations, ``x − up2(down2(x))`` with nearest-neighbour resampling.
  Zero wherever 2×2 blocks are constant, i.e. it exposes what an upsampling generator leaves behind.
* ``"right_diag"`` / ``"left_diag"`` — a diagonal gradient (3×3, per channel, "same" padding);
  ``right_diag`` is Tiny-LaDeDa's default.
* ``"x_grad"`` / ``"y_grad"`` — Sobel gradients; ``"raw"`` — the image unchanged.

None of them has learnable parameters or state_dict entries, so published checkpoints load strictly.
Introduced in notebook 02.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ladeda_lib.geometry import LayerSpec

KERNELS: dict[str, list[list[float]]] = {
    "right_diag": [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]],
    "left_diag": [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],
    "x_grad": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "y_grad": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
}
PREPROCESS_CHOICES = ("raw", "NPR", *KERNELS)


class Identity(nn.Module):
    """``"raw"``: the image unchanged. (B, 3, H, W) → (B, 3, H, W)."""

    name = "raw"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def layer_specs(self) -> list[LayerSpec]:
        return []


class NPR(nn.Module):
    """Neighbouring-pixel relations: ``x − up2(down2(x))``, both nearest. (B, 3, H, W) → (B, 3, H, W).

    Pixel ``p`` depends on itself and on ``2·⌊p/2⌋``; on the even-aligned grids of the models that stays
    inside the patch, so NPR adds nothing to the receptive field (tests check this with gradients).
    """

    name = "NPR"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = F.interpolate(x, scale_factor=0.5, mode="nearest")
        up = F.interpolate(down, scale_factor=2.0, mode="nearest")
        if up.shape[-2:] != x.shape[-2:]:  # odd sizes: the last row/column is compared with itself
            up = F.pad(up, (0, x.shape[-1] - up.shape[-1], 0, x.shape[-2] - up.shape[-2]), mode="replicate")
        return x - up

    def layer_specs(self) -> list[LayerSpec]:
        return [LayerSpec(1, 1, 0, "NPR")]


class FixedFilter(nn.Module):
    """A fixed 3×3 filter applied to each RGB channel, "same" padding. (B, 3, H, W) → (B, 3, H, W)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        kernel = torch.tensor(KERNELS[name], dtype=torch.float32)
        # persistent=False: not in the state_dict, so published checkpoints load strictly.
        self.register_buffer("kernel", kernel.expand(3, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel.to(x.dtype), padding=1, groups=3)

    def layer_specs(self) -> list[LayerSpec]:
        return [LayerSpec(3, 1, 1, self.name)]


def make_preprocess(name: str) -> nn.Module:
    """Build the preprocessing module called ``name`` (one of :data:`PREPROCESS_CHOICES`)."""
    if name == "raw":
        return Identity()
    if name == "NPR":
        return NPR()
    if name in KERNELS:
        return FixedFilter(name)
    raise ValueError(f"unknown preprocess {name!r}; choose one of {', '.join(PREPROCESS_CHOICES)}")
