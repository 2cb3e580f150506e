"""The ``ladeda`` command line (also ``python -m ladeda_lib``).

Each library module that offers commands exposes ``register_cli(subparsers)``; this file only
collects them. Heavy imports (TensorFlow, onnx2tf) happen inside the commands, so ``ladeda --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ladeda_lib import __version__

#: Modules that contribute subcommands, in the order they appear in ``ladeda --help``.
COMMAND_MODULES = (
    "ladeda_lib.pipeline",
    "ladeda_lib.models.describe",
    "ladeda_lib.data",
    "ladeda_lib.distill.cli",
    "ladeda_lib.inference",
    "ladeda_lib.export.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="ladeda",
        description="LaDeDa / Tiny-LaDeDa: patch-level deepfake detection, distillation and edge export.",
    )
    parser.add_argument("--version", action="version", version=f"ladeda {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``ladeda`` subcommand; returns the process exit status."""
    parser = build_parser()
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
