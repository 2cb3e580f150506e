"""``ladeda pipeline``: the command line of :func:`~ladeda_lib.pipeline.stages.run_pipeline`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ladeda_lib.pipeline.stages import PipelineConfig, PipelineError, run_pipeline


def run_cli(args: argparse.Namespace) -> int:
    cfg = PipelineConfig(
        data=args.data,
        output=args.output,
        force=args.force,
        seed=args.seed,
        device=args.device,
        quantization=args.quantization,
        teacher=args.teacher,
        augment=args.augment,
        deployed_epochs=args.deployed_epochs,
    )
    try:
        result = run_pipeline(cfg)
    except PipelineError as err:
        print(f"ladeda pipeline: {err}")
        return 1
    print(f"report: {result.report}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ladeda pipeline``."""
    p = subparsers.add_parser(
        "pipeline",
        help="data → teacher → students → evaluation → verified TFLite exports, with a report",
        description="Run the whole LaDeDa → Tiny-LaDeDa path and write OUTPUT/report.md. Finished stages are reused.",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset root (WildRF layout, class folder or CSV); default: the toy set",
    )
    p.add_argument("--output", type=Path, default=None, help="output folder (default: runs/pipeline)")
    p.add_argument("--force", action="store_true", help="rebuild every stage instead of reusing artifacts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    p.add_argument(
        "--teacher",
        default="auto",
        choices=("auto", "train"),
        help="auto: the published teacher if present, else the shipped robust toy teacher on the default toy data, else "
        "train one on the data; train: always train a compact teacher on the data",
    )
    p.add_argument(
        "--quantization",
        default="all",
        choices=("none", "float16", "dynamic_range", "int8", "all"),
        help="which TFLite files to produce (default: all)",
    )
    p.add_argument(
        "--augment",
        nargs="?",
        const="on",
        default="off",
        metavar="SPEC",
        help="train the three 8-epoch students with blur/rescale/JPEG augmentation (bare --augment = the platform "
        "preset; see ladeda train-student --help); the deployed student always trains augmented, with this SPEC or "
        "the platform preset. Finished students are reused: add --force after changing it",
    )
    p.add_argument(
        "--deployed-epochs",
        type=int,
        default=PipelineConfig.deployed_epochs,
        metavar="N",
        help="epochs of the deployed student: labels only, augmented, 4 random 64-pixel crops per image and epoch "
        f"(default: {PipelineConfig.deployed_epochs}); 0 = no such stage, export the two-stage student",
    )
    p.set_defaults(func=run_cli)
