"""The fast still and frame paths (ladeda_lib.decode): the integer bicubic against the reference resize, the
decoder's scaler against it, JPEG draft mode, decoding ahead in threads."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ladeda_lib.data import normalize_uint8, resize_to_uint8
from ladeda_lib.data.toy import render_toy_image
from ladeda_lib.decode import load_uint8, prefetch, resize_uint8
from ladeda_lib.inference import InferencePipeline
from ladeda_lib.registry import get_entry
from ladeda_lib.video import convert_frame


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Real photographs (at their own size and as a 1080p frame) and toy images, RGB uint8, even sides."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    frames = [np.asarray(Image.fromarray(photos[0]).resize((1920, 1080), Image.BICUBIC))]
    toys = [render_toy_image(100 + s, s % 2).image for s in range(4)]
    return [np.ascontiguousarray(a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2, :3]) for a in photos + frames + toys]


@pytest.fixture(scope="module")
def students() -> dict[str, object]:
    return {
        name: InferencePipeline(get_entry(name).path, threads=1)
        for name in ("toy-student-plain", "toy-student-augmented")
    }


def _logits(pipe: InferencePipeline, batch: torch.Tensor) -> np.ndarray:
    return pipe.run_tensor(normalize_uint8(batch))[0]


def test_fast_resize_is_the_reference_kernel_within_a_few_grey_levels(images, students) -> None:
    reference = torch.stack([resize_to_uint8(a) for a in images])
    fast = torch.stack([resize_uint8(a, "fast") for a in images])
    assert torch.equal(torch.stack([resize_uint8(a, "exact") for a in images]), reference)
    diff = (fast.int() - reference.int()).abs()
    assert diff.max() <= 6 and diff.float().mean() < 0.3  # measured over 70 images: max 5, mean 0.17
    for predictor in students.values():
        want, got = _logits(predictor, reference), _logits(predictor, fast)
        assert np.abs(want - got).max() < 0.2  # measured over 70 images: 0.10 at most
        changed = (want >= 0) != (got >= 0)
        assert np.all(np.abs(want[changed]) < 0.2)  # a decision moves only for a logit that close to the threshold


def test_the_decoders_scaler_is_less_exact_than_the_fast_resize(images, students) -> None:
    """Why ``resize="scaler"`` is never the default: swscale resizes in YUV, before the colour conversion."""
    frames = [av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format="yuv420p") for a in images]
    reference = torch.stack([resize_to_uint8(f.to_ndarray(format="rgb24")) for f in frames])
    scaler = torch.stack([convert_frame(f, "scaler")[0] for f in frames])
    fast = torch.stack([convert_frame(f, "fast")[0] for f in frames])
    err = {name: (x.int() - reference.int()).abs().float().mean() for name, x in (("scaler", scaler), ("fast", fast))}
    assert err["scaler"] > 3 * err["fast"], err  # measured over 70 images: mean 1.76 against 0.17 grey levels
    plain = students["toy-student-plain"]
    assert (
        np.abs(_logits(plain, scaler) - _logits(plain, reference)).max()
        > np.abs(_logits(plain, fast) - _logits(plain, reference)).max()
    )


def test_resize_rejects_what_it_cannot_take() -> None:
    with pytest.raises(ValueError, match="resize method"):
        resize_uint8(np.zeros((8, 8, 3), np.uint8), "lanczos")
    with pytest.raises(ValueError, match="uint8"):
        resize_uint8(np.zeros((8, 8, 3), np.float32), "fast")


def test_draft_mode_decodes_a_large_jpeg_smaller_and_reports_its_size(tmp_path: Path) -> None:
    from skimage import data

    big = np.asarray(Image.fromarray(data.astronaut()).resize((1920, 1080), Image.BICUBIC))
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=90)
    full, size = load_uint8(path)
    drafted, draft_size = load_uint8(path, draft=True)
    assert size == draft_size == (1920, 1080) and drafted.shape == full.shape == (3, 256, 256)
    diff = (drafted.int() - full.int()).abs().float().mean()
    assert 0 < diff < 5  # a different image, not a broken one
    small = tmp_path / "small.jpg"
    Image.fromarray(big[:300, :400]).save(small, quality=90)  # too small to draft: decoded as it is
    assert torch.equal(load_uint8(small, draft=True)[0], load_uint8(small)[0])
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.fromarray(big).save(rotated, quality=90, exif=exif)
    assert load_uint8(rotated, draft=True)[1] == load_uint8(rotated)[1] == (1080, 1920)


def test_prefetch_keeps_order_and_raises_at_the_bad_item() -> None:
    assert list(prefetch(lambda x: x * x, range(20), workers=2, ahead=4)) == [x * x for x in range(20)]
    assert list(prefetch(str, [1, 2], workers=1)) == ["1", "2"]

    def fail_on_3(x: int) -> int:
        if x == 3:
            raise ValueError("bad item 3")
        return x

    seen = []
    with pytest.raises(ValueError, match="bad item 3"):
        for value in prefetch(fail_on_3, range(10), workers=2, ahead=2):
            seen.append(value)
    assert seen == [0, 1, 2]
