"""``ladeda export``: checkpoint → ONNX → TFLite (quantized) → verification table, in one command.

Introduced in notebook 08.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ladeda_lib import paths

DEFAULT_MODEL = Path("weights/two_stage/student_final.pt")


def _run(args: argparse.Namespace) -> int:
    from ladeda_lib.checkpoints import CheckpointError, load_checkpoint
    from ladeda_lib.contract import NO_CALIBRATION_NOTE, DecisionCalibration
    from ladeda_lib.export.chain import export_model, formats_for, load_export_images
    from ladeda_lib.export.errors import ExportError
    from ladeda_lib.export.verify import Tolerances

    model_path = Path(args.model) if args.model else paths.project_root() / DEFAULT_MODEL
    if not model_path.exists():
        raise FileNotFoundError(f"model checkpoint not found: {model_path} (train one with `ladeda train-student`)")
    try:
        ckpt = load_checkpoint(model_path, expected=None if args.teacher else "TinyLaDeDa")
    except CheckpointError as err:
        if not args.teacher and "LaDeDa teacher" in str(err):
            raise ExportError(f"{err}\nTo export a teacher on purpose, add --teacher.") from err
        raise
    role = "student" if ckpt.arch == "TinyLaDeDa" else "teacher"
    output = Path(args.output) if args.output else paths.weights_dir() / "export" / f"{role}.tflite"
    formats = formats_for(args.quantization)

    representative = eval_images = eval_labels = None
    decision = DecisionCalibration.from_dict(ckpt.metadata.get("calibration"))
    if decision is None:
        print(f"ladeda export: note: {model_path}: {NO_CALIBRATION_NOTE}", file=sys.stderr)
    if ckpt.published and args.data is None and "int8" in formats:
        print(
            "ladeda export: warning: the int8 file of a published checkpoint is calibrated on the toy images, "
            "whose activations differ from real photographs (the WildRF student's patch logits span about "
            "±400 there); pass --data with images like the ones you will score.",
            file=sys.stderr,
        )
    if args.data is not None or "int8" in formats or not args.no_verify:
        representative, eval_images, eval_labels = load_export_images(
            args.data, args.calibration_count, args.eval_count, args.seed, progress=not args.quiet
        )
        if args.no_verify:
            eval_images = eval_labels = None
    tolerances = Tolerances(threshold=args.threshold)
    print(f"exporting {ckpt.arch} from {model_path} ({', '.join(formats)}) …", file=sys.stderr)
    result = export_model(
        ckpt.model,
        output,
        args.quantization,
        representative,
        eval_images,
        eval_labels,
        nhwc=args.nhwc,
        with_patches=args.with_patches,
        tolerances=tolerances,
        latency_runs=args.latency_runs,
        threads=args.threads,
        progress=not args.quiet,
        decision_calibration=decision,
        record={
            "source": str(model_path),
            "int8_representative_data": str(args.data or "toy dataset") if "int8" in formats else None,
        },
    )
    print(f"ONNX:   {result.onnx}")
    for fmt, path in result.tflite.items():
        print(f"TFLite: {path} ({fmt})")
    if result.report is None:
        return 0
    print()
    print(result.report.to_markdown())
    print()
    print(f"report: {', '.join(str(p) for p in result.report_files)}")
    if not result.report.passed:
        print("ladeda export: error: verification failed:", file=sys.stderr)
        for failure in result.report.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    from ladeda_lib.export.chain import QUANTIZATION_CHOICES

    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX and (quantized) TFLite, and verify every file",
        description="PyTorch checkpoint → ONNX → TFLite (float32/float16/dynamic_range/int8) → verification "
        "against PyTorch on held-out images. Exits with status 1 when a check fails.",
    )
    p.add_argument("--model", help=f"checkpoint or published state_dict (default: {DEFAULT_MODEL})")
    p.add_argument(
        "--quantization",
        choices=QUANTIZATION_CHOICES,
        default="dynamic_range",
        help="TFLite format; none = float32; all = every format (default: dynamic_range)",
    )
    p.add_argument(
        "--output",
        help="the .tflite file to write (default: weights/export/student.tflite); "
        "the .onnx and the verification report go next to it",
    )
    p.add_argument(
        "--data",
        help="dataset for the int8 representative images (train split) and verification (test split); default: the toy dataset "
        "(use your own images for a published checkpoint)",
    )
    p.add_argument(
        "--calibration-count", type=int, default=100, help="training images the int8 file takes its ranges from"
    )
    p.add_argument("--eval-count", type=int, default=None, help="cap on held-out images used for verification")
    p.add_argument("--nhwc", action="store_true", help="TFLite input (1, 256, 256, 3) instead of (1, 3, 256, 256)")
    p.add_argument("--with-patches", action="store_true", help="also export the patch-logit map")
    p.add_argument("--teacher", action="store_true", help="allow exporting a LaDeDa teacher")
    p.add_argument("--threshold", type=float, default=0.5, help="decision threshold on the fake probability")
    p.add_argument("--latency-runs", type=int, default=50, help="batch-1 runs timed per format (median)")
    p.add_argument("--threads", type=int, default=None, help="threads for every backend")
    p.add_argument("--seed", type=int, default=0, help="seed for picking representative/evaluation images")
    p.add_argument("--no-verify", action="store_true", help="skip verification (int8 still needs --data)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_run)
