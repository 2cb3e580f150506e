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

from ladeda_lib.inference import RESULT_KEYS, InferencePipeline, list_images


def parse_band(text: str | None) -> tuple[float, float] | None:
    """``"0.3:0.7"`` → (0.3, 0.7); None stays None. ValueError with the expected form otherwise."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--unsure expects LOW:HIGH probabilities such as 0.3:0.7, got {text!r}") from None
    return low, high


def _expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Files to score and error rows for inputs that do not exist / hold no images."""
    files: list[Path] = []
    errors: list[dict[str, Any]] = []
    for item in inputs:
        path = Path(item)
        try:
            files.extend(list_images(path) if path.is_dir() else [path])
        except (FileNotFoundError, ValueError) as err:
            errors.append(dict.fromkeys(RESULT_KEYS) | {"source": str(path), "error": str(err)})
    return files, errors


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
    files, errors = _expand_inputs(args.inputs)
    heatmap_dir = Path(args.heatmap_dir) if args.heatmap_dir else None
    if heatmap_dir is not None:
        from ladeda_lib.viz import visualize_heatmap

        heatmap_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    keep = heatmap_dir is not None
    for row in pipe.iter_predictions(files, progress=sys.stderr.isatty(), keep_images=keep) if files else []:
        image = row.pop("image", None)
        if heatmap_dir is not None and row["error"] is None and row["patch_heatmap"] is not None:
            name, n = f"{Path(row['source']).stem}_heatmap.png", 1
            while name in used:  # same file name in two folders: number the later ones
                n += 1
                name = f"{Path(row['source']).stem}_{n}_heatmap.png"
            used.add(name)
            # the image decoded for the model, the verdict and the geometry of this row: nothing is redone
            row["heatmap"] = str(visualize_heatmap(image, row, heatmap_dir / name, geometry=pipe.geometry()))
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
    else:
        width = max([len("file"), *(len(str(r["source"])) for r in rows)])
        print(f"{'file':<{width}}  {'fake_probability':>16}  {'is_fake':>7}")
        for row in rows:
            if row["error"] is not None:
                print(f"{row['source']:<{width}}  {'ERROR':>16}  {'-':>7}  {row['error']}")
            else:
                verdict = str(row["is_fake"]) if row["verdict"] != "unsure" else "unsure"
                print(f"{row['source']:<{width}}  {row['fake_probability']:>16.4f}  {verdict:>7}")
    failed = sum(r["error"] is not None for r in rows)
    if failed:
        print(f"ladeda predict: {failed} of {len(rows)} inputs could not be scored", file=sys.stderr)
    return 1 if failed else 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ladeda predict``."""
    p = subparsers.add_parser(
        "predict",
        help="score images or folders with a checkpoint, .onnx or .tflite model",
        description="Print fake probabilities (a table, or one JSON object per line). Exit status 1 if any "
        "input could not be scored (after reporting the rest).",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
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
    p.set_defaults(func=_run_predict)
