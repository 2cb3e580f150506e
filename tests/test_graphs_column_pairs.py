"""The deployed student graph: column pairs and the pre-sorted top-K give the student's own outputs."""

import numpy as np
import onnx
import pytest
import torch

from ladeda_lib.export import export_onnx
from ladeda_lib.export.onnx_export import run_onnxruntime
from ladeda_lib.graphs.column_pairs import (
    ColumnPairTinyLaDeDa,
    PresortedTopKPool,
    column_pair_conv,
    deployable_student,
    presort,
)
from ladeda_lib.graphs.fused import FusedTinyLaDeDa
from ladeda_lib.models import TinyLaDeDa, TopKPool


def _random_student(preprocess: str = "right_diag", var_scale: float = 1.0, pool=0.1) -> TinyLaDeDa:
    torch.manual_seed(5)
    model = TinyLaDeDa(preprocess=preprocess, pool=pool).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.05, 2.0).mul_(var_scale)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model


@pytest.mark.parametrize("preprocess", ["right_diag", "left_diag", "x_grad", "y_grad", "raw"])
def test_column_pair_graph_equals_the_student(preprocess):
    model = _random_student(preprocess, var_scale=0.003)  # ForenSynth-like: bn1 variance divided by hundreds
    laid_out = ColumnPairTinyLaDeDa(model)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        want_logit, want = model.forward_with_patches(x)
        got_logit, got = laid_out.forward_with_patches(x)
    assert got.shape == want.shape == (2, 1, 30, 38)
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= 2e-6 * scale
    assert float((got_logit - want_logit).abs().max()) <= 2e-6 * scale
    assert laid_out.stem.in_channels == (6 if preprocess != "raw" else 3) and laid_out.stem.out_channels == 16
    assert laid_out.geometry() == model.geometry()


def test_column_pair_conv_is_the_same_convolution():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 5, 3, stride=2)
    x = torch.randn(1, 4, 9, 20)
    pairs = torch.cat([x[..., 0::2], x[..., 1::2]], dim=1)  # column 2j+p → block p, column j
    paired = column_pair_conv(conv.weight, conv.bias, (2, 2), pairs_in=True, pairs_out=False)
    with torch.no_grad():
        assert torch.allclose(paired(pairs), conv(x), atol=1e-5)
    to_pairs = column_pair_conv(conv.weight, conv.bias, (1, 1), pairs_in=False, pairs_out=True)
    with torch.no_grad():
        full = torch.nn.functional.conv2d(x, conv.weight, conv.bias)  # 18 columns
        want = torch.cat([full[..., 0::2], full[..., 1::2]], dim=1)
        assert torch.allclose(to_pairs(x)[..., : want.shape[-1]], want, atol=1e-5)
    with pytest.raises(ValueError, match="padding"):
        column_pair_conv(conv.weight, None, (1, 1), pairs_in=True, pairs_out=True, padding=1)


def test_presorted_pool_selects_exactly_the_same_values():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 1, 126, 126, generator=g)
    values[0, 0, :40] = 2.5  # ties
    values[1] = values[1].flatten().sort().values.reshape(1, 126, 126)  # ascending: the heap's worst case
    for k in (1, 7, 0.1, 0.5, 15876, "all"):
        assert torch.equal(PresortedTopKPool(k)(values), TopKPool(k)(values)), k
    flat = values.flatten(1)
    assert torch.equal(presort(flat).sort(dim=1).values, flat.sort(dim=1).values)  # a reordering only
    quarter = presort(flat, rounds=2)[:, : flat.shape[1] // 4]
    assert torch.equal(quarter.max(dim=1).values, flat.max(dim=1).values)  # block maxima come first
    odd = torch.tensor([[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]])
    assert torch.equal(presort(odd, rounds=1), torch.tensor([[3.0, 5.0, 9.0, 1.0, 1.0, 4.0, 2.0]]))
    for rounds in range(5):
        assert torch.equal(presort(odd, rounds).sort().values, odd.sort().values)


def test_deployable_student_falls_back_for_odd_sizes_and_exports_the_student(tmp_path):
    model = _random_student()
    assert isinstance(deployable_student(model, 255), FusedTinyLaDeDa)
    assert isinstance(deployable_student(model, 256), ColumnPairTinyLaDeDa)
    with pytest.raises(ValueError, match="even input width"):
        ColumnPairTinyLaDeDa(model)(torch.randn(1, 3, 64, 63))
    path = export_onnx(model, tmp_path / "s.onnx", with_patches=True)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Conv") == 5 and ops.count("TopK") == 1 and "Max" in ops and "Min" in ops
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    logit, patches = run_onnxruntime(path, x.numpy())
    with torch.no_grad():
        want_logit, want = model.forward_with_patches(x)
    assert patches.shape == (1, 1, 126, 126)
    assert np.abs(patches - want.numpy()).max() <= 1e-5 * float(want.abs().max())
    # the image logit pools up to 15,876 patch logits, summed in a CPU-dependent order: N * eps32 * mean|patch|
    sum_bound = want.numel() * float(np.finfo(np.float32).eps) * float(want.abs().mean())
    assert np.abs(logit - want_logit.numpy()).max() <= 1e-5 * float(want.abs().max()) + sum_bound
