"""Video files and streams: frames decoded in a thread, scored, smoothed over time, cut into fake segments.

A clip is a sequence of images, so the detector itself does not change — only how frames reach it and what is
made of a track of scores::

    pipe = InferencePipeline("weights/export/student_float32.tflite")
    report = score_video(pipe, "clip.mp4", every=2)
    report.segments, report.verdict        # [(2.02, 4.01)], "fake"
    write_overlay(pipe, "clip.mp4", "overlay.mp4", report)

* **Decoding** uses PyAV (FFmpeg inside the wheel; no system ffmpeg). :class:`FrameReader` decodes in a
  background thread (FFmpeg's own frame threads underneath), converts each *sampled* frame to the model's uint8
  256×256 input there, and hands frames over a bounded queue, so decoding overlaps with scoring.
* **Sampling** (:class:`FrameSampler`): every frame, every N-th frame, or F frames per second of video time.
* **Resizing** (``resize``): ``"fast"`` (default) converts to RGB at full size and runs the antialiased bicubic
  kernel on uint8, ``"exact"`` the float reference of :mod:`ladeda_lib.data`, ``"scaler"`` lets swscale resize in
  YUV inside the decoder — measured not exact enough (:mod:`ladeda_lib.decode` has the numbers), so never chosen
  by default.
* **Over time** (:func:`smooth_track`, :func:`find_segments`): per-frame probabilities are smoothed by a centred
  running median (a median keeps the edges of a fake segment where they are), and runs of smoothed scores at or
  above the decision threshold form the fake segments; the clip is fake when one lasts at least ``min_segment``
  seconds.
* **Bad input** raises :class:`VideoError` (missing file, not a video, no video stream, unknown codec); a
  truncated file is scored up to the cut and the report says so (:attr:`VideoReport.truncated`).
* **Streams** (:func:`watch`): a camera or a URL, read by a thread that keeps only the newest frame, so a slow
  scorer drops frames (and counts them) instead of falling behind.

Introduced in notebook 10.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.data import normalize_uint8
from ladeda_lib.decode import resize_uint8
from ladeda_lib.geometry import INPUT_GEOMETRY

#: File suffixes treated as videos by ``ladeda predict`` (lower case, with the dot).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")
#: Ways a decoded frame becomes the model's 256×256 input.
VIDEO_RESIZE = ("fast", "exact", "scaler")
#: Keys of a per-frame row (:attr:`VideoReport.rows`), in the order CSV files list them.
FRAME_KEYS = ("index", "time", "fake_probability", "logit", "verdict", "smoothed")


class VideoError(ValueError):
    """A video that cannot be read: missing, not a video, no video stream, unknown codec. Names the file."""


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a video suffix (:data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# ----------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------
class FrameSampler:
    """Which decoded frames to score: every ``every``-th frame, or ``fps`` frames per second of video time.

    With ``fps`` a frame is taken when its time reaches the next slot of a grid of ``1 / fps`` seconds, so a
    30 frames/s clip sampled at 10 gives frames 0, 3, 6, …, and a variable-rate clip gets one frame per slot.
    Works behind notebook 10.
    """

    def __init__(self, every: int = 1, fps: float | None = None) -> None:
        if int(every) < 1:
            raise ValueError(f"--every must be at least 1, got {every}")
        if fps is not None and not (float(fps) > 0 and math.isfinite(float(fps))):
            raise ValueError(f"--fps must be a positive number, got {fps}")
        if fps is not None and int(every) != 1:
            raise ValueError("give --every or --fps, not both")
        self.every, self.fps = int(every), (None if fps is None else float(fps))
        self._next_slot = 0

    def take(self, index: int, time: float) -> bool:
        """Whether the frame with decode ``index`` (0, 1, …) and ``time`` (seconds) is scored."""
        if self.fps is None:
            return index % self.every == 0
        slot = math.floor(time * self.fps + 1e-6)
        if slot < self._next_slot:
            return False
        self._next_slot = slot + 1
        return True


# ----------------------------------------------------------------------------------------------------
# Opening and decoding
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (``frames`` 0 and ``duration`` None: unknown)."""

    width: int
    height: int
    fps: float
    frames: int
    duration: float | None
    codec: str


