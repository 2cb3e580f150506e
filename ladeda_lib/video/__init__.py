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

The package is the table of contents: :mod:`.read` (open, sample, decode), :mod:`.scoring` (a clip's
track, segments and verdict), :mod:`.overlay` (the heatmap video), :mod:`.live` (cameras and streams).
Introduced in notebook 10.
"""

from ladeda_lib.video.live import LiveReader, open_source, watch
from ladeda_lib.video.overlay import overlay_frame, write_overlay
from ladeda_lib.video.read import (
    FRAME_KEYS,
    VIDEO_EXTENSIONS,
    VIDEO_RESIZE,
    DecodedFrame,
    FrameReader,
    FrameSampler,
    VideoError,
    VideoInfo,
    convert_frame,
    decoded_frames,
    is_video,
    open_video,
    truncation_note,
    video_info,
)
from ladeda_lib.video.scoring import (
    VideoReport,
    find_segments,
    partial_path,
    score_video,
    smooth_track,
    stage_times,
    write_frame_rows,
)

__all__ = [
    "DecodedFrame",
    "FRAME_KEYS",
    "FrameReader",
    "FrameSampler",
    "LiveReader",
    "VIDEO_EXTENSIONS",
    "VIDEO_RESIZE",
    "VideoError",
    "VideoInfo",
    "VideoReport",
    "convert_frame",
    "decoded_frames",
    "find_segments",
    "is_video",
    "open_source",
    "open_video",
    "overlay_frame",
    "partial_path",
    "score_video",
    "smooth_track",
    "stage_times",
    "truncation_note",
    "video_info",
    "watch",
    "write_frame_rows",
    "write_overlay",
]
