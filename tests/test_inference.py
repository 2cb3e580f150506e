"""Tests of ladeda_lib.inference: inputs, results, batching, odd images, BN folding, backends, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda_lib.checkpoints import save_checkpoint
from ladeda_lib.data import ImageLoadError, preprocess, resize_to_uint8
from ladeda_lib.graphs.fused import fold_batchnorm
from ladeda_lib.inference import RESULT_KEYS, InferencePipeline
from ladeda_lib.models import LaDeDa, TinyLaDeDa, TopKPool


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so folding and checkpoints are really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def make_student(seed: int = 0) -> TinyLaDeDa:
    torch.manual_seed(seed)
    return _randomise_bn(TinyLaDeDa(), seed)


def make_teacher(seed: int = 0) -> LaDeDa:
    torch.manual_seed(seed)
    return _randomise_bn(LaDeDa(width=2), seed)


def textured(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


@pytest.fixture(scope="module")
def student() -> TinyLaDeDa:
    return make_student()


@pytest.fixture(scope="module")
def pipe(student: TinyLaDeDa) -> InferencePipeline:
    return InferencePipeline(student)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    textured(300, 200, 1).save(folder / "a.jpg", quality=90)
    textured(120, 160, 2).save(folder / "b.png")
    textured(64, 64, 3).save(folder / "sub" / "c.webp")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image, ignored")
    return folder


def test_result_keys_types_and_shapes(pipe: InferencePipeline) -> None:
    result = pipe.predict(textured(300, 200))
    assert set(result) == {*RESULT_KEYS, "geometry"}
    assert result["geometry"] == pipe.model.geometry()
    assert isinstance(result["is_fake"], bool)
    assert isinstance(result["fake_probability"], float)
    assert isinstance(result["logit"], float)
    assert result["threshold"] == 0.5
    assert result["image_size"] == (300, 200)
    heat = result["patch_heatmap"]
    assert isinstance(heat, np.ndarray) and heat.shape == (126, 126) and heat.dtype == np.float32
    assert result["is_fake"] == (result["fake_probability"] >= 0.5)
    assert result["fake_probability"] == pytest.approx(1 / (1 + np.exp(-result["logit"])), rel=1e-6)


def test_teacher_gives_31_by_31_map() -> None:
    result = InferencePipeline(make_teacher()).predict(textured(256, 256))
    assert result["patch_heatmap"].shape == (31, 31) and result["geometry"] == make_teacher().geometry()
    assert result["fake_probability"] == pytest.approx(1 / (1 + np.exp(-result["logit"])), rel=1e-6)


def test_every_input_type_gives_the_same_answer(pipe: InferencePipeline, tmp_path: Path) -> None:
    pil = textured(200, 150, 5)
    path = tmp_path / "x.png"
    pil.save(path)
    reference = pipe.predict(path)
    others = {
        "PIL": pipe.predict(pil),
        "str": pipe.predict(str(path)),
        "numpy uint8": pipe.predict(np.asarray(pil)),
        "float tensor": pipe.predict(preprocess(pil)),
        "batched float tensor": pipe.predict(preprocess(pil)[None]),
        "uint8 tensor": pipe.predict(resize_to_uint8(pil)),
    }
    for name, result in others.items():
        assert result["logit"] == pytest.approx(reference["logit"], abs=1e-5), name
        np.testing.assert_allclose(result["patch_heatmap"], reference["patch_heatmap"], atol=1e-5, err_msg=name)
    assert others["numpy uint8"]["image_size"] == (200, 150)
    assert others["float tensor"]["image_size"] == (256, 256)  # a tensor is already the model input


def test_bad_inputs_raise_clear_errors(pipe: InferencePipeline, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"preprocessed image of shape \(3, 256, 256\)"):
        pipe.predict(torch.zeros(3, 64, 64))
    with pytest.raises(FileNotFoundError):
        pipe.predict(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(ImageLoadError, match="bad.png"):
        pipe.predict(bad)
    with pytest.raises(ValueError, match="threshold"):
        InferencePipeline(make_student(), threshold=1.5)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        InferencePipeline(tmp_path / "nope.onnx")
    with pytest.raises(TypeError, match="PatchDetector"):
        InferencePipeline(42)  # type: ignore[arg-type]


def test_threshold_and_pooling_override(student: TinyLaDeDa) -> None:
    image = textured(256, 256, 7)
    base = InferencePipeline(student).predict(image)
    assert InferencePipeline(student, threshold=0.0).predict(image)["is_fake"] is True
    low = InferencePipeline(student, threshold=1.0).predict(image)
    assert low["is_fake"] is (low["fake_probability"] >= 1.0)
    heat = base["patch_heatmap"]
    mean = InferencePipeline(student, pooling="all").predict(image)
    assert mean["logit"] == pytest.approx(float(heat.mean()), abs=1e-5)
    top1 = InferencePipeline(student, pooling=1).predict(image)
    assert top1["logit"] == pytest.approx(float(heat.max()), abs=1e-5)
    # default: the model's own top-10 % pooling
    k = int(np.ceil(0.1 * heat.size))
    assert base["logit"] == pytest.approx(float(np.sort(heat.ravel())[-k:].mean()), abs=1e-4)


def test_fold_batchnorm_keeps_outputs_and_removes_bn() -> None:
    x = torch.randn(1, 3, 40, 48)
    for model in (make_student(1), make_teacher(1)):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        with torch.no_grad():
            torch.testing.assert_close(folded.patch_logits(x), model.patch_logits(x), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_optimised_path_matches_eager(student: TinyLaDeDa) -> None:
    image = textured(256, 256, 9)
    fast = InferencePipeline(student, optimize=True).predict(image)
    eager = InferencePipeline(student, optimize=False).predict(image)
    assert fast["logit"] == pytest.approx(eager["logit"], abs=1e-4)
    np.testing.assert_allclose(fast["patch_heatmap"], eager["patch_heatmap"], atol=1e-4)


def test_checkpoint_paths_ours_and_published(student: TinyLaDeDa, tmp_path: Path) -> None:
    image = textured(256, 256, 11)
    ours = save_checkpoint(student, tmp_path / "student.pt")
    expected = InferencePipeline(student).predict(image)
    assert InferencePipeline(ours).predict(image)["logit"] == pytest.approx(expected["logit"], abs=1e-5)
    published = tmp_path / "WildRF_Tiny_LaDeDa.pth"
    torch.save(student.state_dict(), published)
    result = InferencePipeline(published).predict(image)  # published files pool with the mean
    assert result["logit"] == pytest.approx(float(expected["patch_heatmap"].mean()), abs=1e-5)


def test_predict_folder_reports_corrupt_file_and_continues(pipe: InferencePipeline, image_folder: Path) -> None:
    rows = pipe.predict_folder(image_folder, batch_size=2, progress=False)
    names = [Path(r["source"]).name for r in rows]
    assert names == ["a.jpg", "b.png", "corrupt.jpg", "c.webp"]  # sorted by path, .txt ignored
    bad = rows[2]
    assert "corrupt.jpg" in bad["error"] and bad["fake_probability"] is None and bad["is_fake"] is None
    for row in rows[:2] + rows[3:]:
        assert row["error"] is None and row["is_fake"] == (row["fake_probability"] >= 0.5)
        single = pipe.predict(row["source"])
        assert row["logit"] == pytest.approx(single["logit"], abs=1e-5)
        assert row["image_size"] == single["image_size"]


def test_predict_batch_mixed_inputs_keeps_order(pipe: InferencePipeline, tmp_path: Path) -> None:
    images = [textured(50, 40, 1), tmp_path / "missing.png", np.zeros((30, 20, 3), np.uint8), textured(90, 90, 2)]
    rows = pipe.predict_batch(images, batch_size=3, progress=False)
    assert [r["error"] is None for r in rows] == [True, False, True, True]
    assert "missing.png" in rows[1]["error"] and rows[1]["source"].endswith("missing.png")
    assert rows[0]["source"] == "<Image #0>"
    assert [r["image_size"] for r in rows] == [(50, 40), None, (20, 30), (90, 90)]


def test_odd_images(pipe: InferencePipeline, tmp_path: Path) -> None:
    # grayscale and RGBA behave like their RGB equivalents (gray replicated; alpha composited on white)
    gray = textured(120, 80, 3, "L")
    assert pipe.predict(gray)["logit"] == pytest.approx(pipe.predict(gray.convert("RGB"))["logit"], abs=1e-5)
    rgba = textured(120, 80, 4, "RGBA")
    on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    assert pipe.predict(rgba)["logit"] == pytest.approx(pipe.predict(on_white)["logit"], abs=1e-5)
    # tiny and huge images are resized to the model input
    for size in [(1, 1), (7, 3), (4000, 3000)]:
        result = pipe.predict(textured(*size))
        assert result["image_size"] == size and result["patch_heatmap"].shape == (126, 126)
        assert result["is_fake"] == (result["fake_probability"] >= 0.5)
    # EXIF orientation 6 (rotate 90° clockwise to display): size and content follow the displayed image
    stored = textured(160, 100, 5)
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        shown = np.rot90(np.asarray(raw.convert("RGB")), k=-1)  # stored pixels turned 90° clockwise
    result = pipe.predict(path)
    assert result["image_size"] == (100, 160)
    assert result["logit"] == pytest.approx(pipe.predict(shown)["logit"], abs=1e-5)


def test_cli_predict_table_json_heatmaps_and_exit_status(
    student: TinyLaDeDa, image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ladeda_lib.cli import main

    ckpt = save_checkpoint(student, tmp_path / "student.pt")
    heatmaps = tmp_path / "heatmaps"
    status = main(["predict", str(image_folder), "--model", str(ckpt), "--json", "--heatmap-dir", str(heatmaps)])
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert status == 1 and "1 of 4 inputs could not be scored" in err
    assert [Path(r["file"]).name for r in records] == ["a.jpg", "b.png", "corrupt.jpg", "c.webp"]
    assert records[2]["error"] and records[2]["fake_probability"] is None
    assert all(
        r["is_fake"] == (r["fake_probability"] >= 0.5) and isinstance(r["is_fake"], bool)
        for r in records
        if not r["error"]
    )
    assert sorted(p.name for p in heatmaps.iterdir()) == ["a_heatmap.png", "b_heatmap.png", "c_heatmap.png"]

    status = main(["predict", str(image_folder / "a.jpg"), str(image_folder / "b.png"), "--model", str(ckpt)])
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert status == 0 and lines[0].split() == ["file", "fake_probability", "is_fake"] and len(lines) == 3
    assert float(lines[1].split()[1]) == pytest.approx(records[0]["fake_probability"], abs=1e-4)

    status = main(["predict", str(tmp_path / "nowhere"), "--model", str(ckpt), "--threshold", "0"])
    out, err = capsys.readouterr()
    assert status == 1 and "ERROR" in out and "nowhere" in out


def test_cli_predict_decodes_each_image_once_and_loads_the_model_once(
    student: TinyLaDeDa, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """With heatmaps and --pooling: one decode per image (the heatmap is drawn on the image the model saw) and one
    model load; the pooled logit is the predictor's, the same as a model built with that pooling."""
    import ladeda_lib.data
    import ladeda_lib.inference
    from ladeda_lib.cli import main

    decoded, loaded = [], []
    load_image, load_predictor = ladeda_lib.data.load_image, ladeda_lib.inference.load_predictor
    monkeypatch.setattr(ladeda_lib.data, "load_image", lambda image: decoded.append(image) or load_image(image))
    monkeypatch.setattr(
        ladeda_lib.inference, "load_predictor", lambda *a, **k: loaded.append(a) or load_predictor(*a, **k)
    )
    ckpt = save_checkpoint(student, tmp_path / "student.pt")
    files = [str(image_folder / "a.jpg"), str(image_folder / "b.png")]
    heatmaps = tmp_path / "heatmaps"
    status = main(
        ["predict", *files, "--model", str(ckpt), "--json", "--pooling", "all", "--heatmap-dir", str(heatmaps)]
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and len(decoded) == 2 and len(loaded) == 1
    assert sorted(p.name for p in heatmaps.iterdir()) == ["a_heatmap.png", "b_heatmap.png"]
    mean = copy.deepcopy(student)
    mean.pool = TopKPool("all")
    monkeypatch.undo()
    want = InferencePipeline(mean).predict(files[0])["logit"]
    assert records[0]["logit"] == pytest.approx(want, rel=1e-5, abs=1e-5)


# --------------------------------------------------------------------------------------------------
# Parity of the PyTorch, ONNX and TFLite backends (one shared export/conversion: conversions are slow)
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_backend_parity_pytorch_onnx_tflite(exported_student: dict) -> None:
    """The session's exported student (``conftest.py``): one ONNX file, one onnx2tf conversion for all tests."""
    images = [textured(256, 256, 20), textured(300, 180, 21), textured(64, 128, 22)]
    torch_rows = InferencePipeline(exported_student["model"]).predict_batch(images, progress=False)
    files = {"onnx": exported_student["onnx"], "tflite": exported_student["files"]["float32"]}
    for backend, path in files.items():
        pipe = InferencePipeline(path)
        assert pipe.backend == backend
        rows = pipe.predict_batch(images, batch_size=2, progress=False)  # batch > 1 through a batch-1 file
        for want, got in zip(torch_rows, rows, strict=True):
            scale = max(1.0, float(np.abs(want["patch_heatmap"]).max()))  # the trained student's logits reach ~100
            assert got["error"] is None
            assert got["logit"] == pytest.approx(want["logit"], abs=2e-5 * scale), backend
            assert got["patch_heatmap"].shape == (126, 126)
            np.testing.assert_allclose(got["patch_heatmap"], want["patch_heatmap"], atol=2e-5 * scale, err_msg=backend)
        single = pipe.predict(images[0])
        assert set(single) == {*RESULT_KEYS, "geometry"} and single["image_size"] == (256, 256)
        mean = InferencePipeline(path, pooling="all").predict(images[0])
        assert mean["logit"] == pytest.approx(float(single["patch_heatmap"].mean()), rel=1e-5, abs=1e-5)
