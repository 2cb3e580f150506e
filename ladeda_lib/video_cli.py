"""Videos on the command line: the video half of ``ladeda predict`` and ``ladeda watch``.

``ladeda predict clip.mp4 photo.jpg folder/ --model M`` scores images as before and, for each video, its sampled
frames (:func:`ladeda_lib.video.score_video`): one summary line per clip (verdict, fake segments), per-frame rows
with ``--frames-out rows.jsonl|rows.csv`` and the heatmap overlay with ``--overlay out.mp4`` (one video only).
``ladeda watch SOURCE --model M`` prints a live verdict line for a camera index, a stream URL or a file
(:func:`ladeda_lib.video.watch`). Both commands are registered by :mod:`ladeda_lib.inference_cli`, which builds
the model; this module only adds their video options and runs them. Introduced in notebook 10.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ladeda_lib.video import VideoError, score_video, watch, write_frame_rows, write_overlay


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    """The video options of ``ladeda predict``."""
    g = p.add_argument_group("videos")
    g.add_argument("--every", type=int, default=1, metavar="N", help="score every N-th frame (default: every frame)")
    g.add_argument("--fps", type=float, default=None, metavar="F", help="score F frames per second of video")
    g.add_argument(
        "--smooth", type=float, default=1.0, metavar="S", help="median window of the score track, seconds (default 1)"
    )
    g.add_argument(
        "--min-segment", type=float, default=0.5, metavar="S", help="shortest fake segment reported, seconds (0.5)"
    )
    g.add_argument("--frames-out", default=None, metavar="FILE", help="per-frame rows of every video: .jsonl or .csv")
    g.add_argument("--overlay", default=None, metavar="OUT.mp4", help="write the video with the heatmap blended in")


def add_watch_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``ladeda watch`` besides the model's."""
    p.add_argument("source", help="camera index (0), stream URL (rtsp://, http://, …) or a video file")
    p.add_argument("--smooth", type=float, default=1.0, metavar="S", help="median of the last S seconds (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many scored frames")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--realtime", action="store_true", help="pace a file at its own frame rate, as a camera delivers frames"
    )
    p.add_argument("--interval", type=float, default=0.25, metavar="S", help="seconds between printed lines (0.25)")
    p.add_argument("--resize", choices=("fast", "exact", "scaler"), default="fast", help="as for ladeda predict")
    p.add_argument("--json", action="store_true", help="one JSON object per printed update")


def _error_clip(path: Path, message: str) -> dict[str, Any]:
    return {"file": str(path), "kind": "video", "verdict": None, "segments": None, "truncated": None, "error": message}


def predict_videos(pipe: Any, videos: list[Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Score every video; write ``--frames-out`` and ``--overlay`` (whole files only); one summary per clip.

    A clip that cannot be read gets an ``error`` summary and no rows; a truncated clip is scored up to the cut
    and its summary carries the ``truncated`` note.
    """
    if args.overlay and len(videos) != 1:
        raise ValueError(f"--overlay writes one video: give exactly one video input (got {len(videos)})")
    if args.frames_out and not videos:
        raise ValueError("--frames-out needs at least one video input")
    clips, frame_rows, reports = [], [], {}
    for path in videos:
        try:
            report = score_video(
                pipe,
                path,
                every=args.every,
                fps=args.fps,
                resize=args.resize or "fast",
                smooth=args.smooth,
                min_segment=args.min_segment,
                batch_size=args.batch_size,
            )
        except VideoError as err:
            clips.append(_error_clip(path, str(err)))
            continue
        reports[path] = report
        clips.append(report.summary())
        frame_rows += [{"file": str(path), **row} for row in report.rows]
        if report.truncated:
            print(f"ladeda predict: {path}: truncated: {report.truncated}", file=sys.stderr)
    if args.frames_out and frame_rows:
        write_frame_rows(args.frames_out, frame_rows)
    if args.overlay and reports:
        ((path, report),) = reports.items()
        out = write_overlay(pipe, path, args.overlay, report)
        clips[-1]["overlay"] = str(out)
    return clips


def print_clips(clips: list[dict[str, Any]], as_json: bool) -> None:
    """One line per clip: verdict, fake segments, frames (a JSON object each with ``as_json``)."""
    for clip in clips:
        if as_json:
            print(json.dumps(clip))
        elif clip["error"] is not None:
            print(f"{clip['file']}  ERROR  {clip['error']}")
        else:
            segments = ", ".join(f"{a:.2f}–{b:.2f} s" for a, b in clip["segments"]) or "none"
            note = f"  TRUNCATED: {clip['truncated']}" if clip["truncated"] else ""
            print(
                f"{clip['file']}  video  verdict {clip['verdict']}  fake segments: {segments}  "
                f"({clip['frames_scored']} of {clip['frames_decoded']} frames scored){note}"
            )


def run_watch(pipe: Any, args: argparse.Namespace) -> int:
    """``ladeda watch``: a live line per scored frame (at most one per ``--interval``), a summary at the end."""
    import time

    last_print, update = 0.0, None
    stream = watch(
        pipe,
        args.source,
        resize=args.resize,
        smooth=args.smooth,
        realtime=args.realtime,
        max_frames=args.max_frames,
        duration=args.duration,
    )
    live = sys.stdout.isatty() and not args.json
    try:
        for update in stream:
            now = time.perf_counter()
            if now - last_print < args.interval:
                continue
            last_print = now
            if args.json:
                print(json.dumps(update), flush=True)
            else:
                line = (
                    f"t {update['time']:8.2f} s  p(fake) {update['fake_probability']:.2f}  smoothed "
                    f"{update['smoothed']:.2f}  {update['verdict'].upper():<6}  dropped {update['dropped']}"
                )
                print(line, end="\r" if live else "\n", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stream.close()
    if live:
        print()
    if update is None:
        print(f"ladeda watch: {args.source}: no frame could be scored", file=sys.stderr)
        return 1
    print(
        f"ladeda watch: {update['scored']} frames scored, {update['dropped']} dropped "
        f"of {update['decoded']} decoded; last smoothed verdict {update['verdict']}",
        file=sys.stderr,
    )
    return 0
