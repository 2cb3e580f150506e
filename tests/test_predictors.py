"""Predictors for every format: any batch size on batch-1 files, NHWC inputs, uint8 or normalised images, outputs
matched by name or shape, the sidecar's geometry and calibration, clear errors."""

import numpy as np
import pytest
import torch
from conftest import randomise_bn
from torch import nn

from ladeda_lib.checkpoints import save_checkpoint
from ladeda_lib.contract import DecisionCalibration, ModelFileError, model_kind
from ladeda_lib.export import export_onnx
from ladeda_lib.models import TinyLaDeDa
from ladeda_lib.predictors import (
    OnnxPredictor,
    TensorInfo,
    TorchPredictor,
    classify_outputs,
    load_predictor,
    patch_to_nchw,
)


def test_onnx_runner_loops_over_a_batch_and_matches_pytorch(student_onnx):
    model, path = student_onnx
    runner = load_predictor(path, threads=1)
    assert isinstance(runner, OnnxPredictor) and runner.output_names == ["logit", "patch_logits"] and runner.has_patches
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
    runner = OnnxPredictor(path)
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
    runner = OnnxPredictor(path)
    with pytest.raises(ModelFileError, match="256×256"):
        runner(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ModelFileError, match=r"\(B, 3, H, W\)"):
        runner(np.zeros((1, 4, 256, 256), dtype=np.uint8))
    with pytest.raises(FileNotFoundError):
        load_predictor(tmp_path / "missing.tflite")
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ModelFileError, match="unknown model file type"):
        load_predictor(tmp_path / "model.h5")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a loadable ONNX"):
        OnnxPredictor(tmp_path / "junk.onnx")


def test_suffix_is_case_insensitive(student_onnx, tmp_path):
    _, path = student_onnx
    upper = tmp_path / "STUDENT.ONNX"
    upper.write_bytes(path.read_bytes())
    assert isinstance(load_predictor(upper), OnnxPredictor)
    assert model_kind("a.PTH") == "checkpoint" and model_kind("b.TFLite") == "tflite"


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
    cal = DecisionCalibration(offset=float(a.mean()), temperature=2.0)
    c, pc = TorchPredictor(model, calibration=cal)(x)
    np.testing.assert_allclose(c, (b - cal.offset) / 2.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pc, (pb - cal.offset) / 2.0, rtol=1e-5, atol=1e-5)


def test_checkpoint_calibration_record_is_loaded(tmp_path):
    model = randomise_bn(TinyLaDeDa())
    plain = load_predictor(save_checkpoint(model, tmp_path / "a.pt"))
    assert plain.calibration is None
    record = DecisionCalibration(3.0, 5.0, {"split": "val"}).to_dict()
    calibrated = load_predictor(save_checkpoint(model, tmp_path / "b.pt", metadata={"calibration": record}))
    assert calibrated.calibration == DecisionCalibration(3.0, 5.0, {"split": "val"})
    torch.save(model.state_dict(), tmp_path / "published.pth")  # a bare state_dict has no record
    assert load_predictor(tmp_path / "published.pth").calibration is None
    with pytest.raises(ValueError, match="positive temperature"):
        DecisionCalibration(0.0, 0.0)


def test_onnx_predictor_uses_the_stated_threads(student_onnx):
    _, path = student_onnx
    assert OnnxPredictor(path, threads=1).threads == 1
    assert OnnxPredictor(path).threads == torch.get_num_threads()


def test_uint8_pixels_and_normalised_images_give_the_same_scores(student_onnx):
    from ladeda_lib.data import normalize_uint8

    model, path = student_onnx
    pixels = torch.randint(0, 256, (2, 3, 256, 256), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for predictor in (load_predictor(path, threads=1), TorchPredictor(model, threads=1)):
        (a, pa), (b, pb) = predictor(pixels), predictor(normalize_uint8(pixels))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(pa, pb)


def test_an_exported_file_states_its_geometry_even_for_another_preprocessing(tmp_path):
    """The sidecar carries arch, config and geometry: a ``raw`` student has the default student's 126×126 grid
    but another receptive field and offset, and its file says so (no guessing from the grid)."""
    torch.manual_seed(0)
    raw = TinyLaDeDa(preprocess="raw").eval()
    assert raw.geometry() != TinyLaDeDa().geometry() and raw.grid_size() == TinyLaDeDa().grid_size()
    path = export_onnx(raw, tmp_path / "raw.onnx", with_patches=True)
    predictor = load_predictor(path)
    assert predictor.geometry == raw.geometry()
    assert predictor.record["arch"] == "TinyLaDeDa" and predictor.record["config"]["preprocess"] == "raw"
    (tmp_path / "raw.onnx.ladeda.json").unlink()  # a file without its sidecar says nothing: no guess
    assert load_predictor(path).geometry is None


def test_pooling_override_pools_the_patch_map_once(student_onnx):
    from ladeda_lib.models import TopKPool

    model, path = student_onnx
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        want = TopKPool("all")(model.patch_logits(x)).numpy()
    for predictor in (load_predictor(path, pooling="all"), load_predictor(model, pooling="all")):
        logit, _ = predictor(x)
        np.testing.assert_allclose(logit, want, rtol=1e-4, atol=1e-4)
    no_patches = export_onnx(model, path.parent / "no_patches.onnx")
    with pytest.raises(ModelFileError, match="needs the patch map"):
        load_predictor(no_patches, pooling=0.5)
