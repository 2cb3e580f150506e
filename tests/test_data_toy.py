"""The toy dataset: WildRF layout, determinism, masks that match the spliced regions, platform styles."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from ladeda_lib.data.layouts import detect_dataset
from ladeda_lib.data.shortcut import global_statistics, standardized_mean_differences
from ladeda_lib.data.toy import (
    ToyConfig,
    make_toy_dataset,
    render_toy_image,
    render_toy_pair,
    toy_item_path,
    toy_item_seed,
)

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
        # away from the 8-px feathered edge the real part is untouched
        from scipy import ndimage

        far = ~ndimage.binary_dilation(r.mask, structure=np.ones((3, 3)), iterations=6)
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


def _phase_spread(image: np.ndarray, period: int = 8) -> float:
    """How periodic an image's fine detail is: the spread of its high-pass residual's mean per phase (mod 8)."""
    from scipy import ndimage

    gray = image.astype(np.float64).mean(-1)
    residual = gray - ndimage.uniform_filter(gray, 5)
    h, w = (s // period * period for s in residual.shape)
    phases = residual[:h, :w].reshape(h // period, period, w // period, period).mean(axis=(0, 2))
    return float(phases.std())


def test_pair_shares_the_scene_and_differs_only_in_local_periodic_traces():
    from scipy import ndimage

    cfg = ToyConfig(min_side=128, max_side=160)
    for seed in range(3):
        real, fake = render_toy_pair(seed, cfg)
        assert real.shape == fake.shape
        # the same scene: blurred, the two images are nearly the same ...
        smooth = [ndimage.gaussian_filter(x.astype(float), (3, 3, 0)) for x in (real, fake)]
        assert np.abs(smooth[0] - smooth[1]).mean() < 2.0
        # ... while the fake's fine detail repeats with the decoder's period and the photograph's does not
        assert _phase_spread(fake) > 3 * _phase_spread(real), (_phase_spread(fake), _phase_spread(real))


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    from io import BytesIO

    buf = BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(BytesIO(buf.getvalue())).convert("RGB"))


def test_fakes_match_photographs_in_global_statistics_as_the_models_see_them():
    # the reddit-like platform's light JPEG, then the shared 256x256 input geometry
    import torch

    from ladeda_lib.data.images import resize_to_uint8

    cfg = ToyConfig()
    pairs = [render_toy_pair(100 + i, cfg) for i in range(10)]
    images = torch.stack([resize_to_uint8(_jpeg(x, cfg.match_quality)) for pair in pairs for x in pair])
    labels = np.array([0, 1] * len(pairs))
    d = standardized_mean_differences(global_statistics(images), labels)
    assert max(abs(v) for v in d.values()) < 0.2, d
