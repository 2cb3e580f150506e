"""``ladeda audit``: the false-positive audit of :mod:`ladeda_lib.audit` on a folder of real photographs, or on
the photographs bundled in installed packages (``--bundled``); writes ``audit.md``, ``audit.json``, ``audit.png``.

A missing or empty folder (or an unknown model) is a usage error: a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ladeda_lib.audit import audit_photographs, bundled_photographs
from ladeda_lib.inference_cli import parse_band
from ladeda_lib.paths import project_root


def _run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ladeda_bundled_") as tmp:
        notes = bundled_photographs(tmp)[1] if args.bundled else []
        try:
            band, real = parse_band(args.unsure), tmp if args.bundled else args.real
            report = audit_photographs(args.model, real, args.fakes, args.threshold, band, progress=not args.quiet)
        except (FileNotFoundError, ValueError) as err:  # a bad folder or model is a usage error: exit status 2
            if args.debug:
                raise
            print(f"ladeda audit: error: {err}", file=sys.stderr)
            return 2
    report.notes += notes
    if args.bundled:
        report.real_folder = "the photographs bundled in installed packages"
    if not report.calibrated:
        print(f"ladeda audit: note: {args.model} carries no calibration record (raw sigmoid)", file=sys.stderr)
    paths = report.write(Path(args.output) if args.output else project_root() / "runs" / "audit")
    print(report.markdown().split("\n| photograph |")[0])
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ladeda audit``."""
    p = subparsers.add_parser(
        "audit",
        help="false-positive audit on real photographs: FPR and verdict changes under JPEG, resize, crop, EXIF",
        description="Score real photographs as they are and under shortcut tests; write audit.md/.json/.png. "
        "Exit status 2 for a missing or empty folder.",
    )
    p.add_argument("--model", required=True, help="checkpoint, .onnx or .tflite file, or a registry name")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--real", help="folder of real photographs")
    source.add_argument("--bundled", action="store_true", help="the real photographs shipped in installed packages")
    p.add_argument("--fakes", default=None, help="folder of fake images (adds detection rate and AP)")
    p.add_argument("--output", default=None, help="output folder (default runs/audit)")
    p.add_argument("--threshold", type=float, default=0.5, help="fake if probability >= threshold (default 0.5)")
    p.add_argument("--unsure", default=None, metavar="LOW:HIGH", help="answer 'unsure' in [LOW, HIGH]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=_run)