def open_video(source: str | os.PathLike, format: str | None = None, options: dict[str, str] | None = None) -> Any:
    """Open a file, URL or device with PyAV; :class:`VideoError` with a clear message when it is not a video.

    Returns the open container (the caller closes it); its first video stream is ``container.streams.video[0]``.
    """
    import av

    text = str(source)
    is_url = "://" in text
    if not is_url and format is None:
        path = Path(text)
        if not path.exists():
            raise VideoError(f"video file not found: {path}")
        if path.is_dir():
            raise VideoError(f"{path} is a folder, not a video")
    try:
        container = av.open(text, format=format, options=options or {}, timeout=10.0 if is_url else None)
    except av.error.FFmpegError as err:
        raise VideoError(
            f"{text}: cannot open as a video ({err.strerror or err}); expected e.g. MP4, MKV, WebM"
        ) from err
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        container.close()
        raise VideoError(f"{text}: the file has no video stream (streams found: {kinds})")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.name:
        container.close()
        raise VideoError(f"{text}: the video stream's codec is unknown to the bundled FFmpeg")
    return container


def video_info(container: Any) -> VideoInfo:
    """:class:`VideoInfo` of an open container's first video stream."""
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    return VideoInfo(
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        fps=float(rate) if rate else 0.0,
        frames=int(stream.frames or 0),
        duration=duration,
        codec=stream.codec_context.name,
    )


@dataclass
class DecodedFrame:
    """One sampled frame: decode ``index``, ``time`` (s), model ``image`` uint8 (3, 256, 256), ``size`` (W, H),
    and the full-size ``rgb`` (H, W, 3) uint8 when it was asked for."""

    index: int
    time: float
    image: torch.Tensor
    size: tuple[int, int]
    rgb: np.ndarray | None = None


def convert_frame(frame: Any, resize: str = "fast", keep_rgb: bool = False) -> tuple[torch.Tensor, np.ndarray | None]:
    """A decoded PyAV frame → (model input uint8 (3, 256, 256), full RGB (H, W, 3) or None)."""
    side = INPUT_GEOMETRY.image_size
    if resize == "scaler":
        small = frame.to_ndarray(format="rgb24", width=side, height=side, interpolation="BICUBIC")
        image = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1).contiguous()
        return image, (frame.to_ndarray(format="rgb24") if keep_rgb else None)
    if resize not in VIDEO_RESIZE:
        raise ValueError(f"unknown resize {resize!r}; expected one of {', '.join(VIDEO_RESIZE)}")
    rgb = frame.to_ndarray(format="rgb24")
    return resize_uint8(rgb, resize), (rgb if keep_rgb else None)


def _frame_time(frame: Any, index: int, fps: float) -> float:
    if frame.time is not None:
        return float(frame.time)
    return index / fps if fps else float(index)


def decoded_frames(container: Any, status: dict[str, Any]) -> Iterator[tuple[int, float, Any]]:
    """Every frame of the first video stream as ``(index, time, frame)``; decoding errors end the iteration.

    ``status`` receives ``decoded`` (frames decoded), ``last_time`` and ``error`` (the message of a decoding
    error that stopped it, or None). Frames are decoded with FFmpeg's threads (``thread_type="AUTO"``).
    """
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    info = video_info(container)
    status.update(decoded=0, last_time=None, error=None)
    index = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                time_s = _frame_time(frame, index, info.fps)
                status.update(decoded=index + 1, last_time=time_s)
                yield index, time_s, frame
                index += 1
    except av.error.EOFError:
        pass
    except av.error.FFmpegError as err:
        status["error"] = f"{type(err).__name__}: {err.strerror or err}"


