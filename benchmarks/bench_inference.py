"""Inference speed on the CPU: batch-1 latency per backend, ``ladeda predict`` throughput, preprocessing cost.

Measures, on this machine's CPU:

1. batch-1 latency of the Tiny-LaDeDa student (image logit + patch map, (1, 3, 256, 256) input):
   PyTorch eager · PyTorch optimised (:func:`ladeda_lib.graphs.fused.optimize_for_inference`: fused stem, folded BN, channels-last +
   ``inference_mode``, what :class:`~ladeda_lib.inference.InferencePipeline` runs) · onnxruntime
   (:func:`ladeda_lib.predictors.load_predictor` on the same model exported with patches). ``--teacher`` adds the
   published-size LaDeDa teacher (width 64; slow);
2. end-to-end throughput of ``ladeda predict FOLDER --json`` (a subprocess, so Python start-up, imports and
   model loading are included) and of ``InferencePipeline.predict_folder`` (in-process) on a folder of
   1080p JPEGs;
3. the preprocessing cost of one 1920×1080 JPEG: decode (``load_image``), bicubic resize to 256
   (``resize_to_uint8``), normalisation.

Weights do not change the speed of a fixed architecture: the trained student is used if present
(``weights/two_stage/student_final.pt``), else a randomly initialised one.

    python benchmarks/bench_inference.py [--repeats 200] [--images 24] [--teacher] [--threads N]
                                         [--json OUT] [--markdown OUT]

:func:`markdown_section` returns the Markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ladeda_lib.inference import InferencePipeline
from ladeda_lib.models import LaDeDa, PatchDetector, TinyLaDeDa
from ladeda_lib.paths import weights_dir
from ladeda_lib.predictors import TorchPredictor
from ladeda_lib.timing import latency_samples_ms, quietest_block_median


def timings_ms(fn: Callable[[], Any], repeats: int, warmup: int = 10) -> dict[str, float]:
    """``repeats`` timed calls after ``warmup``: latency by the runtime's rule (median of the quietest of three
    blocks, ``median_ms``) and the p10 / p90 of all calls, in milliseconds."""
    samples = latency_samples_ms(fn, repeats, warmup)
    median = quietest_block_median(samples)
    samples.sort()
    return {
        "median_ms": median,
        "p10_ms": samples[int(0.1 * (len(samples) - 1))],
        "p90_ms": samples[int(0.9 * (len(samples) - 1))],
        "repeats": repeats,
    }


def _randomised(model: PatchDetector, seed: int = 0) -> PatchDetector:
    """Non-trivial BatchNorm statistics (so folding has something to fold), eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def load_student() -> tuple[PatchDetector, str]:
    """The trained student if present, else a randomly initialised one (same speed)."""
    path = weights_dir() / "two_stage" / "student_final.pt"
    if path.is_file():
        from ladeda_lib.checkpoints import load_checkpoint
        from ladeda_lib.paths import shown

        return load_checkpoint(path, expected="TinyLaDeDa").model, shown(path)
    torch.manual_seed(0)
    return _randomised(TinyLaDeDa()), "random init"


def bench_backends(model: PatchDetector, repeats: int, workdir: Path, threads: int | None = None) -> dict[str, Any]:
    """Batch-1 latency: eager vs optimised PyTorch vs onnxruntime, all returning logit + patch map."""
    from ladeda_lib.export import export_onnx
    from ladeda_lib.predictors import load_predictor

    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    eager = TorchPredictor(model, optimize=False, threads=threads)
    fast = TorchPredictor(model, optimize=True, threads=threads)
    onnx_path = export_onnx(model, workdir / f"{model.arch}.onnx", with_patches=True)
    ort = load_predictor(onnx_path, threads=threads)
    x_np = x.numpy()
    # all three agree before they are timed
    ref_logit, ref_patch = eager(x)
    for name, (logit, patch) in {"optimised": fast(x), "onnxruntime": ort(x_np)}.items():
        diff = max(
            float(np.abs(logit.reshape(-1) - ref_logit).max()),
            float(np.abs(patch.reshape(ref_patch.shape) - ref_patch).max()),
        )
        if diff > 1e-3:
            raise RuntimeError(f"{name} differs from eager PyTorch by {diff:.2e}; not timing a wrong model")
    results = {
        "pytorch_eager": timings_ms(lambda: eager(x), repeats),
        "pytorch_optimised": timings_ms(lambda: fast(x), repeats),
        "onnxruntime": timings_ms(lambda: ort(x_np), repeats),
    }
    results["optimised_over_onnxruntime"] = (
        results["pytorch_optimised"]["median_ms"] / results["onnxruntime"]["median_ms"]
    )
    results["eager_over_onnxruntime"] = results["pytorch_eager"]["median_ms"] / results["onnxruntime"]["median_ms"]
    return results


