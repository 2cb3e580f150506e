"""The ``ladeda`` command line (also ``python -m ladeda_lib``).

Each library module that offers commands exposes ``register_cli(subparsers)``; this file only
collects them. ``ladeda --help`` lists the commands from a table without importing those modules, and
``ladeda COMMAND`` imports only COMMAND's module, so help and start-up stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from ladeda_lib import __version__

#: Every subcommand, in the order of ``ladeda --help``: name → (module whose ``register_cli`` adds it, one-line
#: help). The modules import PyTorch (seconds), so ``ladeda --help`` lists this table without importing them and
#: ``ladeda COMMAND`` imports only COMMAND's module. ``tests/test_packaging.py`` checks the table against the
#: modules' own registrations.
COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": (
        "ladeda_lib.pipeline",
        "data → teacher → students → evaluation → verified TFLite exports, with a report",
    ),
    "models": ("ladeda_lib.models.describe", "parameter counts and patch geometry of teacher and student"),
    "data-info": ("ladeda_lib.data", "detect a dataset layout and count images per split/platform/class"),
    "make-toy-data": ("ladeda_lib.data", "generate the offline WildRF-shaped toy dataset"),
    "train-teacher": (
        "ladeda_lib.distill.cli",
        "train the compact LaDeDa teacher (BCE on the pooled logit, random patch-grid crops)",
    ),
    "teacher-targets": (
        "ladeda_lib.distill.cli",
        "compute (or reuse) the cached teacher patch logits for the train and val images",
    ),
    "train-student": (
        "ladeda_lib.distill.cli",
        "single-stage distillation into Tiny-LaDeDa (default output weights/single_stage)",
    ),
    "train-student-two-stage": (
        "ladeda_lib.distill.cli",
        "two-stage fine-tuning: stage 1 fc only, stage 2 layer1 + fc (default output weights/two_stage)",
    ),
    "evaluate": (
        "ladeda_lib.evaluation",
        "accuracy, AP, AUC, real/fake accuracy per split and platform, and heatmap localisation",
    ),
    "calibrate": (
        "ladeda_lib.calibration",
        "fit a decision offset and temperature on labelled images; write a calibrated checkpoint",
    ),
    "predict": (
        "ladeda_lib.inference_cli",
        "score images, videos or folders with a checkpoint, .onnx or .tflite model",
    ),
    "watch": (
        "ladeda_lib.inference_cli",
        "live verdicts for a camera, a stream URL or a video file, dropping frames rather than falling behind",
    ),
    "export": ("ladeda_lib.export.cli", "export a checkpoint to ONNX and (quantized) TFLite, and verify every file"),
    "robustness": (
        "ladeda_lib.robustness",
        "AP, accuracy and flipped decisions under JPEG, rescale, blur, crop and platform chains",
    ),
    "audit": (
        "ladeda_lib.audit_cli",
        "false-positive audit on real photographs: FPR and verdict changes under JPEG, resize, crop, EXIF",
    ),
}

#: Modules that contribute subcommands, in the order they first appear in :data:`COMMANDS`.
COMMAND_MODULES = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


def _root_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="ladeda",
        description="LaDeDa / Tiny-LaDeDa: patch-level deepfake detection, distillation and edge export.",
    )
    parser.add_argument("--version", action="version", version=f"ladeda {__version__}")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The argument parser with the subcommands of ``modules`` registered (default: all of them)."""
    parser, subparsers = _root_parser()
    for name in modules:
        importlib.import_module(name).register_cli(subparsers)
    return parser


def overview_parser() -> argparse.ArgumentParser:
    """A parser that only lists the commands (for ``ladeda --help``): imports nothing heavy."""
    parser, subparsers = _root_parser()
    for name, (_, text) in COMMANDS.items():
        subparsers.add_parser(name, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``ladeda`` subcommand; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser([COMMANDS[command][0]]) if command in COMMANDS else overview_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"ladeda {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
