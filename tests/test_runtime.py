"""Runners: any batch size on batch-1 files, NHWC inputs, outputs matched by name or shape, clear errors."""

import numpy as np
import pytest
import torch
from torch import nn

from ladeda_lib.export import ExportError, OnnxModel, export_onnx, load_runner
from ladeda_lib.export.runners import TensorInfo, _classify_outputs, _patch_to_nchw
from ladeda_lib.models import TinyLaDeDa


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyLaDeDa().eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "s.onnx", with_patches=True)


def test_onnx_runner_loops_over_a_batch_and_matches_pytorch(student_onnx):
    model, path = student_onnx
    runner = load_runner(path, threads=1)
    assert isinstance(runner, OnnxModel) and runner.output_names == ["logit", "patch_logits"] and runner.has_patches
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
    assert _classify_outputs(outputs) == (1, 0)
    assert _patch_to_nchw(np.zeros((2, 126, 126, 1))).shape == (2, 1, 126, 126)
    assert _patch_to_nchw(np.zeros((2, 1, 31, 31))).shape == (2, 1, 31, 31)
    with pytest.raises(ExportError, match="image-logit"):
        _classify_outputs([TensorInfo("a", (1, 4), "float32"), TensorInfo("b", (1, 1), "float32")])


def test_clear_errors(student_onnx, tmp_path):
    _, path = student_onnx
    runner = OnnxModel(path)
    with pytest.raises(ExportError, match="256×256"):
        runner(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ExportError, match="normalise"):
        runner(np.zeros((1, 3, 256, 256), dtype=np.uint8))
    with pytest.raises(FileNotFoundError):
        load_runner(tmp_path / "missing.tflite")
    with pytest.raises(ExportError, match="unknown model file type"):
        load_runner(tmp_path / "model.pt")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match="not a loadable ONNX"):
        OnnxModel(tmp_path / "junk.onnx")
