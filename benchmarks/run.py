"""Run every benchmark in one process and write ``benchmarks/RESULTS.md``.

    python benchmarks/run.py [--quick] [--scale SMALL LARGE | --no-scale] [--readme docs/training_at_scale.md]

One run on one machine, so the ratios between rows are comparable. The sections come from
``bench_export.py`` (student in every format), ``bench_inference.py`` (PyTorch eager / optimised /
onnxruntime, preprocessing, ``ladeda predict`` on a folder), ``bench_video.py`` (video frames/s and still
images/s beside the naive path, and the parity of each shortcut), ``bench_training.py`` (student training
throughput, teacher targets; with two toy sets, memory against dataset size and 1 against 2 processes)
and the teacher forward times below.

The scale section runs when the two toy sets exist (default ``data/toy300`` and ``data/toy3000``, built by
``ladeda make-toy-data --output data/toy300 --train-per-class 150 --val-per-class 25 --test-per-class 5`` and
the same with ``toy3000`` and ``--train-per-class 1500``), or on the sets ``--scale`` names. ``--readme PAGE``
also rewrites the measured paragraph of `docs/training_at_scale.md` (between the
``<!-- bench:scale -->`` markers) from this run's numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_export  # noqa: E402
import bench_inference  # noqa: E402
import bench_training  # noqa: E402
import bench_video  # noqa: E402

from ladeda_lib.models import LaDeDa  # noqa: E402
from ladeda_lib.pipeline.report import describe_machine  # noqa: E402


def machine() -> str:
    """The pipeline's machine description plus the load average when the run starts."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{describe_machine()}; Python {platform.python_version()}; load average at start {load:.2f}"


def teacher_forward(widths: tuple[int, ...] = (16, 64), repeats: int = 10) -> dict[int, dict[str, float]]:
    """Batch-1 256×256 forward time of the teacher at each width (PyTorch eager, no grad): median and spread."""
    out: dict[int, dict[str, float]] = {}
    for width in widths:
        torch.manual_seed(0)
        model = LaDeDa(width=width).eval()
        x = torch.randn(1, 3, 256, 256)
        with torch.inference_mode():
            t = bench_inference.timings_ms(lambda m=model, x=x: m(x), repeats, warmup=2)
        out[width] = {**t, "parameters": model.num_parameters()}
    return out


def teacher_section(times: dict[int, dict[str, float]]) -> str:
    ref = times[min(times)]["median_ms"]
    rows = [
        "## Teacher forward time",
        "",
        "PyTorch eager, batch 1, 256×256, no gradients; median of a few runs (the width-64 teacher is slow, so these",
        "figures rest on few samples).",
        "",
        "| teacher | parameters | median ms | p10–p90 ms | vs the compact teacher |",
        "|---|---:|---:|---:|---:|",
    ]
    for width, t in times.items():
        rows.append(
            f"| LaDeDa(width={width}) | {t['parameters']:,} | {t['median_ms']:.1f} | "
            f"{t['p10_ms']:.1f}–{t['p90_ms']:.1f} | {t['median_ms'] / ref:.1f}× |"
        )
    return "\n".join(rows) + "\n"


def _than(reference: dict[str, Any], row: dict[str, Any]) -> str:
    """'2.4× faster than' / '1.3× slower than': row's latency against reference's."""
    ratio = reference["latency_ms"] / row["latency_ms"]
    if 0.95 <= ratio <= 1.05:
        return f"about as fast as ({ratio:.2f}×)"
    return f"**{ratio:.1f}× faster than**" if ratio > 1 else f"**{1 / ratio:.1f}× slower than**"


