"""``ladeda data-info PATH`` and ``ladeda make-toy-data --output DIR [--seed N]``."""

from __future__ import annotations

import argparse
import time
import warnings


def _data_info(args: argparse.Namespace) -> int:
    from ladeda_lib.data.layouts import detect_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # problems are part of the summary printed below
        index = detect_dataset(args.path, verify=args.verify)
    print(index.summary())
    return 0


def _make_toy(args: argparse.Namespace) -> int:
    from ladeda_lib.data.toy import make_toy_dataset

    start = time.perf_counter()
    root = make_toy_dataset(args.output, seed=args.seed, progress=False)
    print(f"wrote the toy dataset (seed {args.seed}) to {root} in {time.perf_counter() - start:.1f} s")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data-info`` and ``make-toy-data`` to the ``ladeda`` command."""
    p = subparsers.add_parser("data-info", help="detect a dataset layout and count images per split/platform/class")
    p.add_argument("path", help="WildRF-style folder, a folder with 0_real/ and 1_fake/, or a CSV file")
    p.add_argument("--verify", action="store_true", help="also open every image and report unreadable ones")
    p.set_defaults(func=_data_info)

    p = subparsers.add_parser("make-toy-data", help="generate the offline WildRF-shaped toy dataset")
    p.add_argument("--output", required=True, help="folder to write (e.g. data/toy_wildrf)")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives byte-identical files")
    p.set_defaults(func=_make_toy)
