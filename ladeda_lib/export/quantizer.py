"""Dynamic-range quantization in PyTorch: see what int8 weights do before converting anything.

Each convolution and linear weight is stored as int8 with one scale per output channel (symmetric:
``w ≈ q · scale``, ``q ∈ [-127, 127]``, ``scale = max|w_c| / 127``) and dequantized on the fly in
``forward`` — the idea behind TFLite's dynamic-range files. Activations stay float. The quantizer reports
the weight error per layer, and its predictions can be compared with the TFLite dynamic-range file.

One difference to keep in mind: TFLite leaves tensors with fewer than 1,024 weights in float. Every
Tiny-LaDeDa tensor is that small (the largest holds 576 weights), so its dynamic-range file is float in all
but name; ``min_elements=1024`` reproduces that rule here. Introduced in notebook 08.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ladeda_lib.export.errors import ExportError
from ladeda_lib.graphs.fused import fold_batchnorm  # one BatchNorm folding for inference and export


def quantize_per_channel(
    weight: torch.Tensor, bits: int = 8, per_channel: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization: ``weight`` (C_out, ...) → (int8 values of the same shape, scales (C_out,)).

    With ``per_channel=False`` one scale serves the whole tensor (repeated C_out times).
    """
    if bits < 2 or bits > 8:
        raise ExportError(f"bits must be between 2 and 8 for int8 storage, got {bits}")
    qmax = 2 ** (bits - 1) - 1
    flat = weight.detach().reshape(weight.shape[0], -1).float()
    peak = flat.abs().amax(dim=1) if per_channel else flat.abs().max().expand(weight.shape[0])
    scale = torch.where(peak > 0, peak / qmax, torch.ones_like(peak))
    q = torch.clamp(torch.round(flat / scale[:, None]), -qmax, qmax).to(torch.int8)
    return q.reshape(weight.shape), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 (C_out, ...) and scales (C_out,) → float32 weights of the same shape."""
    return q.float() * scale.view(-1, *([1] * (q.ndim - 1)))


class _DequantWeight(nn.Module):
    """Shared part: an int8 weight with per-channel scales; ``.weight`` is dequantized on every access."""

    def _store(self, weight: torch.Tensor, bias: torch.Tensor | None, bits: int, per_channel: bool) -> None:
        q, scale = quantize_per_channel(weight, bits, per_channel)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized float32 weight, computed from the int8 values now."""
        return dequantize(self.weight_int8, self.weight_scale)


class DequantConv2d(_DequantWeight):
    """A :class:`torch.nn.Conv2d` whose weight lives in int8 and is dequantized in ``forward``."""

    def __init__(self, conv: nn.Conv2d, bits: int = 8, per_channel: bool = True) -> None:
        super().__init__()
        self._store(conv.weight, conv.bias, bits, per_channel)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class DequantLinear(_DequantWeight):
    """A :class:`torch.nn.Linear` whose weight lives in int8 and is dequantized in ``forward``."""

    def __init__(self, linear: nn.Linear, bits: int = 8, per_channel: bool = True) -> None:
        super().__init__()
        self._store(linear.weight, linear.bias, bits, per_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@dataclass(frozen=True)
class LayerQuantError:
    """Weight error of one quantized layer: ``relative`` = ‖W − Ŵ‖ / ‖W‖, ``sqnr_db`` = 20·log10(1/relative)."""

    name: str
    shape: tuple[int, ...]
    num_weights: int
    quantized: bool
    max_abs_error: float
    mean_abs_error: float
    relative_error: float
    sqnr_db: float


class DynamicRangeQuantizer:
    """Per-channel symmetric int8 weight quantization with dequantize-on-the-fly (PyTorch side).

    ``quantizer.quantize(model)`` returns a quantized *copy*: every ``Conv2d`` and ``Linear`` with at least
    ``min_elements`` weights becomes a :class:`DequantConv2d` / :class:`DequantLinear`. The model's call
    signature is unchanged — (B, 3, H, W) → (B, 1) — and ``.fc.weight`` still works (dequantized), so patch
    logits too. ``quantizer.report`` then lists the weight error per layer.

    Args:
        bits: weight bits (8 = int8).
        per_channel: one scale per output channel (True, as TFLite) or one per tensor.
        min_elements: leave smaller tensors in float (TFLite's dynamic-range rule is 1024).
        fold_bn: fold BatchNorm into the preceding convolution first, as the TFLite converter does.
    Introduced in notebook 08.
    """

    def __init__(self, bits: int = 8, per_channel: bool = True, min_elements: int = 0, fold_bn: bool = False) -> None:
        self.bits, self.per_channel, self.min_elements, self.fold_bn = bits, per_channel, min_elements, fold_bn
        self.report: list[LayerQuantError] = []

    def quantize(self, model: nn.Module) -> nn.Module:
        """A quantized copy of ``model`` in eval mode; fills :attr:`report`. The original is untouched."""
        model = fold_batchnorm(model) if self.fold_bn else copy.deepcopy(model).eval()
        self.report = []
        for parent_name, parent in list(model.named_modules()):
            for child_name, child in list(parent.named_children()):
                if type(child) not in (nn.Conv2d, nn.Linear):
                    continue
                name = f"{parent_name}.{child_name}" if parent_name else child_name
                weight = child.weight.detach()
                quantize = weight.numel() >= self.min_elements
                if quantize:
                    wrapped = (DequantConv2d if isinstance(child, nn.Conv2d) else DequantLinear)(
                        child, self.bits, self.per_channel
                    )
                    setattr(parent, child_name, wrapped)
                    approx = wrapped.weight
                else:
                    approx = weight
                self.report.append(self._error(name, weight, approx, quantize))
        return model.eval()

    @staticmethod
    def _error(name: str, weight: torch.Tensor, approx: torch.Tensor, quantized: bool) -> LayerQuantError:
        diff = (weight - approx).abs()
        norm = float(weight.norm())
        relative = float((weight - approx).norm()) / norm if norm > 0 else 0.0
        return LayerQuantError(
            name,
            tuple(weight.shape),
            weight.numel(),
            quantized,
            float(diff.max()),
            float(diff.mean()),
            relative,
            20 * math.log10(1 / relative) if relative > 0 else math.inf,
        )

    def report_rows(self) -> list[dict[str, object]]:
        """:attr:`report` as a list of plain dicts (for tables and JSON)."""
        return [asdict(r) for r in self.report]

    def report_markdown(self) -> str:
        """:attr:`report` as a Markdown table."""
        lines = [
            "| layer | shape | weights | int8 | max abs err | mean abs err | rel. err | SQNR (dB) |",
            "|---|---|---:|:-:|---:|---:|---:|---:|",
        ]
        for r in self.report:
            lines.append(
                f"| {r.name} | {'×'.join(map(str, r.shape))} | {r.num_weights} | {'yes' if r.quantized else 'no'} | "
                f"{r.max_abs_error:.2e} | {r.mean_abs_error:.2e} | {r.relative_error:.2e} | {r.sqnr_db:.1f} |"
            )
        return "\n".join(lines)
