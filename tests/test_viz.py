"""Tests of ladeda_lib.viz: heatmap placement, heatmap PNGs and the ipywidgets explorer's controls."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda_lib.data import Sample, detect_dataset
from ladeda_lib.inference import InferencePipeline
from ladeda_lib.models import LaDeDa, TinyLaDeDa
from ladeda_lib.viz import HeatmapExplorer, figure_to_png, place_heatmap, render_heatmap, visualize_heatmap


def _student(seed: int) -> TinyLaDeDa:
    torch.manual_seed(seed)
    model = TinyLaDeDa().eval()
    with torch.no_grad():
        model.fc.bias.fill_(0.3 * seed - 0.3)  # two models with visibly different scores
    return model


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def make_tiny_wildrf(root: Path) -> Path:
    """train/val/test(reddit) × real/fake, 2 images each, and a ground-truth mask for one spliced test fake."""
    seed = 0
    for split in ("train", "val", "test/reddit"):
        for cls in ("0_real", "1_fake"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                seed += 1
                _image(96 + 8 * i, 80, seed).save(folder / f"{cls[2:]}_{i}.png")
    mask = np.zeros((80, 96), np.uint8)
    mask[20:60, 30:80] = 255
    (root / "masks/test/reddit/1_fake").mkdir(parents=True)
    Image.fromarray(mask).save(root / "masks/test/reddit/1_fake/fake_0.png")
    return root


def _png_size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_place_heatmap_follows_receptive_field_geometry() -> None:
    model = TinyLaDeDa()
    heat = np.full((126, 126), -8.0, np.float32)
    heat[0:5, 0:5] = 8.0  # hot patches in the top-left corner of the 256 grid
    placed = place_heatmap(heat, (512, 300), model.geometry())
    assert placed.shape == (300, 512) and placed.dtype == np.float32
    assert placed.max() == pytest.approx(1 / (1 + np.exp(-8.0)), abs=1e-4)  # logits placed, then their sigmoid
    # patches 0..4 (stride 2, RF 7, offset -1) cover model pixels 0..13 → ~0..27 of 512 wide, ~0..16 of 300 high
    assert placed[:10, :20].mean() > 0.9 and placed[50:, 60:].max() < 0.01
    teacher_map = place_heatmap(np.zeros((31, 31), np.float32), (64, 48))
    np.testing.assert_allclose(teacher_map, 0.5)  # sigmoid(0) everywhere; geometry found from the 31 grid
    with pytest.raises(ValueError, match="2-D"):
        place_heatmap(np.zeros((1, 126, 126)), (10, 10))


def test_visualize_heatmap_writes_png(tmp_path: Path) -> None:
    image = _image(320, 200, 1)
    pipe = InferencePipeline(_student(1))
    result = pipe.predict(image)
    out = visualize_heatmap(image, result, tmp_path / "out" / "heat.png")
    assert out.is_file() and Image.open(out).format == "PNG"
    # without a patch map (an exported file without patch output) it still shows image and score
    no_map = dict(result, patch_heatmap=None)
    out2 = visualize_heatmap(image, no_map, tmp_path / "nomap.png")
    assert out2.read_bytes() != out.read_bytes()
    # the same inputs render identical bytes (so the explorer tests below can detect changes)
    assert figure_to_png(render_heatmap(image, result)) == figure_to_png(render_heatmap(image, result))
    teacher = InferencePipeline(LaDeDa(width=2).eval()).predict(image)
    assert visualize_heatmap(image, teacher, tmp_path / "teacher.png").is_file()
    # a lower dpi writes a smaller picture of the same figure (notebooks embed several)
    small = visualize_heatmap(image, result, tmp_path / "small.png", dpi=50)
    assert Image.open(small).size[0] * 2 == Image.open(out).size[0]


def test_render_heatmap_options_change_the_picture() -> None:
    image = _image(128, 96, 2)
    result = InferencePipeline(_student(2)).predict(image)
    base = figure_to_png(render_heatmap(image, result))
    mask = np.zeros((96, 128), bool)
    mask[30:70, 40:100] = True
    variants = {
        "alpha": render_heatmap(image, result, alpha=0.9),
        "cmap": render_heatmap(image, result, cmap="viridis"),
        "threshold": render_heatmap(image, result, threshold=0.9),
        "mask": render_heatmap(image, result, mask=mask),
    }
    for name, fig in variants.items():
        assert figure_to_png(fig) != base, name
    with pytest.raises(ValueError, match="alpha"):
        render_heatmap(image, result, alpha=2.0)


@pytest.fixture
def explorer(tmp_path: Path) -> HeatmapExplorer:
    index = detect_dataset(make_tiny_wildrf(tmp_path / "wildrf"), warn=False)
    models = {"student A": _student(0), "student B": InferencePipeline(_student(2))}
    return HeatmapExplorer(index, models, display_size=96)


def test_explorer_layout_and_defaults(explorer: HeatmapExplorer) -> None:
    c = explorer.controls
    assert set(c) == {"split", "filter", "image", "model", "opacity", "colormap", "threshold", "mask"}
    assert c["split"].value == "test" and list(c["split"].options) == ["train", "val", "test"]
    assert len(c["image"].options) == 4
    assert explorer.view.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fake probability" in explorer.score.value
    assert explorer._repr_mimebundle_()  # displays as the widget


def test_every_explorer_control_changes_the_rendering(explorer: HeatmapExplorer) -> None:
    c = explorer.controls
    c["image"].value = 2  # fake_0.png: the spliced fake with a ground-truth mask
    assert explorer.current_sample().mask is not None

    changes = [
        ("opacity", 0.9),
        ("colormap", "viridis"),
        ("threshold", 0.05),
        ("mask", False),
        ("model", "student B"),
        ("image", 0),
        ("filter", "fake"),
        ("split", "train"),
    ]
    for name, value in changes:
        before_png, before_score, renders = explorer.view.value, explorer.score.value, explorer.renders
        c[name].value = value
        assert explorer.renders > renders, f"{name} did not trigger a render"
        assert explorer.view.value != before_png or explorer.score.value != before_score, name
        assert explorer.view.value != before_png, f"{name} did not change the picture"


def test_explorer_filters_and_cache(explorer: HeatmapExplorer, monkeypatch: pytest.MonkeyPatch) -> None:
    c = explorer.controls
    c["filter"].value = "real"
    assert all(s.label == 0 for s in explorer.visible_samples()) and len(c["image"].options) == 2
    c["filter"].value = "fake"
    assert all(s.label == 1 for s in explorer.visible_samples())

    calls = []
    pipe = explorer.pipelines["student A"]
    original = pipe.predict
    monkeypatch.setattr(pipe, "predict", lambda image: calls.append(image) or original(image))
    c["filter"].value = "misclassified"
    c["threshold"].value = 0.0  # everything is called fake → the real images are the misclassified ones
    assert [s.label for s in explorer.visible_samples()] == [0, 0]
    c["threshold"].value = 1.0  # nothing reaches 1.0 → the fakes are misclassified
    assert [s.label for s in explorer.visible_samples()] == [1, 1]
    n = len(calls)
    c["opacity"].value = 0.2
    c["threshold"].value = 0.0
    assert len(calls) == n  # predictions are cached per (model, image)
    assert n <= 4  # each test image was scored at most once


def test_explorer_empty_filter_and_bad_arguments(tmp_path: Path) -> None:
    only_real = [Sample(tmp_path / "r.png", 0, "test", None, None)]
    _image(40, 40, 3).save(only_real[0].path)
    explorer = HeatmapExplorer(only_real, {"s": _student(0)})
    explorer.controls["filter"].value = "fake"
    assert explorer.view.value == b"" and "No image" in explorer.score.value
    explorer.controls["filter"].value = "all"
    assert _png_size(explorer.view.value)[0] > 100
    with pytest.raises(ValueError, match="at least one model"):
        HeatmapExplorer(only_real, {})
    with pytest.raises(ValueError, match="split 'val' not in the data"):
        HeatmapExplorer(only_real, {"s": _student(0)}, split="val")


def test_a_bare_patch_map_falls_back_to_the_default_geometry_of_its_grid():
    from ladeda_lib.models import LaDeDa
    from ladeda_lib.viz import fallback_geometry

    assert fallback_geometry(126) == TinyLaDeDa().geometry()
    assert fallback_geometry(31) == LaDeDa(width=2).geometry()
    with pytest.raises(ValueError, match="no default model"):
        fallback_geometry(50)
