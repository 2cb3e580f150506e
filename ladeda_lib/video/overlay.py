"""The overlay video: each frame with its patch heatmap blended in and the smoothed score drawn, encoded with libx264.

Part of :mod:`ladeda_lib.video`. Introduced in notebook 10.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ladeda_lib.data import normalize_uint8
from ladeda_lib.geometry import INPUT_GEOMETRY
from ladeda_lib.video.read import convert_frame, decoded_frames, open_video, video_info
from ladeda_lib.video.scoring import VideoReport, partial_path


def _colormap_lut(cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def overlay_frame(
    rgb: np.ndarray,
    patch_logits: np.ndarray | None,
    label: str,
    score: float | None,
    threshold: float,
    *,
    alpha: float = 0.45,
    lut: np.ndarray | None = None,
    geometry: Any = None,
) -> np.ndarray:
    """One overlay frame: the patch heatmap blended into ``rgb`` (H, W, 3) uint8 and a score bar on top.

    The patch map is placed on the 256×256 model grid by the receptive-field geometry
    (:func:`ladeda_lib.viz.place_heatmap`; ``geometry`` None: the default student's or teacher's for that grid),
    shown as patch fake-probabilities through ``lut`` (a (256, 3) colour table) and stretched to the frame like
    the resize that made the model input. The bar shows
    ``label`` and a gauge of ``score`` with a tick at ``threshold``. Returns a new (H, W, 3) uint8 array.
    """
    from PIL import Image, ImageDraw

    from ladeda_lib.viz import place_heatmap

    height, width = rgb.shape[:2]
    out = rgb
    if patch_logits is not None:
        lut = _colormap_lut("inferno") if lut is None else lut
        side = INPUT_GEOMETRY.image_size
        placed = place_heatmap(patch_logits, (side, side), geometry)  # (256, 256) patch fake-probabilities
        index = np.round(placed * 255).astype(np.uint8)
        colour = Image.fromarray(lut[index]).resize((width, height), Image.BILINEAR)
        blend = rgb.astype(np.float32) * (1 - alpha) + np.asarray(colour, np.float32) * alpha
        out = np.clip(blend.round(), 0, 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(out))
    draw = ImageDraw.Draw(image)
    bar = max(14, height // 18)
    draw.rectangle([0, 0, width, bar], fill=(0, 0, 0))
    if score is not None:
        filled = int(round(width * 0.3 * min(max(score, 0.0), 1.0)))
        colour = (220, 50, 50) if score >= threshold else (60, 170, 90)
        draw.rectangle([width - int(width * 0.3) - 4, 3, width - int(width * 0.3) - 4 + filled, bar - 3], fill=colour)
        tick = width - int(width * 0.3) - 4 + int(round(width * 0.3 * threshold))
        draw.line([tick, 1, tick, bar - 1], fill=(255, 255, 255), width=1)
    draw.text((4, max(0, bar // 2 - 6)), label, fill=(255, 255, 255))
    return np.asarray(image)


def write_overlay(
    pipe: Any,
    source: str | os.PathLike,
    output: str | os.PathLike,
    report: VideoReport,
    *,
    alpha: float = 0.45,
    cmap: str = "inferno",
    crf: int = 20,
) -> Path:
    """Write ``source`` again with the patch heatmap blended in and the smoothed score drawn on every frame.

    Every decoded frame is written (the clip's frame count and size; frames between two scored ones keep the
    last map and score). The heatmaps are recomputed — the model costs about 1 ms a frame — for the frames
    ``report`` scored, with its resize. Encoded with libx264 (``crf``; yuv420p, or yuv444p for odd sizes) at the
    clip's average frame rate, into a temporary file renamed when complete. Introduced in notebook 10.
    """
    import av

    out = Path(output)
    if out.resolve() == Path(source).resolve():
        raise ValueError(f"--overlay {out} would overwrite the input video")
    scored = {row["index"]: row for row in report.rows}
    resize = report.settings.get("resize", "fast")
    lut = _colormap_lut(cmap)
    container = open_video(source)
    info = video_info(container)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(out)
    status: dict[str, Any] = {}
    try:
        with av.open(str(tmp), "w") as target:
            rate = Fraction(info.fps).limit_denominator(1001) if info.fps else Fraction(25)
            stream = target.add_stream("libx264", rate=rate)
            stream.width, stream.height = info.width, info.height
            stream.pix_fmt = "yuv420p" if info.width % 2 == 0 and info.height % 2 == 0 else "yuv444p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            patch, row = None, None
            for index, time_s, frame in decoded_frames(container, status):
                if index in scored:
                    image, rgb = convert_frame(frame, resize, keep_rgb=True)
                    _, patches = pipe.run_tensor(normalize_uint8(image[None]))
                    patch, row = (None if patches is None else patches[0]), scored[index]
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                score = None if row is None else row["smoothed"]
                label = f"t {time_s:6.2f} s" + ("" if row is None else f"  smoothed p(fake) {score:.2f}")
                if row is not None:
                    label += "  FAKE" if score >= report.threshold else "  real"
                picture = overlay_frame(rgb, patch, label, score, report.threshold, alpha=alpha, lut=lut)
                for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                    target.mux(packet)
            for packet in stream.encode():
                target.mux(packet)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        container.close()
    return out


# ----------------------------------------------------------------------------------------------------
# Streams: newest frame wins
# ----------------------------------------------------------------------------------------------------