def truncation_note(info: VideoInfo, status: dict[str, Any]) -> str | None:
    """Why the decoded frames fall short of what the container declares, or None when they do not.

    A file is reported truncated when decoding stopped on an error, when fewer frames came out than the header
    declares, or when the last frame ends more than two frames (and 0.1 s) before the declared duration.
    """
    decoded, last = status.get("decoded", 0), status.get("last_time")
    if status.get("error"):
        return f"decoding stopped after {decoded} frames ({status['error']})"
    if info.frames and decoded < info.frames:
        return f"only {decoded} of the {info.frames} frames the header declares could be decoded"
    if info.duration and info.fps and decoded:
        end = (last or 0.0) + 1.0 / info.fps
        if end < info.duration - max(2.0 / info.fps, 0.1):
            return f"frames end at {end:.2f} s, the header declares {info.duration:.2f} s"
    if decoded == 0:
        return "no frame could be decoded"
    return None


class FrameReader:
    """Iterate the sampled frames of a video, decoded and converted in a background thread.

    ``for frame in FrameReader("clip.mp4", FrameSampler(every=2)): …`` yields :class:`DecodedFrame` in order;
    a bounded queue (``queue_size``) keeps the decoder at most that far ahead. After the iteration
    :attr:`decoded` is the number of frames decoded and :attr:`truncated` the truncation note or None.
    Raises :class:`VideoError` when the source cannot be opened. Works behind notebook 10.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        sampler: FrameSampler | None = None,
        resize: str = "fast",
        keep_rgb: bool = False,
        queue_size: int = 48,
    ) -> None:
        if resize not in VIDEO_RESIZE:
            raise ValueError(f"unknown resize {resize!r}; expected one of {', '.join(VIDEO_RESIZE)}")
        self.source = str(source)
        self.sampler = sampler or FrameSampler()
        self.resize, self.keep_rgb = resize, keep_rgb
        self.container = open_video(source)
        self.info = video_info(self.container)
        self.status: dict[str, Any] = {}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def decoded(self) -> int:
        return int(self.status.get("decoded", 0))

    @property
    def truncated(self) -> str | None:
        return truncation_note(self.info, self.status)

    def _produce(self) -> None:
        try:
            for index, time_s, frame in decoded_frames(self.container, self.status):
                if self._stop.is_set():
                    return
                if not self.sampler.take(index, time_s):
                    continue
                image, rgb = convert_frame(frame, self.resize, self.keep_rgb)
                item = DecodedFrame(index, time_s, image, (frame.width, frame.height), rgb)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._queue.put(err)
        finally:
            self._queue.put(None)

    def __iter__(self) -> Iterator[DecodedFrame]:
        self._thread = threading.Thread(target=self._produce, name="ladeda-decode", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decoder thread and close the file (called at the end of the iteration)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread = None
        self.container.close()


# ----------------------------------------------------------------------------------------------------
# Over time: smoothing and segments
# ----------------------------------------------------------------------------------------------------
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
def _partial_path(path: Path) -> Path:
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
    tmp = _partial_path(out)
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, out)
    return out


# ----------------------------------------------------------------------------------------------------
# The heatmap overlay video
# ----------------------------------------------------------------------------------------------------
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
    tmp = _partial_path(out)
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
def open_source(source: str) -> Any:
    """A camera index (``"0"``), a stream URL or a file → an open container (:class:`VideoError` otherwise).

    Camera indices use the platform's capture device: ``/dev/videoN`` through v4l2 on Linux, AVFoundation on
    macOS; elsewhere pass the device the way FFmpeg names it.
    """
    if source.isdigit():
        if sys.platform.startswith("linux"):
            return open_video(f"/dev/video{source}", format="v4l2")
        if sys.platform == "darwin":
            return open_video(source, format="avfoundation", options={"framerate": "30"})
        raise VideoError(f"camera {source}: on {sys.platform} pass the capture device as FFmpeg names it")
    return open_video(source)


class LiveReader:
    """Decode a stream in a thread and keep only the newest frame: :meth:`latest` returns it (or waits for one).

    A frame replaced before anyone took it is counted in :attr:`dropped`. ``realtime`` paces a *file* at its
    own frame rate, as a camera would deliver it (a live source needs no pacing). Works behind notebook 10.
    """

    def __init__(self, source: str, resize: str = "fast", realtime: bool = False) -> None:
        self.container = open_source(source)
        self.info = video_info(self.container)
        self.resize, self.realtime = resize, realtime
        self.status: dict[str, Any] = {}
        self.dropped = 0
        self._slot: DecodedFrame | None = None
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="ladeda-live", daemon=True)
        self._thread.start()

    @property
    def decoded(self) -> int:
        return int(self.status.get("decoded", 0))

    @property
    def ended(self) -> bool:
        """Whether the stream has ended (or failed) and no frame is waiting."""
        with self._cond:
            return self._done and self._slot is None

    def _produce(self) -> None:
        started, first = time.perf_counter(), None
        try:
            for index, time_s, frame in decoded_frames(self.container, self.status):
                if self._stop.is_set():
                    break
                if self.realtime:
                    first = time_s if first is None else first
                    delay = started + (time_s - first) - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                image, _ = convert_frame(frame, self.resize)
                item = DecodedFrame(index, time_s, image, (frame.width, frame.height))
                with self._cond:
                    if self._slot is not None:
                        self.dropped += 1
                    self._slot = item
                    self._cond.notify_all()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._error = err
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def latest(self, timeout: float | None = None) -> DecodedFrame | None:
        """The newest frame not yet taken; waits for one; None when the stream has ended (or on ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._done, timeout)
            if self._error is not None:
                raise self._error
            item, self._slot = self._slot, None
            return item

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._slot = None
        self._thread.join(timeout=5)
        self.container.close()


