"""DynamicRangeQuantizer: int8 per-channel weights, dequantized on the fly; BatchNorm folding."""

import torch
from torch import nn

from ladeda_lib.export import DynamicRangeQuantizer, quantize_per_channel
from ladeda_lib.export.quantizer import DequantConv2d, DequantLinear, dequantize
from ladeda_lib.graphs.fused import fold_batchnorm
from ladeda_lib.models import LaDeDa, TinyLaDeDa


def _with_bn_statistics(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def test_per_channel_symmetric_int8_error_is_at_most_half_a_step():
    w = torch.randn(6, 4, 3, 3) * torch.tensor([0.01, 0.1, 1, 10, 100, 0]).view(-1, 1, 1, 1)
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (6,)
    assert q.abs().max() <= 127 and (q.reshape(6, -1).abs().amax(1)[:5] == 127).all()
    err = (dequantize(q, scale) - w).abs().reshape(6, -1).amax(1)
    assert (err <= scale / 2 + 1e-6).all()
    assert torch.equal(dequantize(q, scale)[5], torch.zeros(4, 3, 3))  # all-zero channel stays exact
    # per-tensor scaling is much worse for the small channels
    qt, st = quantize_per_channel(w, per_channel=False)
    assert (dequantize(qt, st)[0] - w[0]).abs().max() > 10 * err[0]


def test_quantized_copy_stores_int8_and_predicts_close_to_float():
    torch.manual_seed(0)
    model = _with_bn_statistics(TinyLaDeDa())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantizer = DynamicRangeQuantizer()
    quantized = quantizer.quantize(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # original untouched
    assert isinstance(quantized.conv2, DequantConv2d) and isinstance(quantized.fc, DequantLinear)
    assert quantized.conv2.weight_int8.dtype == torch.int8
    assert not any(isinstance(m, nn.Conv2d) for m in quantized.modules())
    names = [r.name for r in quantizer.report]
    assert sorted(names) == ["conv1", "conv2", "fc", "layer1.0.conv1", "layer1.0.conv2"]
    assert all(r.quantized and 0 < r.relative_error < 0.02 and r.sqnr_db > 35 for r in quantizer.report)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        ref, out = model.forward_with_patches(x), quantized.forward_with_patches(x)
    assert out[0].shape == (4, 1) and out[1].shape == (4, 1, 30, 30)
    assert 0 < (out[0] - ref[0]).abs().max() < 0.05
    assert "| conv2 | 8×8×3×3 | 576 | yes |" in quantizer.report_markdown()


def test_tflite_rule_leaves_small_tensors_in_float():
    model = _with_bn_statistics(TinyLaDeDa())
    quantizer = DynamicRangeQuantizer(min_elements=1024)
    quantized = quantizer.quantize(model)
    assert not any(r.quantized for r in quantizer.report)  # every Tiny-LaDeDa tensor has < 1024 weights
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(quantized(x), model(x))


def test_fold_batchnorm_keeps_outputs_for_student_and_teacher():
    for model in (_with_bn_statistics(TinyLaDeDa(), 1), _with_bn_statistics(LaDeDa(width=4), 2)):
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        x = torch.randn(2, 3, 72, 72)
        with torch.no_grad():
            ref, out = model.forward_with_patches(x), folded.forward_with_patches(x)
        scale = ref[1].abs().max().item() + 1
        assert (out[1] - ref[1]).abs().max().item() < 1e-4 * scale


def test_quantizing_after_folding_quantizes_the_folded_weights():
    model = _with_bn_statistics(TinyLaDeDa(), 3)
    quantizer = DynamicRangeQuantizer(fold_bn=True)
    quantized = quantizer.quantize(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in quantized.modules())
    assert quantized.conv2.bias is not None  # BN shift became the folded conv's bias
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (quantized(x) - model(x)).abs().max() < 0.05
