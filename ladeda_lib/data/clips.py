"""Generated video clips, made offline and encoded with PyAV: for notebook 10, the tests and the benchmarks.

* :func:`toy_clip_frames` — a slow pan over one toy scene (:mod:`ladeda_lib.data.toy`) whose frames between
  ``fake_start`` and ``fake_end`` seconds come from the *generated* image of the same scene, or only a spliced
  region of it: a deepfake segment in a continuous shot, with known boundaries.
* :func:`photo_pan_frames` — a slow pan over four photographs bundled with scikit-image, with fresh sensor-like
  noise in every frame so that the encoder has real work at a video site's bitrate: the timing clip.
* :func:`write_video` — encode RGB frames with libx264 from the ``av`` wheel (no system ffmpeg).

Introduced in notebook 10.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25,
    crf: int | None = 18,
    bitrate: int | None = None,
    preset: str = "veryfast",
) -> Path:
    """Encode RGB frames (H, W, 3) uint8 (even H and W) as H.264 (libx264, yuv420p); container from the suffix.

    Quality: constant ``crf`` (18: visually lossless), or a target ``bitrate`` in bits/s instead. Returns the path.
    Introduced in notebook 10.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = None
        for frame in frames:
            if stream is None:
                stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                options = {"preset": preset}
                if bitrate is not None:
                    stream.bit_rate = int(bitrate)
                elif crf is not None:
                    options["crf"] = str(crf)
                stream.options = options
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        if stream is None:
            raise ValueError(f"{path}: no frames to encode")
        for packet in stream.encode():
            out.mux(packet)
    return path


def toy_clip_frames(
    seed: int = 0,
    seconds: float = 6.0,
    fps: float = 25,
    fake_start: float = 2.0,
    fake_end: float = 4.0,
    size: int = 256,
    spliced: bool = False,
) -> Iterator[np.ndarray]:
    """Frames (size, size, 3) uint8 of a pan over toy scene ``seed``: generated between ``fake_start`` and
    ``fake_end`` seconds (frame k is fake when ``fake_start <= k / fps < fake_end``), a photograph otherwise.

    The scene is rendered once as a photograph and once as the generator's image of it (same content, only the
    local traces differ, :func:`ladeda_lib.data.toy.render_toy_image`); ``spliced`` takes the generated pixels
    only inside the toy generator's splice mask. The window moves one pixel right per frame.
    """
    from ladeda_lib.data.toy import ToyConfig, render_toy_image

    n = int(round(seconds * fps))
    side = size + n + 8
    cfg = ToyConfig(min_side=side, max_side=side)
    real = render_toy_image(seed, 0, cfg=cfg).image
    fake = render_toy_image(seed, 1, partial=spliced, cfg=cfg).image
    top = (side - size) // 2
    for k in range(n):
        source = fake if fake_start <= k / fps < fake_end else real
        yield np.ascontiguousarray(source[top : top + size, 4 + k : 4 + k + size])


def photo_pan_frames(
    width: int = 1920, height: int = 1080, seconds: float = 2.0, fps: float = 30, noise: float = 3.0, seed: int = 0
) -> Iterator[np.ndarray]:
    """Frames (height, width, 3) uint8: a slow pan over four scikit-image photographs (astronaut, chelsea, coffee,
    rocket) in a 2×2 mosaic, plus Gaussian noise of ``noise`` grey levels drawn afresh for every frame."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    tiles = [np.asarray(Image.fromarray(p).resize((width // 2 + 64, height // 2 + 64), Image.BICUBIC)) for p in photos]
    canvas = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0).astype(np.float32)
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    for k in range(n):
        y, x = (k * 60) // max(n, 1), (k * 120) // max(n, 1)
        frame = canvas[y : y + height, x : x + width] + rng.normal(0, noise, (height, width, 1)).astype(np.float32)
        yield np.clip(frame, 0, 255).astype(np.uint8)
