"""The optimised PyTorch graphs: the fused student stem equals the four layers it replaces, BatchNorm folding."""

import pytest
import torch
from conftest import randomise_bn
from torch import nn

from ladeda_lib.graphs.fused import FusedTinyLaDeDa, fold_batchnorm, fuse_student_stem
from ladeda_lib.models import LaDeDa, TinyLaDeDa


@pytest.mark.parametrize("preprocess", ["right_diag", "left_diag", "x_grad", "raw"])
def test_fused_stem_equals_the_four_layers(preprocess):
    torch.manual_seed(3)
    model = randomise_bn(TinyLaDeDa(preprocess=preprocess), var_scale=0.01)  # large logits, ForenSynth-like
    fused = fuse_student_stem(model)
    assert isinstance(fused, FusedTinyLaDeDa) and fused.stem.kernel_size == ((5, 5) if preprocess != "raw" else (3, 3))
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        want, got = model.forward_with_patches(x), fused.forward_with_patches(x)
    scale = float(want[1].abs().max())
    assert got[1].shape == want[1].shape
    assert float((got[1] - want[1]).abs().max()) <= 2e-6 * scale
    assert float((got[0] - want[0]).abs().max()) <= 2e-6 * scale
    assert fused.geometry() == model.geometry()


def test_npr_teacher_is_not_fused_but_bn_folded():
    torch.manual_seed(0)
    teacher = randomise_bn(LaDeDa(width=2))
    with pytest.raises(ValueError, match="not a convolution"):
        fuse_student_stem(TinyLaDeDa(preprocess="NPR"))
    folded = fold_batchnorm(teacher)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(teacher(x), folded(x), atol=1e-4)