def key_ratios(
    export: dict[str, Any],
    inference: dict[str, Any],
    training: dict[str, Any],
    teacher: dict,
    scale: dict[str, Any] | None = None,
) -> str:
    """The handful of ratios the README quotes, computed from this run's numbers."""
    by = {(r["backend"], r["format"]): r for r in export["rows"]}
    eager = by[(bench_export.EAGER, "float32")]
    fast = by[(bench_export.OPTIMISED, "float32")]
    ort = by[(bench_export.ORT_PLAIN, "float32")]
    dr = by[(bench_export.TFLITE, bench_export.RECOMMENDED)]
    int8 = by[(bench_export.TFLITE, "int8")]
    f32 = by[(bench_export.TFLITE, "float32")]
    pre = inference["preprocessing"]
    pre_ms = pre["decode"]["median_ms"] + pre["resize_to_256"]["median_ms"] + pre["normalise"]["median_ms"]
    t16, t64 = teacher[16]["median_ms"], teacher[64]["median_ms"]
    folder = inference["predict_folder"]
    tt = training["teacher_targets"]
    lines = [
        "## Key ratios",
        "",
        f"- The recommended file, TFLite {bench_export.RECOMMENDED} (the deployed graph: column pairs, pre-sorted top-K), runs the student in "
        f"**{dr['latency_ms']:.2f} ms** per image (batch 1, {export['threads']} threads): {_than(ort, dr)} "
        f"onnxruntime on the plain float graph (goal ≥ 1.9×), {_than(fast, dr)} optimised PyTorch and "
        f"{_than(eager, dr)} PyTorch eager (eager swings between runs; no yardstick).",
        f"- Full int8 TFLite: {int8['latency_ms']:.2f} ms ({f32['latency_ms'] / int8['latency_ms']:.1f}× the speed "
        f"of TFLite float32, {int8['size_bytes'] / f32['size_bytes']:.2f}× its size).",
        f"- Optimised PyTorch (fused stem, BatchNorm folded, channels-last) is {eager['latency_ms'] / fast['latency_ms']:.1f}× "
        "faster than eager PyTorch.",
        f"- The student in TFLite is {t16 / dr['latency_ms']:.0f}× faster than the compact teacher "
        f"(width 16, {t16:.0f} ms eager) and {t64 / dr['latency_ms']:.0f}× faster than the published-size teacher "
        f"(width 64, {t64:.0f} ms, {t64 / t16:.1f}× the compact one).",
        f"- Preparing one 1080p JPEG (decode + bicubic resize + normalise) takes {pre_ms:.1f} ms — "
        f"{pre_ms / dr['latency_ms']:.1f}× the student's own inference; so `ladeda predict` on a folder of 1080p "
        f"JPEGs reaches {folder['predict_folder_images_per_s']:.0f} images/s in-process.",
        f"- Teacher targets: `compute_teacher_targets` runs at {tt['targets_images_per_s']:.1f} images/s against "
        f"{tt['bare_images_per_s']:.1f} for the bare forward ({100 * tt['overhead']:+.0f} %).",
        f"- Student training: {training['student_step']['images_per_s']:.0f} images/s per optimisation step, "
        f"{training['student_epoch']['train_images_per_s']:.0f} images/s over a whole epoch of the real loop.",
        *(scale_ratios(scale) if scale else []),
        "",
        "**Which figures are noisy.** Latencies below about 5 ms move by 10–30 % between runs on a shared 2-core "
        "machine; the p10–p90 columns show the spread of this run. Export rows are timed in interleaved blocks, so a "
        "busy moment slows all formats alike and their *ratios* are steadier than their absolute values. The teacher "
        "times, the training epoch and the `ladeda predict` subprocess rest on one or a few samples each and are "
        "the noisiest; the load average at the start and end of the run is stated above and below."
        + (
            f" **This run shared the machine** (load average {export.get('load_start', float('nan')):.1f} on "
            f"{os.cpu_count()} cores when the export rows started): absolute times are inflated, up to several times "
            "what an idle machine gives (earlier idle runs: onnxruntime about 2.3 ms, PyTorch eager 5–16 ms); read "
            "the ratios between the interleaved export rows, and treat the eager, preprocessing, training and "
            "teacher figures as upper bounds."
            if export.get("load_start", 0.0) > 1.5
            else ""
        ),
        "",
    ]
    return "\n".join(lines)


ROOT = HERE.parent
DEFAULT_SCALE = (ROOT / "data" / "toy300", ROOT / "data" / "toy3000")
README_BEGIN, README_END = "<!-- bench:scale begin -->", "<!-- bench:scale end -->"


