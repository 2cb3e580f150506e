"""Run every benchmark in one process and write ``benchmarks/RESULTS.md``.

    python benchmarks/run.py [--quick]

One run on one machine, so the ratios between rows are comparable. The sections come from
``bench_export.py`` (student in every format), ``bench_inference.py`` (PyTorch eager / optimised /
onnxruntime, preprocessing, ``ladeda predict`` on a folder), ``bench_training.py`` (student training
throughput, teacher targets) and the teacher forward times below.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_export  # noqa: E402
import bench_inference  # noqa: E402
import bench_training  # noqa: E402

from ladeda_lib.models import LaDeDa  # noqa: E402
from ladeda_lib.pipeline import describe_machine  # noqa: E402


def machine() -> str:
    """The pipeline's machine description plus the load average when the run starts."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{describe_machine()}; Python {platform.python_version()}; load average at start {load:.2f}"


def teacher_forward(widths: tuple[int, ...] = (16, 64), repeats: int = 10) -> str:
    """Batch-1 256×256 forward time of the teacher at each width (PyTorch eager, no grad)."""
    rows = ["| teacher | parameters | forward, batch 1 (ms, median) | vs width 16 |", "|---|---:|---:|---:|"]
    ref = None
    for width in widths:
        model = LaDeDa(width=width).eval()
        x = torch.randn(1, 3, 256, 256)
        times = []
        with torch.inference_mode():
            for _ in range(2):
                model(x)
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1000)
        median = statistics.median(times)
        ref = ref or median
        rows.append(f"| LaDeDa(width={width}) | {model.num_parameters():,} | {median:.1f} | {median / ref:.1f}× |")
    return "## Teacher forward time\n\n" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = 30 if args.quick else 200
    header = f"# Benchmark results\n\nMeasured by `python benchmarks/run.py` on {machine()}.\n"
    sections = [header]
    started = time.perf_counter()
    sections.append(bench_export.markdown_section(bench_export.run_benchmark(runs=runs, threads=args.threads)))
    sections.append(bench_inference.markdown_section(bench_inference.run(repeats=runs, threads=args.threads)))
    sections.append(bench_training.markdown_section(bench_training.run(threads=args.threads)))
    sections.append(teacher_forward())
    sections.append(f"Whole benchmark run: {time.perf_counter() - started:.0f} s.\n")
    args.output.write_text("\n".join(sections))
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