def watch(
    pipe: Any,
    source: str,
    *,
    resize: str = "fast",
    smooth: float = 1.0,
    realtime: bool = False,
    max_frames: int | None = None,
    duration: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Score a live source frame by frame; yields one update per scored frame.

    Each update: ``time`` (stream seconds), ``index``, ``fake_probability``, ``smoothed`` (median of the last
    ``smooth`` seconds — causal, nothing from the future), ``verdict`` of the smoothed score (threshold and unsure
    band of ``pipe``), and the counters ``decoded``, ``scored`` and ``dropped`` (frames the scorer never saw
    because a newer one had arrived). Stops at the end of the stream, after ``max_frames`` scored frames or
    ``duration`` seconds of wall-clock time. Introduced in notebook 10.
    """
    reader = LiveReader(source, resize, realtime)
    history: deque[tuple[float, float]] = deque()
    scored, started = 0, time.perf_counter()
    try:
        while True:
            if max_frames is not None and scored >= max_frames:
                break
            if duration is not None and time.perf_counter() - started >= duration:
                break
            frame = reader.latest(timeout=1.0)
            if frame is None:
                if reader.ended:
                    break
                continue
            logits, _ = pipe.run_tensor(normalize_uint8(frame.image[None]))
            result = pipe.result_for(float(logits[0]), None, frame.size)
            scored += 1
            history.append((frame.time, result["fake_probability"]))
            while history and history[0][0] < frame.time - smooth:
                history.popleft()
            smoothed = float(np.median([p for _, p in history]))
            yield {
                "time": round(frame.time, 4),
                "index": frame.index,
                "fake_probability": result["fake_probability"],
                "smoothed": smoothed,
                "verdict": pipe.verdict(smoothed),
                "decoded": reader.decoded,
                "scored": scored,
                "dropped": reader.dropped,
            }
    finally:
        reader.close()
