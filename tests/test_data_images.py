"""Image loading and preprocessing: every format and mode, errors naming the file, one preprocessing path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda_lib.data.images import ImageLoadError, load_image, normalize_uint8, preprocess, resize_to_uint8
from ladeda_lib.geometry import INPUT_GEOMETRY


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp")])
def test_formats_load_as_rgb(tmp_path, fmt, ext):
    path = tmp_path / f"img.{ext}"
    Image.fromarray(_gradient()).save(path, format=fmt)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (60, 40)
    tol = 0 if fmt in ("PNG", "BMP") else 40
    assert np.abs(np.asarray(img).astype(int) - _gradient()).max() <= tol


def test_grayscale_and_palette_and_cmyk(tmp_path):
    gray = Image.fromarray(np.full((10, 12), 77, np.uint8), mode="L")
    assert np.asarray(load_image(gray)).tolist() == np.full((10, 12, 3), 77).tolist()
    pal = Image.fromarray(_gradient()).convert("P")
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").mode == "RGB"
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "c.jpg")
    r, g, b = np.asarray(load_image(tmp_path / "c.jpg")).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:3, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[5, 0].tolist() == [255, 255, 255]
    la = Image.fromarray(np.stack([np.zeros((4, 4), np.uint8), np.full((4, 4), 0, np.uint8)], -1), mode="LA")
    assert np.asarray(load_image(la)).min() == 255  # transparent black → white


def test_palette_with_transparency(tmp_path):
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 1
    pal.save(tmp_path / "t.png", transparency=1)
    assert np.asarray(load_image(tmp_path / "t.png")).min() == 255


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "g16.png"))[0, :, 0]
    assert out.tolist() == [0, 100, 255]
    assert np.asarray(load_image(arr))[0, :, 0].tolist() == [0, 100, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(_gradient(20, 50))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    img.save(tmp_path / "o.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "o.jpg").size == (20, 50)


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    bad = tmp_path / "garbage.jpg"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match="garbage.jpg"):
        load_image(bad)
    good = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:600])
    with pytest.raises(ImageLoadError, match="cut.jpg"):
        load_image(cut)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px is more than twice the limit
    with pytest.raises(ImageLoadError, match="big.png"):
        load_image(tmp_path / "big.png")


@pytest.mark.parametrize("hw", [(17, 31), (256, 256), (700, 1200)])
def test_any_size_becomes_3x256x256(hw):
    x = resize_to_uint8(np.random.default_rng(1).integers(0, 255, (*hw, 3), dtype=np.uint8))
    assert x.shape == (3, 256, 256) and x.dtype == torch.uint8


def test_preprocess_parity_between_paths(tmp_path):
    arr = np.random.default_rng(2).integers(0, 255, (123, 321, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    from_path = preprocess(tmp_path / "x.png")
    from_pil = preprocess(Image.fromarray(arr))
    from_array = preprocess(arr)
    from_float = preprocess(arr.astype(np.float32) / 255.0)
    cached = normalize_uint8(resize_to_uint8(tmp_path / "x.png"))
    batch = normalize_uint8(resize_to_uint8(arr)[None])[0]
    assert from_path.shape == (3, 256, 256) and from_path.dtype == torch.float32
    for other in (from_pil, from_array, from_float, cached, batch):
        torch.testing.assert_close(other, from_path, rtol=0, atol=1e-6)


def test_resize_is_bicubic_antialiased_and_normalisation_is_imagenet():
    # A constant image stays constant; its normalised value is (v/255 - mean)/std.
    x = preprocess(np.full((300, 500, 3), 200, np.uint8))
    expected = (200 / 255 - torch.tensor(INPUT_GEOMETRY.mean)) / torch.tensor(INPUT_GEOMETRY.std)
    torch.testing.assert_close(x[:, 5, 7], expected.float(), rtol=0, atol=1e-6)
    # Antialiasing: a 1-px checkerboard shrunk 4× averages to grey instead of aliasing.
    checker = (np.indices((1024, 1024)).sum(0) % 2 * 255).astype(np.uint8)
    small = resize_to_uint8(checker).float()
    assert abs(small.mean().item() - 127.5) < 2 and small.std().item() < 3
    with pytest.raises(TypeError):
        normalize_uint8(torch.zeros(3, 4, 4))
