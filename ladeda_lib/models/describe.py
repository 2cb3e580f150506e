"""``ladeda models``: parameter counts and patch geometry of the teacher and the student."""

from __future__ import annotations

import argparse

from ladeda_lib.geometry import INPUT_GEOMETRY
from ladeda_lib.models.student import TinyLaDeDa
from ladeda_lib.models.teacher import LaDeDa


def describe(width: int = 64, input_size: int = INPUT_GEOMETRY.image_size) -> list[dict[str, object]]:
    """One row per model: name, parameters, patch grid, receptive field, stride, offset."""
    rows = []
    for name, model in (
        (f"LaDeDa teacher (width {width})", LaDeDa(width=width)),
        ("Tiny-LaDeDa student", TinyLaDeDa()),
    ):
        g = model.geometry()
        rows.append(
            {
                "model": name,
                "parameters": model.num_parameters(),
                "grid": f"{g.grid_size(input_size)}x{g.grid_size(input_size)}",
                "receptive_field": g.receptive_field,
                "stride": g.stride,
                "offset": g.offset,
            }
        )
    return rows


def _run(args: argparse.Namespace) -> int:
    rows = describe(args.width, args.input_size)
    header = f"{'model':<28} {'parameters':>12} {'grid':>9} {'RF':>4} {'stride':>7} {'offset':>7}"
    print(header)
    for r in rows:
        print(
            f"{r['model']:<28} {r['parameters']:>12,} {r['grid']:>9} {r['receptive_field']:>4} "
            f"{r['stride']:>7} {r['offset']:>7}"
        )
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="parameter counts and patch geometry of teacher and student")
    p.add_argument("--width", type=int, default=64, help="teacher width (64 = published)")
    p.add_argument("--input-size", type=int, default=INPUT_GEOMETRY.image_size, help="square input side")
    p.set_defaults(func=_run)