def scale_ratios(scale: dict[str, Any]) -> list[str]:
    """Key-ratio lines for memory against dataset size and 1 against 2 processes."""
    small, large = scale["sizes"]["small"], scale["sizes"]["large"]
    one, two = scale["processes"]["1"], scale["processes"]["2"]
    rss_two = " + ".join(f"{r['peak_rss_mib']:.0f}" for r in two["ranks"])
    return [
        f"- Peak memory of `ladeda train-student`: {large['peak_rss_mib']:,.0f} MiB for {large['n_train']:,} "
        f"training images against {small['peak_rss_mib']:,.0f} MiB for {small['n_train']:,}: "
        f"**{scale['rss_ratio']:.2f}×** (goal ≤ 1.20×).",
        f"- Two gloo processes (1 thread each) against one (2 threads), same global batch: "
        f"{two['images_per_s']:.1f} against {one['images_per_s']:.1f} training images/s "
        f"(**{two['images_per_s'] / one['images_per_s']:.2f}×**), peak memory "
        f"{rss_two} MiB against {one['peak_rss_mib']:.0f} MiB.",
    ]


def update_readme(path: Path, paragraph: str) -> None:
    """Replace the text between the scale markers of ``path`` with ``paragraph``."""
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{path}: no {README_BEGIN} ... {README_END} block to rewrite")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_BEGIN}\n{paragraph}{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--scale",
        nargs=2,
        type=Path,
        metavar=("SMALL", "LARGE"),
        help="toy sets for memory vs size and 1 vs 2 processes (default: data/toy300 data/toy3000 if both exist)",
    )
    parser.add_argument("--no-scale", action="store_true", help="skip the scale section")
    parser.add_argument("--teacher", type=Path, default=bench_training.SHIPPED_TEACHER, help="teacher for --scale")
    parser.add_argument(
        "--readme", type=Path, help="rewrite the measured paragraph of this page (docs/training_at_scale.md)"
    )
    args = parser.parse_args(argv)
    scale_sets = None if args.no_scale else (args.scale or DEFAULT_SCALE)
    if scale_sets is not None and not all((p / "train").is_dir() for p in scale_sets):
        if args.scale:
            parser.error(f"--scale: {scale_sets[0]} and {scale_sets[1]} must both be toy sets (a train/ folder)")
        print(f"scale section skipped: build {DEFAULT_SCALE[0]} and {DEFAULT_SCALE[1]} first (see --help)")
        scale_sets = None
    if args.readme and scale_sets is None:
        parser.error("--readme needs the scale section (two toy sets)")
    shown = " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    warnings.simplefilter("ignore")  # tracer warnings from exporting top-K
    torch.set_num_threads(args.threads)
    runs = 30 if args.quick else 200
    header = f"# Benchmark results\n\nMeasured by `{shown}` on {machine()}.\n"
    started = time.perf_counter()
    student, source = bench_inference.load_student()
    print(f"student weights: {source}", flush=True)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    export = bench_export.run_benchmark(student, runs=runs, threads=args.threads)
    export["load_start"] = load_start
    print("export formats done", flush=True)
    inference = bench_inference.run(repeats=runs, threads=args.threads)
    print("inference done", flush=True)
    video = bench_video.run(threads=args.threads, toy_root=ROOT / "data" / "toy_wildrf")
    print("video done", flush=True)
    training = bench_training.run(threads=args.threads)
    print("training done", flush=True)
    teacher = teacher_forward(repeats=5 if args.quick else 10)
    print("teacher forward done", flush=True)
    scale = None
    if scale_sets is not None:
        scale = bench_training.bench_scale(*scale_sets, teacher=args.teacher, threads=args.threads)
        print("scale done", flush=True)
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    sections = [
        header,
        key_ratios(export, inference, training, teacher, scale),
        bench_export.markdown_section(export),
        bench_inference.markdown_section(inference),
        bench_video.markdown_section(video),
        bench_training.markdown_section(training),
        teacher_section(teacher),
        *([bench_training.scale_markdown(scale)] if scale else []),
        f"Whole benchmark run: {time.perf_counter() - started:.0f} s; load average at the end {end_load:.2f}.\n",
    ]
    args.output.write_text("\n".join(sections))
    if args.readme and scale:
        update_readme(args.readme, bench_training.scale_readme(scale, shown))
        print(f"rewrote the measured paragraph of {args.readme}", flush=True)
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
