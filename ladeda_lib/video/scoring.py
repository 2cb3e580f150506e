"""Scoring a clip: per-frame probabilities, the smoothed track, fake segments, the clip's verdict, rows on disk.

Part of :mod:`ladeda_lib.video`. Introduced in notebook 10.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.data import normalize_uint8
from ladeda_lib.decode import resize_uint8
from ladeda_lib.geometry import INPUT_GEOMETRY
from ladeda_lib.video.read import (
    FRAME_KEYS,
    DecodedFrame,
    FrameReader,
    FrameSampler,
    VideoInfo,
    convert_frame,
    open_video,
)


def smooth_track(times: np.ndarray, values: np.ndarray, window: float) -> np.ndarray:
    """Centred running median of ``values`` over ``window`` seconds of ``times``: (N,) → (N,) float32.

    Each sample becomes the median of the samples within ``window / 2`` seconds of it (itself included); a
    window of 0 leaves the track as it is. A median, unlike a mean, keeps a step (the start of a fake segment)
    where it is and ignores isolated outliers shorter than half the window. Introduced in notebook 10.
    """
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError(f"times and values must be two (N,) arrays, got {t.shape} and {v.shape}")
    if window <= 0 or len(v) < 2:
        return v.astype(np.float32)
    half = window / 2 + 1e-9
    lo = np.searchsorted(t, t - half, side="left")
    hi = np.searchsorted(t, t + half, side="right")
    return np.array([np.median(v[a:b]) for a, b in zip(lo, hi, strict=True)], dtype=np.float32)


def find_segments(
    times: np.ndarray, values: np.ndarray, threshold: float, min_duration: float = 0.0, frame_duration: float = 0.0
) -> list[tuple[float, float]]:
    """Runs of ``values >= threshold`` as ``(start, end)`` seconds, those shorter than ``min_duration`` dropped.

    Sample ``k`` is the frame shown from ``times[k]`` for ``frame_duration`` seconds. A boundary sits halfway
    between the end of the last frame below the threshold and the start of the first one at or above it — exactly
    the frame's start when every frame is scored, the best guess when frames are sampled. A run that starts at the
    first sample starts at its time; one that ends at the last sample ends with that frame. Introduced in
    notebook 10.
    """
    t = np.asarray(times, dtype=np.float64)
    above = np.asarray(values, dtype=np.float64) >= threshold
    segments: list[tuple[float, float]] = []
    i, n = 0, len(t)
    while i < n:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and above[j + 1]:
            j += 1
        start = t[i] if i == 0 else (t[i - 1] + frame_duration + t[i]) / 2
        end = t[j] + frame_duration if j == n - 1 else (t[j] + frame_duration + t[j + 1]) / 2
        if end - start >= min_duration:
            segments.append((round(float(start), 4), round(float(end), 4)))
        i = j + 1
    return segments


# ----------------------------------------------------------------------------------------------------
# Scoring a clip
# ----------------------------------------------------------------------------------------------------
@dataclass
class VideoReport:
    """The result of :func:`score_video`: one row per scored frame (:data:`FRAME_KEYS`), the smoothed track's
    fake segments, the clip's verdict, and what happened while decoding."""

    source: str
    info: VideoInfo
    rows: list[dict[str, Any]]
    segments: list[tuple[float, float]]
    verdict: str
    threshold: float
    calibrated: bool
    decoded: int
    truncated: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def times(self) -> np.ndarray:
        return np.array([r["time"] for r in self.rows], dtype=np.float64)

    @property
    def probabilities(self) -> np.ndarray:
        return np.array([r["fake_probability"] for r in self.rows], dtype=np.float64)

    @property
    def smoothed(self) -> np.ndarray:
        return np.array([r["smoothed"] for r in self.rows], dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """The per-clip record ``ladeda predict --json`` prints (JSON-serialisable)."""
        smoothed = self.smoothed
        return {
            "file": self.source,
            "kind": "video",
            "verdict": self.verdict,
            "segments": [list(s) for s in self.segments],
            "frames_scored": len(self.rows),
            "frames_decoded": self.decoded,
            "max_smoothed_probability": float(smoothed.max()) if len(smoothed) else None,
            "threshold": self.threshold,
            "calibrated": self.calibrated,
            "truncated": self.truncated,
            "video": {"width": self.info.width, "height": self.info.height, "fps": round(self.info.fps, 3)},
            "settings": self.settings,
            "error": None,
        }


def _clip_verdict(segments: list[tuple[float, float]], smoothed: np.ndarray, unsure: tuple[float, float] | None) -> str:
    if segments:
        return "fake"
    if unsure is not None and len(smoothed) and float(smoothed.max()) >= unsure[0]:
        return "unsure"
    return "real"


def score_video(
    pipe: Any,
    source: str | os.PathLike,
    *,
    every: int = 1,
    fps: float | None = None,
    resize: str = "fast",
    smooth: float = 1.0,
    min_segment: float = 0.5,
    batch_size: int = 16,
    on_frame: Callable[[dict[str, Any]], None] | None = None,
) -> VideoReport:
    """Score the sampled frames of one video with an :class:`~ladeda_lib.inference.InferencePipeline`.

    Frames are decoded and resized in a background thread (:class:`FrameReader`) and scored ``batch_size`` at a
    time. Each row holds :data:`FRAME_KEYS` (``verdict`` with the pipeline's threshold and unsure band). The
    fake segments are the runs of the smoothed track (:func:`smooth_track` over ``smooth`` seconds) at or above
    the threshold — the unsure band's upper edge when one is set — lasting at least ``min_segment`` seconds.
    The clip's verdict is ``"fake"`` when there is such a segment, else ``"unsure"`` when the smoothed score ever
    reaches the unsure band, else ``"real"``. Raises :class:`VideoError` for a file that cannot be opened; a truncated file is scored up to the cut.
    Introduced in notebook 10.
    """
    started = time.perf_counter()
    reader = FrameReader(source, FrameSampler(every, fps), resize)
    rows: list[dict[str, Any]] = []
    batch: list[DecodedFrame] = []

    def flush() -> None:
        x = normalize_uint8(torch.stack([f.image for f in batch]))
        logits, _ = pipe.run_tensor(x)
        for frame, logit in zip(batch, logits, strict=True):
            result = pipe.result_for(float(logit), None, frame.size)
            row = {
                "index": frame.index,
                "time": round(frame.time, 4),
                "fake_probability": result["fake_probability"],
                "logit": result["logit"],
                "verdict": result["verdict"],
            }
            rows.append(row)
            if on_frame is not None:
                on_frame(row)
        batch.clear()

    for frame in reader:
        batch.append(frame)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    info = reader.info
    times = np.array([r["time"] for r in rows], dtype=np.float64)
    probs = np.array([r["fake_probability"] for r in rows], dtype=np.float64)
    smoothed = smooth_track(times, probs, smooth)
    for row, value in zip(rows, smoothed, strict=True):
        row["smoothed"] = float(value)
    cut = pipe.threshold if pipe.unsure is None else pipe.unsure[1]
    segments = find_segments(times, smoothed, cut, min_segment, 1.0 / info.fps if info.fps else 0.0)
    return VideoReport(
        source=str(source),
        info=info,
        rows=rows,
        segments=segments,
        verdict=_clip_verdict(segments, smoothed, pipe.unsure),
        threshold=pipe.threshold,
        calibrated=pipe.calibrated,
        decoded=reader.decoded,
        truncated=reader.truncated,
        settings={"every": every, "fps": fps, "resize": resize, "smooth": smooth, "min_segment": min_segment},
        seconds=time.perf_counter() - started,
    )


def stage_times(source: str | os.PathLike, pipe: Any, frames: int = 30) -> dict[str, float]:
    """Milliseconds per frame of each stage of the video path, each measured on its own over the first ``frames``
    frames: decoding (FFmpeg threads), YUV → full RGB, the three resizes to 256×256 and the model (batch 1).

    The reference resize is timed on a quarter of the frames (it is the slow one). Introduced in notebook 10.
    """
    from PIL import Image

    from ladeda_lib.data import resize_to_uint8

    container = open_video(source)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        started = time.perf_counter()
        decoded = [frame for _, frame in zip(range(frames), container.decode(stream), strict=False)]
        decode_ms = (time.perf_counter() - started) * 1000 / max(1, len(decoded))
    finally:
        container.close()

    def per_frame(fn: Callable[[Any], Any], items: list[Any]) -> float:
        started = time.perf_counter()
        for item in items:
            fn(item)
        return (time.perf_counter() - started) * 1000 / max(1, len(items))

    rgb = [frame.to_ndarray(format="rgb24") for frame in decoded]
    x = normalize_uint8(resize_uint8(rgb[0])[None])
    side = INPUT_GEOMETRY.image_size
    return {
        "decode (FFmpeg threads)": decode_ms,
        "YUV → full RGB": per_frame(lambda f: f.to_ndarray(format="rgb24"), decoded),
        "swscale to 256 in YUV (scaler)": per_frame(lambda f: convert_frame(f, "scaler"), decoded),
        "integer bicubic (fast)": per_frame(resize_uint8, rgb),
        "PIL bicubic": per_frame(lambda a: Image.fromarray(a).resize((side, side), Image.BICUBIC), rgb),
        "float bicubic (reference)": per_frame(resize_to_uint8, rgb[: max(1, len(rgb) // 4)]),
        "model": per_frame(lambda _: pipe.run_tensor(x), rgb),
    }


# ----------------------------------------------------------------------------------------------------
# Writing results: whole files or nothing
# ----------------------------------------------------------------------------------------------------


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def write_frame_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write per-frame rows (with a ``file`` column first) as JSON lines (``.jsonl``) or CSV (``.csv``).

    Written to a temporary file and renamed, so a reader never sees half a file. Works behind notebook 10.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ValueError(f"{out}: per-frame rows are written as .jsonl or .csv, got {out.suffix!r}")
    keys = ("file", *FRAME_KEYS)
    buffer = io.StringIO()
    if suffix == ".csv":
        writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        for row in rows:
            buffer.write(json.dumps({k: row.get(k) for k in keys}) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(out)
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, out)
    return out


# ----------------------------------------------------------------------------------------------------
# The heatmap overlay video
# ----------------------------------------------------------------------------------------------------
