"""``ladeda data-info PATH`` and ``ladeda make-toy-data --output DIR [--world photos] [--seed N] ...``."""

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
    from dataclasses import replace

    from ladeda_lib.data.toy import ToyConfig, make_toy_dataset

    sizes = {k: getattr(args, k) for k in ("train_per_class", "val_per_class", "test_per_class")}
    for key, value in sizes.items():
        if value is not None and value < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
    config = replace(ToyConfig(), **{k: v for k, v in sizes.items() if v is not None})
    photo_config = None
    if args.trace_ceiling is not None:
        if args.world != "photos":
            raise ValueError("--trace-ceiling sets the photo world's fakes: add --world photos")
        if not 0.0 < args.trace_ceiling <= 10.0:
            raise ValueError(f"--trace-ceiling must lie in (0, 10], got {args.trace_ceiling}")
        from ladeda_lib.data.photos import PhotoConfig

        photo_config = PhotoConfig(trace_ceiling=args.trace_ceiling)
    start = time.perf_counter()
    root = make_toy_dataset(
        args.output, seed=args.seed, config=config, progress=not args.quiet, world=args.world, photo_config=photo_config
    )
    counts = f"{config.train_per_class}/{config.val_per_class}/{config.test_per_class} per class (train/val/test)"
    what = f"the toy dataset ({args.world} world, seed {args.seed}, {counts})"
    print(f"wrote {what} to {root} in {time.perf_counter() - start:.1f} s")
    if args.world == "photos":
        from ladeda_lib.data.photos import heldout_dir

        print(f"which photograph went where: {root / 'photos.json'}; held-out test photographs: {heldout_dir(root)}")
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
    p.add_argument(
        "--world",
        choices=("scenes", "photos"),  # ladeda_lib.data.toy.WORLDS, spelled out so --help stays light
        default="scenes",
        help="real class: rendered scenes (default) or crops of photographs shipped in installed packages",
    )
    p.add_argument(
        "--trace-ceiling",
        type=float,
        default=None,
        help="photo world: the fakes' finest-detail trace energy as a share of the photograph's at most (default "
        "0.1; louder traces are easier to learn and start to separate the classes by noise level, docs/results.md)",
    )
    # Defaults None = ToyConfig's (150/50/50); read lazily so `ladeda --help` does not import the generator.
    p.add_argument("--train-per-class", type=int, default=None, help="training images per class (default 150)")
    p.add_argument("--val-per-class", type=int, default=None, help="validation images per class (default 50)")
    p.add_argument("--test-per-class", type=int, default=None, help="test images per class and platform (default 50)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_make_toy)
