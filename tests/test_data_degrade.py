"""Degradations: deterministic, and each does what its name says."""

import pytest
import torch

from ladeda_lib.data.degrade import (
    Degradation,
    apply_chain,
    center_crop,
    chain_label,
    gaussian_blur,
    jpeg,
    platform_chain,
    platform_chains,
    rescale,
    to_input_size,
)
from ladeda_lib.data.images import resize_to_uint8
from ladeda_lib.data.toy import PlatformStyle


def _image(h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(
        torch.rand(1, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear"
    )
    noise = torch.rand(1, 3, h, w, generator=g)
    return (smooth * 200 + noise * 55)[0].clamp(0, 255).to(torch.uint8)


def test_jpeg_changes_the_array_deterministically_and_more_at_low_quality():
    x = _image()
    q50, q95 = jpeg(x, 50), jpeg(x, 95)
    assert q50.dtype == torch.uint8 and q50.shape == x.shape
    assert not torch.equal(q50, x)
    assert torch.equal(q50, jpeg(x, 50))
    err = lambda y: (y.float() - x.float()).abs().mean()  # noqa: E731
    assert err(q50) > err(q95) > 0
    batch = jpeg(torch.stack([x, x]), 50)
    assert batch.shape == (2, 3, 64, 64) and torch.equal(batch[1], q50)


def test_rescale_changes_the_size_and_returns_through_the_shared_geometry():
    x = _image(64, 48)
    small = rescale(x, 0.5)
    assert small.shape == (3, 32, 24)
    assert torch.equal(small, rescale(x, 0.5))
    back = to_input_size(small)
    assert back.shape == (3, 256, 256)
    # exactly the arithmetic every image file goes through
    assert torch.equal(back, resize_to_uint8(small.permute(1, 2, 0).numpy()))
    assert torch.equal(rescale(x, 1.0), x)
    with pytest.raises(ValueError, match="rescale factor"):
        rescale(x, 1.5)


def test_blur_smooths_and_zero_sigma_is_identity():
    x = _image()
    blurred = gaussian_blur(x, 1.5)
    assert blurred.shape == x.shape
    # high-frequency energy drops
    hf = lambda y: (y.float()[:, 1:] - y.float()[:, :-1]).abs().mean()  # noqa: E731
    assert hf(blurred) < 0.5 * hf(x)
    assert torch.equal(gaussian_blur(x, 0), x)
    assert torch.equal(blurred, gaussian_blur(x, 1.5))


def test_center_crop_keeps_aspect_and_resize_squashes():
    x = _image(256, 512)
    crop = center_crop(x)
    assert crop.shape == (3, 256, 256)
    assert torch.equal(crop, x[:, :, 128:384])  # short side is already 256: native pixels of the centre
    square = _image(256, 256)
    assert torch.equal(center_crop(square), square)


def test_chains_compose_left_to_right_and_end_at_the_input_size():
    x = _image(128, 128)
    chain = (Degradation("rescale", 0.5), Degradation("jpeg", 60))
    y = apply_chain(x, chain)
    assert y.shape == (3, 256, 256)
    assert torch.equal(y, to_input_size(jpeg(rescale(x, 0.5), 60)))
    assert torch.equal(y, apply_chain(x, chain))
    assert apply_chain(x, chain, size=128).shape == (3, 128, 128)
    assert torch.equal(apply_chain(_image(256, 256), ()), _image(256, 256))
    assert chain_label(chain) == "rescale 0.5 → JPEG 60" and chain_label(()) == "clean"
    with pytest.raises(ValueError, match="unknown degradation"):
        Degradation("sharpen", 1)


def test_platform_chain_takes_the_middle_of_the_style_ranges():
    chain = platform_chain(PlatformStyle((0.45, 0.6), (60, 70)))
    assert chain == (Degradation("rescale", 0.525), Degradation("jpeg", 65))
    assert platform_chain(PlatformStyle((1.0, 1.0), (90, 95))) == (Degradation("jpeg", 92),)
    chains = platform_chains()
    assert "facebook-like" in chains and "reddit-like" not in chains


def test_wrong_input_is_refused():
    with pytest.raises(TypeError, match="uint8"):
        jpeg(torch.zeros(3, 8, 8), 50)
    with pytest.raises(ValueError, match="quality"):
        jpeg(_image(), 0)
