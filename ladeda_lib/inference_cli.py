"""``ladeda predict``: score images or folders with any model file, print a table or JSON lines.

Built on :class:`~ladeda_lib.inference.InferencePipeline` and, for ``--heatmap-dir``,
:func:`~ladeda_lib.viz.visualize_heatmap` (this module sits above both, so neither imports the other in a
circle). Introduced in notebook 06.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ladeda_lib.decode import load_uint8
from ladeda_lib.inference import RESULT_KEYS, InferencePipeline, list_images
from ladeda_lib.video import VIDEO_RESIZE
from ladeda_lib.video_cli import add_video_arguments, add_watch_arguments, predict_videos, print_clips, run_watch


def parse_band(text: str | None) -> tuple[float, float] | None:
    """``"0.3:0.7"`` → (0.3, 0.7); None stays None. ValueError with the expected form otherwise."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--unsure expects LOW:HIGH probabilities such as 0.3:0.7, got {text!r}") from None
    return low, high


def _expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[Path], list[dict[str, Any]]]:
    """Image files, video files (:data:`ladeda_lib.video.VIDEO_EXTENSIONS`, given directly or in folders) and
    error rows for inputs that do not exist / hold neither."""
    from ladeda_lib.video import is_video

    files: list[Path] = []
    videos: list[Path] = []
    errors: list[dict[str, Any]] = []
    for item in inputs:
        path = Path(item)
        try:
            if path.is_dir():
                clips = sorted(p for p in path.rglob("*") if p.is_file() and is_video(p) and not p.name.startswith("."))
                videos.extend(clips)
                files.extend(list_images(path) if not clips else _images_or_none(path))
            elif is_video(path):
                videos.append(path)
            else:
                files.append(path)
        except (FileNotFoundError, ValueError) as err:
            errors.append(dict.fromkeys(RESULT_KEYS) | {"source": str(path), "error": str(err)})
    return files, videos, errors


def _images_or_none(folder: Path) -> list[Path]:
    try:
        return list_images(folder)
    except ValueError:  # a folder of videos only
        return []


def _still_loader(resize: str | None, draft: bool) -> Any:
    """How ``ladeda predict`` decodes still images: the reference path (:func:`ladeda_lib.inference.decode_input`,
    which keeps the decoded image for heatmaps) unless ``--resize fast`` or ``--draft`` asks for the fast one."""
    method = {None: "exact", "scaler": "fast"}.get(resize, resize)  # the scaler exists for video frames only
    if method == "exact" and not draft:
        return None

    def load(path: Any) -> tuple[Any, tuple[int, int], None]:
        x, size = load_uint8(path, method=method, draft=draft)
        return x, size, None

    return load


def _run_predict(args: argparse.Namespace) -> int:
    pipe = InferencePipeline(
        args.model,
        pooling=args.pooling,
        threshold=args.threshold,
        batch_size=args.batch_size,
        threads=args.threads,
        unsure=parse_band(args.unsure),
    )
    if not pipe.calibrated:
        print(f"ladeda predict: note: {args.model}: {pipe.calibration_note}", file=sys.stderr)
    files, videos, errors = _expand_inputs(args.inputs)
    clips = predict_videos(pipe, videos, args) if videos or args.overlay or args.frames_out else []
    heatmap_dir = Path(args.heatmap_dir) if args.heatmap_dir else None
    if heatmap_dir is not None:
        from ladeda_lib.viz import visualize_heatmap

        heatmap_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    keep = heatmap_dir is not None
    loader = _still_loader(args.resize, args.draft)
    stream = pipe.iter_predictions(files, progress=sys.stderr.isatty(), keep_images=keep, loader=loader)
    for row in stream if files else []:
        image = row.pop("image", None)
        if heatmap_dir is not None and row["error"] is None and row["patch_heatmap"] is not None:
            name, n = f"{Path(row['source']).stem}_heatmap.png", 1
            while name in used:  # same file name in two folders: number the later ones
                n += 1
                name = f"{Path(row['source']).stem}_{n}_heatmap.png"
            used.add(name)
            # the image decoded for the model, the verdict and the geometry of this row: nothing is redone (the
            # fast loaders keep no decoded image: with --resize fast / --draft the heatmap decodes the file again)
            shown_on = image if image is not None else row["source"]
            row["heatmap"] = str(visualize_heatmap(shown_on, row, heatmap_dir / name, geometry=pipe.geometry()))
        rows.append(row)
    rows += errors
    if args.json:
        for row in rows:
            keys = (
                "source",
                "fake_probability",
                "is_fake",
                "verdict",
                "logit",
                "threshold",
                "calibrated",
                "image_size",
                "error",
                "heatmap",
            )
            record = {("file" if k == "source" else k): row.get(k) for k in keys if k in row}
            if record.get("image_size") is not None:
                record["image_size"] = list(record["image_size"])
            print(json.dumps(record))
    elif rows:
        width = max([len("file"), *(len(str(r["source"])) for r in rows)])
        print(f"{'file':<{width}}  {'fake_probability':>16}  {'is_fake':>7}")
        for row in rows:
            if row["error"] is not None:
                print(f"{row['source']:<{width}}  {'ERROR':>16}  {'-':>7}  {row['error']}")
            else:
                verdict = str(row["is_fake"]) if row["verdict"] != "unsure" else "unsure"
                print(f"{row['source']:<{width}}  {row['fake_probability']:>16.4f}  {verdict:>7}")
    print_clips(clips, args.json)
    failed = sum(r["error"] is not None for r in rows) + sum(c["error"] is not None for c in clips)
    truncated = sum(c.get("truncated") is not None for c in clips)
    if failed:
        print(f"ladeda predict: {failed} of {len(rows) + len(clips)} inputs could not be scored", file=sys.stderr)
    return 1 if failed or truncated else 0


