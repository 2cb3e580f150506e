"""The toy dataset: WildRF layout, determinism, masks that match the spliced regions, platform styles."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from ladeda_lib.data.layouts import detect_dataset
from ladeda_lib.data.toy import ToyConfig, make_toy_dataset, render_toy_image, toy_item_path, toy_item_seed

TINY = ToyConfig(train_per_class=2, val_per_class=1, test_per_class=1, min_side=64, max_side=96, partial_fraction=0.5)


def _digest(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_toy_dataset_layout_and_determinism(tmp_path):
    a = make_toy_dataset(tmp_path / "a", seed=3, config=TINY, progress=False)
    b = make_toy_dataset(tmp_path / "b", seed=3, config=TINY, progress=False)
    c = make_toy_dataset(tmp_path / "c", seed=4, config=TINY, progress=False)
    assert _digest(a) == _digest(b)  # byte-identical for the same seed
    assert _digest(a) != _digest(c)
    index = detect_dataset(a, warn=False)
    assert index.layout == "wildrf" and not index.problems
    assert index.platforms == ["facebook", "reddit", "twitter"]
    counts = index.counts()
    assert counts[("train", None)] == (2, 2) and counts[("val", None)] == (1, 1)
    assert all(counts[("test", p)] == (1, 1) for p in ("reddit", "twitter", "facebook"))
    for s in index.samples:
        assert s.mask is None or s.label == 1
        if s.mask is not None:  # masks have the size of their (possibly rescaled) image
            assert Image.open(s.mask).size == Image.open(s.path).size


def test_masks_line_up_with_spliced_regions():
    for seed in range(3):
        r = render_toy_image(seed, label=1, partial=True, cfg=TINY)
        assert r.mask is not None and r.source is not None
        diff = np.abs(r.image.astype(int) - r.source.astype(int)).mean(-1)
        inside, outside = diff[r.mask].mean(), diff[~r.mask].mean()
        assert 0.05 < r.mask.mean() < 0.6
        assert inside > 5 * max(outside, 0.1), (inside, outside)
        # away from the 3-px feathered edge the real part is untouched
        from scipy import ndimage

        far = ~ndimage.binary_dilation(r.mask, iterations=4)
        assert diff[far].max() == 0


def test_stored_mask_is_the_rendered_mask(tmp_path):
    cfg = ToyConfig(
        train_per_class=4,
        val_per_class=0,
        test_per_class=0,
        platforms=(),
        min_side=64,
        max_side=80,
        partial_fraction=1.0,
    )
    root = make_toy_dataset(tmp_path, seed=1, config=cfg, progress=False)
    for i in range(4):
        item_seed, partial = toy_item_seed(1, "train", None, 1, i, cfg.partial_fraction)
        assert partial
        render = render_toy_image(item_seed, 1, partial, cfg)
        stored = np.asarray(Image.open(root / "masks" / toy_item_path("train", None, 1, i).with_suffix(".png")))
        assert np.array_equal(stored > 127, render.mask)


def test_platforms_rescale_and_compress(tmp_path):
    root = make_toy_dataset(tmp_path, seed=0, config=TINY, progress=False)
    sizes = {}
    for p in ("reddit", "facebook"):
        sizes[p] = [max(Image.open(f).size) for f in sorted((root / "test" / p).rglob("*.jpg"))]
    assert max(sizes["facebook"]) < TINY.min_side  # facebook downscales below the rendered size
    assert min(sizes["reddit"]) >= TINY.min_side