def _jpeg_1080p(path: Path, seed: int) -> Path:
    """A 1920×1080 JPEG (quality 90) with smooth content plus noise, like a photo rather than pure noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:1080, 0:1920].astype(np.float32)
    base = 127 + 80 * np.sin(xx / (60 + seed)) * np.cos(yy / (45 + seed))
    img = np.stack([base, base[::-1], base[:, ::-1]], axis=-1) + rng.normal(0, 12, (1080, 1920, 3))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def bench_preprocessing(jpeg: Path, repeats: int) -> dict[str, Any]:
    """Decode, resize and normalise one 1080p JPEG, each step timed on its own."""
    from ladeda_lib.data import load_image, normalize_uint8, resize_to_uint8

    pil = load_image(jpeg)
    resized = resize_to_uint8(pil)
    return {
        "image": f"{pil.width}x{pil.height} JPEG q90",
        "decode": timings_ms(lambda: load_image(jpeg), repeats, warmup=3),
        "resize_to_256": timings_ms(lambda: resize_to_uint8(pil), repeats, warmup=3),
        "normalise": timings_ms(lambda: normalize_uint8(resized), repeats, warmup=3),
    }


def bench_predict_folder(model: PatchDetector, folder: Path, workdir: Path, n_images: int) -> dict[str, Any]:
    """Throughput of ``ladeda predict FOLDER --json`` (subprocess) and of ``predict_folder`` (in-process)."""
    from ladeda_lib.checkpoints import save_checkpoint

    ckpt = save_checkpoint(model, workdir / "student.pt")
    pipe = InferencePipeline(ckpt)
    pipe.predict_folder(folder, progress=False)  # warm the file cache and the kernels
    start = time.perf_counter()
    rows = pipe.predict_folder(folder, progress=False)
    in_process = time.perf_counter() - start
    assert len(rows) == n_images and all(r["error"] is None for r in rows)
    command = [sys.executable, "-m", "ladeda_lib", "predict", str(folder), "--model", str(ckpt), "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    cli = time.perf_counter() - start
    if done.returncode != 0 or len(done.stdout.splitlines()) != n_images:
        raise RuntimeError(f"ladeda predict failed ({done.returncode}): {done.stderr[-2000:]}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ladeda_lib", "--help"], capture_output=True, check=True)
    startup = time.perf_counter() - start
    return {
        "images": n_images,
        "image": "1920x1080 JPEG q90",
        "batch_size": pipe.batch_size,
        "decode_threads": pipe.num_workers,
        "predict_folder_s": in_process,
        "predict_folder_images_per_s": n_images / in_process,
        "cli_s": cli,
        "cli_images_per_s": n_images / cli,
        "cli_startup_s": startup,
    }


def run(repeats: int = 200, n_images: int = 24, teacher: bool = False, threads: int | None = None) -> dict[str, Any]:
    """All measurements as one dict (see the module docstring). ``threads``: torch and onnxruntime threads."""
    if threads:
        torch.set_num_threads(threads)
    student, source = load_student()
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "onnxruntime_threads": threads or "default",
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "student_weights": source,
    }
    import onnxruntime

    results["machine"]["onnxruntime"] = onnxruntime.__version__
    with tempfile.TemporaryDirectory(prefix="ladeda_bench_") as tmp:
        work = Path(tmp)
        results["student"] = bench_backends(student, repeats, work, threads)
        if teacher:
            torch.manual_seed(0)
            results["teacher"] = bench_backends(_randomised(LaDeDa(width=64)), max(5, repeats // 40), work, threads)
        folder = work / "images"
        folder.mkdir()
        for i in range(n_images):
            _jpeg_1080p(folder / f"img_{i:03d}.jpg", i)
        results["preprocessing"] = bench_preprocessing(folder / "img_000.jpg", max(10, repeats // 10))
        results["predict_folder"] = bench_predict_folder(student, folder, work, n_images)
    return results


def _row(name: str, t: dict[str, float], ref: float) -> str:
    return f"| {name} | {t['median_ms']:.2f} | {t['p10_ms']:.2f}–{t['p90_ms']:.2f} | {t['median_ms'] / ref:.2f}× |"


def markdown_section(results: dict[str, Any]) -> str:
    """The "Inference" section of ``benchmarks/RESULTS.md`` from :func:`run`'s results."""
    m = results["machine"]
    lines = [
        "## Inference (CPU)",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), torch {m['torch']} with {m['torch_threads']} threads, "
        f"onnxruntime {m['onnxruntime']} ({m['onnxruntime_threads']} threads), Python {m['python']}; "
        f"1-minute load average at the start: {m['load_average']:.1f}. Student weights: {results['student_weights']}.",
        "Produced by `python benchmarks/bench_inference.py`.",
        "",
    ]
    for key, title in (("student", "Tiny-LaDeDa student"), ("teacher", "LaDeDa teacher (width 64)")):
        if key not in results:
            continue
        r = results[key]
        ref = r["onnxruntime"]["median_ms"]
        lines += [
            f"### Batch-1 latency, {title} — logit + patch map, 1×3×256×256",
            "",
            "| backend | median ms | p10–p90 ms | vs onnxruntime |",
            "|---|---:|---:|---:|",
            _row("PyTorch eager", r["pytorch_eager"], ref),
            _row(
                "PyTorch optimised (fused stem, BN folded, channels-last, inference_mode)", r["pytorch_optimised"], ref
            ),
            _row("onnxruntime (CPU provider)", r["onnxruntime"], ref),
            "",
            f"Optimised PyTorch is {r['optimised_over_onnxruntime']:.2f}× onnxruntime's latency "
            f"(target: within 2×); eager is {r['eager_over_onnxruntime']:.2f}×.",
            "",
        ]
    p = results["preprocessing"]
    lines += [
        f"### Preprocessing one {p['image']}",
        "",
        "| step | median ms |",
        "|---|---:|",
        f"| decode (`load_image`) | {p['decode']['median_ms']:.1f} |",
        f"| bicubic resize to 256×256 (`resize_to_uint8`) | {p['resize_to_256']['median_ms']:.1f} |",
        f"| normalise (`normalize_uint8`) | {p['normalise']['median_ms']:.2f} |",
        "",
    ]
    f = results["predict_folder"]
    lines += [
        f"### `ladeda predict` on a folder of {f['images']} {f['image']}s",
        "",
        "| path | seconds | images/s |",
        "|---|---:|---:|",
        f"| `InferencePipeline.predict_folder` (in-process, batch {f['batch_size']}, "
        f"{f['decode_threads']} decode threads) | {f['predict_folder_s']:.2f} | {f['predict_folder_images_per_s']:.1f} |",
        f"| `ladeda predict FOLDER --json` (subprocess: start-up, imports, model load included) | {f['cli_s']:.2f} | "
        f"{f['cli_images_per_s']:.1f} |",
        "",
        f"`ladeda --help` alone takes {f['cli_startup_s']:.2f} s (interpreter start and imports). With 1080p "
        "inputs, decoding and resizing dominate: the student itself needs a few milliseconds per image.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed batch-1 runs per backend (default 200)")
    parser.add_argument("--images", type=int, default=24, help="1080p JPEGs in the predict folder (default 24)")
    parser.add_argument("--teacher", action="store_true", help="also time the width-64 teacher (slow)")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: theirs)")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the Markdown section here")
    args = parser.parse_args(argv)
    results = run(args.repeats, args.images, args.teacher, args.threads)
    section = markdown_section(results)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.markdown:
        args.markdown.write_text(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
