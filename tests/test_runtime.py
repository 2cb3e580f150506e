"""The runtime layer: predictors for every format (any batch size on batch-1 files, NHWC inputs, outputs matched
by name or shape, clear errors), the fused student stem, BatchNorm folding, latency, threads, calibration."""

import numpy as np
import pytest
import torch
from torch import nn

from ladeda_lib.checkpoints import save_checkpoint
from ladeda_lib.export import OnnxModel, export_onnx
from ladeda_lib.models import LaDeDa, TinyLaDeDa
from ladeda_lib.runtime import (
    Calibration,
    FusedTinyLaDeDa,
    ModelFileError,
    OnnxPredictor,
    TensorInfo,
    TorchPredictor,
    classify_outputs,
    fold_batchnorm,
    fuse_student_stem,
    load_predictor,
    measure_latency_ms,
    model_kind,
    patch_to_nchw,
    quietest_block_median,
    resolve_threads,
)


def randomise_bn(model: nn.Module, seed: int = 0, var_scale: float = 1.0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_((torch.rand(n, generator=g) + 0.5) * var_scale)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyLaDeDa().eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "s.onnx", with_patches=True)


def test_onnx_runner_loops_over_a_batch_and_matches_pytorch(student_onnx):
    model, path = student_onnx
    runner = load_predictor(path, threads=1)
    assert (
        isinstance(runner, OnnxPredictor)
        and OnnxModel is OnnxPredictor
        and runner.output_names == ["logit", "patch_logits"]
        and runner.has_patches
    )
    x = torch.randn(3, 3, 256, 256)
    logit, patches = runner(x)
    with torch.no_grad():
        ref_logit, ref_patches = model.forward_with_patches(x)
    assert logit.shape == (3, 1) and patches.shape == (3, 1, 126, 126)
    assert np.abs(logit - ref_logit.numpy()).max() < 1e-4
    one, _ = runner(x[0].numpy())  # a single (3, H, W) image
    assert one.shape == (1, 1) and np.allclose(one, logit[:1], atol=1e-6)


def test_nhwc_file_is_fed_transposed(tmp_path):
    class Nhwc(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2))

    torch.manual_seed(1)
    model = TinyLaDeDa(pool="all").eval()
    path = tmp_path / "nhwc.onnx"
    torch.onnx.export(
        Nhwc(model).eval(),
        (torch.randn(1, 256, 256, 3),),
        str(path),
        input_names=["input"],
        output_names=["logit"],
        dynamo=False,
        opset_version=17,
    )
    runner = OnnxModel(path)
    assert runner.layout == "NHWC" and not runner.has_patches
    x = torch.randn(2, 3, 256, 256)
    logit, patches = runner(x)
    with torch.no_grad():
        assert patches is None and np.abs(logit - model(x).numpy()).max() < 1e-4


def test_outputs_are_recognised_by_shape_when_renamed():
    outputs = [
        TensorInfo("PartitionedCall:1", (1, 126, 126, 1), "int8", 0.01, 3),
        TensorInfo("PartitionedCall:0", (1, 1), "int8", 0.02, -128),
    ]
    assert classify_outputs(outputs) == (1, 0)
    assert patch_to_nchw(np.zeros((2, 126, 126, 1))).shape == (2, 1, 126, 126)
    assert patch_to_nchw(np.zeros((2, 1, 31, 31))).shape == (2, 1, 31, 31)
    with pytest.raises(ModelFileError, match="image-logit"):
        classify_outputs([TensorInfo("a", (1, 4), "float32"), TensorInfo("b", (1, 1), "float32")])


def test_clear_errors(student_onnx, tmp_path):
    _, path = student_onnx
    runner = OnnxModel(path)
    with pytest.raises(ModelFileError, match="256×256"):
        runner(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ModelFileError, match="normalise"):
        runner(np.zeros((1, 3, 256, 256), dtype=np.uint8))
    with pytest.raises(FileNotFoundError):
        load_predictor(tmp_path / "missing.tflite")
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ModelFileError, match="unknown model file type"):
        load_predictor(tmp_path / "model.h5")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a loadable ONNX"):
        OnnxModel(tmp_path / "junk.onnx")


def test_suffix_is_case_insensitive(student_onnx, tmp_path):
    _, path = student_onnx
    upper = tmp_path / "STUDENT.ONNX"
    upper.write_bytes(path.read_bytes())
    assert isinstance(load_predictor(upper), OnnxPredictor)
    assert model_kind("a.PTH") == "checkpoint" and model_kind("b.TFLite") == "tflite"


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


def test_torch_predictor_optimised_equals_eager_and_applies_calibration():
    torch.manual_seed(1)
    model = randomise_bn(TinyLaDeDa())
    x = torch.randn(3, 3, 256, 256)
    eager = TorchPredictor(model, optimize=False)
    fast = TorchPredictor(model)
    (a, pa), (b, pb) = eager(x), fast(x)
    assert a.shape == (3, 1) and pa.shape == (3, 1, 126, 126)
    # the image logit pools 15,876 patch logits, summed in a CPU-dependent order: N * eps32 * mean|patch|
    sum_bound = pa[0].size * float(np.finfo(np.float32).eps) * float(np.abs(pa).mean())
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(pa).max()) + sum_bound
    cal = Calibration(offset=float(a.mean()), temperature=2.0)
    c, pc = TorchPredictor(model, calibration=cal)(x)
    np.testing.assert_allclose(c, (b - cal.offset) / 2.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pc, (pb - cal.offset) / 2.0, rtol=1e-5, atol=1e-5)


def test_checkpoint_calibration_record_is_loaded(tmp_path):
    model = randomise_bn(TinyLaDeDa())
    plain = load_predictor(save_checkpoint(model, tmp_path / "a.pt"))
    assert plain.calibration is None
    record = Calibration(3.0, 5.0, {"split": "val"}).to_dict()
    calibrated = load_predictor(save_checkpoint(model, tmp_path / "b.pt", metadata={"calibration": record}))
    assert calibrated.calibration == Calibration(3.0, 5.0, {"split": "val"})
    torch.save(model.state_dict(), tmp_path / "published.pth")  # a bare state_dict has no record
    assert load_predictor(tmp_path / "published.pth").calibration is None
    with pytest.raises(ValueError, match="positive temperature"):
        Calibration(0.0, 0.0)


def test_thread_policy_and_latency_rule():
    assert resolve_threads(3) == 3 and resolve_threads(None) == torch.get_num_threads()
    with pytest.raises(ValueError, match="at least 1"):
        resolve_threads(0)
    # a burst of load in one block does not move the result: the quietest block's median is taken
    assert quietest_block_median([1.0, 1.1, 0.9, 9.0, 9.5, 8.0, 1.0, 1.2, 1.1]) == pytest.approx(1.0)
    calls = []
    assert measure_latency_ms(lambda: calls.append(1), runs=6, warmup=2) >= 0 and len(calls) == 8


def test_onnx_predictor_uses_the_stated_threads(student_onnx):
    _, path = student_onnx
    assert OnnxPredictor(path, threads=1).threads == 1
    assert OnnxPredictor(path).threads == torch.get_num_threads()
