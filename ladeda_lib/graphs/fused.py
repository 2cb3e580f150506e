"""The optimised PyTorch student and teacher: BatchNorm folded, the student's stem fused into one convolution.

* :func:`fold_batchnorm` folds every BatchNorm into the convolution before it
  (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`).
* :func:`stem_kernel` composes Tiny-LaDeDa's fixed filter, ``conv1``, ``conv2`` and ``bn1`` (linear, nothing in
  between) into one 5×5 convolution; :class:`FusedTinyLaDeDa` runs it.
* :func:`optimize_for_inference` picks the fastest exact copy for PyTorch. The float export lays the same
  composition out for LiteRT's kernels (:mod:`ladeda_lib.graphs.column_pairs`; in PyTorch that layout measured
  only about 7 % faster, so this path keeps the plain fused stem).
* :func:`check_same` is the check every rewritten graph passes: the same patch logits as the model on a probe.

Introduced in notebook 08.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ladeda_lib.models import PatchDetector, TinyLaDeDa
from ladeda_lib.models.preprocessing import FixedFilter, Identity


def fold_batchnorm(model: PatchDetector, check: bool = True) -> PatchDetector:
    """An inference copy of ``model`` with every BatchNorm folded into the convolution before it.

    A BatchNorm in eval mode is an affine map per channel, ``y = γ (x − μ) / √(σ² + ε) + β``; after a
    convolution it merges into the convolution's weights and bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`).
    A BatchNorm is folded into a ``Conv2d`` registered *immediately before it* in the same parent module
    (``conv2 → bn1`` in the stems, ``convN → bnN`` in the blocks, ``downsample.0 → .1``); the BN becomes
    ``nn.Identity``. The original model is not modified.

    Args:
        model: a teacher or student (any mode; the copy is put in eval mode and frozen).
        check: compare the copy with the original on a small random input and raise ``RuntimeError`` if
            they disagree, relative to the outputs' magnitude.

    Returns:
        the folded copy: same ``forward``/``patch_logits`` outputs (B, 3, H, W) → (B, 1) / (B, 1, h, w)
        within float32 rounding, no BatchNorm left. Works behind notebook 06.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        names = list(parent._modules)
        for prev, name in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[prev], parent._modules[name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                parent._modules[prev] = fuse_conv_bn_eval(conv, bn)
                parent._modules[name] = nn.Identity()
    folded.freeze()
    if check:
        check_same(model, folded, "folding BatchNorm")
    return folded


def check_same(model: PatchDetector, other: nn.Module, what: str) -> None:
    """Raise ``RuntimeError`` unless ``other`` gives ``model``'s patch logits on a random (1, 3, 40, 40) probe
    (relative 1e-4 of their magnitude); ``what`` names the rewrite in the message."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    probe = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
    with torch.inference_mode():
        want, got = model.patch_logits(probe), other.patch_logits(probe)
    model.train(was_training)
    scale = float(want.abs().max().clamp_min(1.0))
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-4 * scale):
        raise RuntimeError(
            f"{what} changed the outputs of {type(model).__name__} (max difference "
            f"{float((want - got).abs().max()):.3g} on logits up to {scale:.3g}); run the model unoptimised."
        )


def has_fusable_stem(model: nn.Module) -> bool:
    """Whether ``model`` is a Tiny-LaDeDa whose preprocessing is a convolution (a fixed filter or raw input), so
    that its filter, ``conv1``, ``conv2`` and ``bn1`` compose into one convolution (:func:`stem_kernel`)."""
    return isinstance(model, TinyLaDeDa) and isinstance(model.preprocess, FixedFilter | Identity)


def stem_kernel(model: TinyLaDeDa, with_filter: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fixed filter · ``conv1`` · ``conv2`` · ``bn1`` of a Tiny-LaDeDa as one convolution.

    All four are linear with no non-linearity between them, so they compose into one convolution: with a
    fixed 3×3 filter ("same" padding) a 5×5 kernel over the input padded by 1; with ``"raw"`` (or
    ``with_filter=False``: ``conv1`` · ``conv2`` · ``bn1`` alone, applied after the filter) a 3×3 kernel without
    padding. Returns ``(weight (8, 3, k, k), bias (8,), padding)``, computed in float64.
    Works behind notebook 08.
    """
    if isinstance(model.preprocess, FixedFilter) and with_filter:
        pre, size, padding = model.preprocess.kernel.double(), 5, 1
    elif isinstance(model.preprocess, FixedFilter | Identity):
        pre, size, padding = None, 3, 0
    else:
        raise ValueError(f"the {model.preprocess.name} preprocessing is not a convolution; it cannot be fused")
    # the composite's response to a unit impulse at each input channel and position is its kernel
    basis = torch.eye(3 * size * size, dtype=torch.float64).reshape(-1, 3, size, size)
    with torch.no_grad():
        x = F.conv2d(basis, pre, groups=3) if pre is not None else basis
        x = F.conv2d(x, model.conv1.weight.double())
        x = F.conv2d(x, model.conv2.weight.double())  # (3·k·k, 8, 1, 1)
        bn = model.bn1
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = x[:, :, 0, 0].T.reshape(-1, 3, size, size) * scale[:, None, None, None]
        bias = bn.bias.double() - bn.running_mean.double() * scale
    return weight, bias, padding


class FusedTinyLaDeDa(PatchDetector):
    """Tiny-LaDeDa for inference: one fused stem convolution · ReLU · BN-folded ``layer1.0`` · ``fc``.

    Same outputs as the model it was built from (to about 1e-6 relative), (B, 3, H, W) → (B, 1, h, w) patch
    logits and (B, 1) image logits; the exported graph and the optimised PyTorch path both use it.
    Works behind notebook 08.
    """

    arch = "TinyLaDeDa"

    def __init__(self, model: TinyLaDeDa) -> None:
        super().__init__(model.pool.spec)
        weight, bias, padding = stem_kernel(model)
        self.stem = nn.Conv2d(3, weight.shape[0], weight.shape[-1], padding=padding, bias=True)
        with torch.no_grad():
            self.stem.weight.copy_(weight.float())
            self.stem.bias.copy_(bias.float())
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = fold_batchnorm(model, check=False).layer1
        self.fc = copy.deepcopy(model.fc)
        self._geometry = model.geometry()
        self._config = model.config()
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.relu(self.stem(x)))

    def geometry(self):  # the fused stem has the same geometry as the layers it replaces
        return self._geometry

    def config(self) -> dict[str, Any]:
        return dict(self._config)


def fuse_student_stem(model: TinyLaDeDa, check: bool = True) -> FusedTinyLaDeDa:
    """:class:`FusedTinyLaDeDa` of ``model``; with ``check`` compared with ``model`` on a random input."""
    fused = FusedTinyLaDeDa(model)
    if check:
        check_same(model, fused, "fusing the stem")
    return fused


def optimize_for_inference(model: PatchDetector) -> PatchDetector:
    """The fastest exact PyTorch copy of ``model``: the fused stem for Tiny-LaDeDa with a fixed filter or raw
    input, BatchNorm folded otherwise; eval mode, frozen, channels-last. Works behind notebook 06."""
    if has_fusable_stem(model):
        net: PatchDetector = fuse_student_stem(model)
    else:
        net = fold_batchnorm(model)
    return net.to(memory_format=torch.channels_last)