def _run_watch(args: argparse.Namespace) -> int:
    pipe = InferencePipeline(args.model, threshold=args.threshold, threads=args.threads, unsure=parse_band(args.unsure))
    if not pipe.calibrated:
        print(f"ladeda watch: note: {args.model}: {pipe.calibration_note}", file=sys.stderr)
    return run_watch(pipe, args)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ladeda predict`` and ``ladeda watch``."""
    p = subparsers.add_parser(
        "predict",
        help="score images, videos or folders with a checkpoint, .onnx or .tflite model",
        description="Print fake probabilities (a table, or one JSON object per line). Exit status 1 if any "
        "input could not be scored (after reporting the rest).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, video files and/or folders of them")
    p.add_argument("--model", required=True, help="checkpoint (.pt/.pth), .onnx or .tflite file")
    p.add_argument("--heatmap-dir", default=None, help="also write a heatmap PNG per image here")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.add_argument("--threshold", type=float, default=0.5, help="fake if probability >= threshold (default 0.5)")
    p.add_argument("--pooling", default=None, help="override top-K pooling: a fraction, a count or 'all'")
    p.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    p.add_argument("--threads", type=int, default=None, help="threads of the model's backend (default: PyTorch's)")
    p.add_argument(
        "--unsure",
        default=None,
        metavar="LOW:HIGH",
        help="answer 'unsure' (neither real nor fake) for probabilities in [LOW, HIGH], e.g. 0.3:0.7",
    )
    p.add_argument(
        "--resize",
        choices=VIDEO_RESIZE,
        default=None,
        help="how images and frames reach 256x256: exact (the float reference; default for images), fast (the same "
        "bicubic on uint8, about 20x faster; default for videos), scaler (videos: swscale in YUV, less exact); "
        "measured in docs/benchmarks.md",
    )
    p.add_argument("--draft", action="store_true", help="JPEG draft mode: DCT-domain downscale before the resize")
    add_video_arguments(p)
    p.set_defaults(func=_run_predict)
    w = subparsers.add_parser(
        "watch",
        help="live verdicts for a camera, a stream URL or a video file, dropping frames rather than falling behind",
        description="Print a live verdict line per scored frame and, at the end, how many frames were scored and "
        "dropped. Exit status 1 if the source cannot be opened or no frame could be scored.",
    )
    add_watch_arguments(w)
    w.add_argument("--model", required=True, help="checkpoint (.pt/.pth), .onnx or .tflite file")
    w.add_argument("--threshold", type=float, default=0.5, help="fake if probability >= threshold (default 0.5)")
    w.add_argument("--threads", type=int, default=None, help="threads of the model's backend (default: PyTorch's)")
    w.add_argument("--unsure", default=None, metavar="LOW:HIGH", help="answer 'unsure' inside [LOW, HIGH]")
    w.set_defaults(func=_run_watch)
