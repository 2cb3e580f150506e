"""Reading video: open a file or stream, sample frames, decode them in a thread into the model's input.

Part of :mod:`ladeda_lib.video`. Introduced in notebook 10.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.decode import resize_uint8
from ladeda_lib.geometry import INPUT_GEOMETRY

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
