"""Live sources: a camera or stream read by a thread that keeps only the newest frame, scored as it comes.

Part of :mod:`ladeda_lib.video`. Introduced in notebook 10.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from ladeda_lib.data import normalize_uint8
from ladeda_lib.video.read import DecodedFrame, VideoError, convert_frame, decoded_frames, open_video, video_info


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
