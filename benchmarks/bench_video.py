"""Real time, measured: video frames/s and still images/s, each beside the naive path, and what each shortcut
does to the scores.

    python benchmarks/bench_video.py [--threads 2] [--seconds 5] [--images 48] [--markdown benchmarks/video.md]

1. **Clips**: a 720p and a 1080p H.264 clip (libx264, yuv420p, 30 frames/s) made here: a slow pan over four
   scikit-image photographs with fresh sensor-like noise in every frame (so the encoder cannot coast), at the
   bitrates a video site recommends for uploads (5 and 8 Mbit/s). Every frame is scored by the float32 TFLite
   student (the shipped augmented student, exported here). Three paths, interleaved, best of two rounds each:
   *fast* (:func:`ladeda_lib.video.score_video`: FFmpeg frame threads, a decoder thread converting to RGB and
   resizing with the integer bicubic, batches to the model), *naive* (decode → full RGB → PIL bicubic → model,
   one frame at a time, as a first script would) and *reference* (the same loop with the float resize of the
   shared geometry, ``resize_to_uint8``, which the project's image path uses). A per-frame profile says where
   the time goes.
2. **Stills**: a folder of 1080p JPEGs (crops of the same photographs, quality 90) through
   ``InferencePipeline.predict_batch``: today's default loader (decode + float resize), the fast loader
   (integer bicubic) and the fast loader with JPEG draft mode; each decodes ahead of the model in threads.
3. **Parity**: max |Δ logit| and decisions changed against the reference resize, for the swscale scaler, the
   integer bicubic, PIL's bicubic and (for JPEGs) draft mode, on photographs (scikit-image and scikit-learn, at
   their own size and as 720p / 1080p frames) and toy images; and AP and decisions on the toy test split
   (``data/toy_wildrf``, when present) with the fast resize and with draft mode.

:func:`markdown_section` returns the Markdown for ``benchmarks/RESULTS.md`` / ``benchmarks/video.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image

from ladeda_lib.data import normalize_uint8, resize_to_uint8
from ladeda_lib.data.clips import photo_pan_frames, write_video
from ladeda_lib.decode import load_uint8, resize_uint8
from ladeda_lib.inference import InferencePipeline
from ladeda_lib.registry import get_entry
from ladeda_lib.video import convert_frame, score_video, stage_times

CLIPS = {"720p": (1280, 720, 5_000_000), "1080p": (1920, 1080, 8_000_000)}


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def photographs() -> dict[str, np.ndarray]:
    """Real photographs bundled with scikit-image and scikit-learn (RGB uint8), no download."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "cat", "immunohistochemistry")
    photos = {name: getattr(data, name)()[..., :3] for name in names}
    for i, image in enumerate(load_sample_images().images):
        photos[f"sklearn_{i}"] = image
    return photos


def make_clip(path: Path, width: int, height: int, bitrate: int, seconds: float = 5.0, fps: int = 30) -> Path:
    """The benchmark clip (:func:`ladeda_lib.data.clips.photo_pan_frames`) at ``bitrate`` bits/s."""
    return write_video(path, photo_pan_frames(width, height, seconds, fps), fps=fps, bitrate=bitrate)


def naive_fps(path: Path, pipe: InferencePipeline, resize: Callable[[np.ndarray], torch.Tensor]) -> tuple[float, int]:
    """Decode → full RGB → ``resize`` → model, one frame at a time, in one thread of Python."""
    started, n = time.perf_counter(), 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            x = normalize_uint8(resize(frame.to_ndarray(format="rgb24"))[None])
            pipe.run_tensor(x)
            n += 1
    return n / (time.perf_counter() - started), n


def pil_bicubic(rgb: np.ndarray) -> torch.Tensor:
    small = Image.fromarray(rgb).resize((256, 256), Image.BICUBIC)
    return torch.from_numpy(np.array(small)).permute(2, 0, 1)


def bench_clips(work: Path, model: Path, seconds: float, threads: int) -> dict[str, Any]:
    pipe = InferencePipeline(model, threads=threads)
    out: dict[str, Any] = {}
    for name, (width, height, bitrate) in CLIPS.items():
        path = make_clip(work / f"{name}.mp4", width, height, bitrate, seconds)
        mbit = path.stat().st_size * 8 / seconds / 1e6
        runs: dict[str, list[float]] = {"fast": [], "naive (PIL bicubic)": [], "reference (project image path)": []}
        for _ in range(2):  # interleaved rounds: a busy moment slows every path alike
            report = score_video(pipe, path)
            runs["fast"].append(len(report.rows) / report.seconds)
            runs["naive (PIL bicubic)"].append(naive_fps(path, pipe, pil_bicubic)[0])
            runs["reference (project image path)"].append(naive_fps(path, pipe, resize_to_uint8)[0])
        out[name] = {
            "size": f"{width}×{height}",
            "frames": len(report.rows),
            "mbit_per_s": mbit,
            "fps": {k: max(v) for k, v in runs.items()},
            "profile": stage_times(path, pipe),
        }
    return out


def bench_stills(work: Path, model: Path, n_images: int, threads: int) -> dict[str, Any]:
    folder = work / "jpegs"
    folder.mkdir()
    for i, frame in enumerate(photo_pan_frames(seconds=n_images / 30, seed=1)):
        Image.fromarray(frame).save(folder / f"img_{i:03d}.jpg", quality=90)
    files = sorted(folder.glob("*.jpg"))
    pipe = InferencePipeline(model, threads=threads)
    loaders = {
        "today (decode + float resize)": None,
        "fast (integer bicubic)": lambda p: load_uint8(p),
        "fast + JPEG draft": lambda p: load_uint8(p, draft=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    pipe.predict_batch(files[:8], progress=False)  # warm the file cache and the kernels
    for _ in range(2):
        for name, loader in loaders.items():
            started = time.perf_counter()
            rows = pipe.predict_batch(files, progress=False, loader=loader)
            assert all(r["error"] is None for r in rows)
            rates[name].append(len(files) / (time.perf_counter() - started))
    return {
        "images": n_images,
        "decode_threads": pipe.num_workers,
        "images_per_s": {k: max(v) for k, v in rates.items()},
        "profile": still_stages(files[0], pipe),
    }


def still_stages(path: Path, pipe: InferencePipeline, repeats: int = 8) -> dict[str, float]:
    """Milliseconds per 1080p JPEG of each stage, one thread, each measured alone."""
    from ladeda_lib.data import load_image

    def ms(fn: Callable[[], Any]) -> float:
        fn()
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - started) * 1000 / repeats

    def drafted() -> Image.Image:
        with Image.open(path) as img:
            img.draft("RGB", (256, 256))
            img.load()
            return img.copy()

    rgb = np.asarray(load_image(path))
    x = normalize_uint8(resize_uint8(rgb)[None])
    small = drafted()
    return {
        "JPEG decode, full size": ms(lambda: load_image(path)),
        f"JPEG decode, draft ({small.width}×{small.height})": ms(drafted),
        "integer bicubic (fast)": ms(lambda: resize_uint8(rgb)),
        "float bicubic (reference)": ms(lambda: resize_to_uint8(rgb)),
        "model": ms(lambda: pipe.run_tensor(x)),
    }


def _score(predictors: dict[str, Any], batch: torch.Tensor) -> dict[str, np.ndarray]:
    return {name: p.run_tensor(normalize_uint8(batch))[0] for name, p in predictors.items()}


def bench_parity(work: Path, toy_root: Path | None) -> dict[str, Any]:
    """Logit differences and decision changes of each shortcut against the reference resize."""
    from ladeda_lib.data.toy import render_toy_image

    predictors = {n: InferencePipeline(get_entry(n).path) for n in ("toy-student-plain", "toy-student-augmented")}
    images = dict(photographs())
    for name, photo in list(images.items()):
        for label, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
            images[f"{name}@{label}"] = np.asarray(Image.fromarray(photo).resize(size, Image.BICUBIC))
    for s in range(40):
        images[f"toy_{s}"] = render_toy_image(1000 + s, s % 2).image
    images = {k: np.ascontiguousarray(v[: v.shape[0] // 2 * 2, : v.shape[1] // 2 * 2]) for k, v in images.items()}
    frames = [av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format="yuv420p") for a in images.values()]
    rgb = [f.to_ndarray(format="rgb24") for f in frames]  # what the decoder hands over, for every path alike
    reference = torch.stack([resize_to_uint8(a) for a in rgb])
    routes = {
        "swscale in the decoder (scaler)": torch.stack([convert_frame(f, "scaler")[0] for f in frames]),
        "integer bicubic (fast)": torch.stack([resize_uint8(a) for a in rgb]),
        "PIL bicubic": torch.stack([pil_bicubic(a) for a in rgb]),
    }
    jpeg_dir = work / "parity_jpegs"
    jpeg_dir.mkdir()
    big = {k: v for k, v in images.items() if min(v.shape[:2]) >= 512}  # draft changes only images ≥ 512 a side
    for name, array in big.items():
        Image.fromarray(array).save(jpeg_dir / f"{name}.jpg", quality=90)
    jpegs = sorted(jpeg_dir.glob("*.jpg"))
    jpeg_reference = torch.stack([load_uint8(p, "exact")[0] for p in jpegs])
    want = _score(predictors, reference)
    rows = []
    for route, batch in routes.items():
        got = _score(predictors, batch)
        pixels = (batch.int() - reference.int()).abs()
        rows.append(_parity_row(route, len(images), pixels, want, got))
    for route, method in (("JPEG draft + exact resize", "exact"), ("JPEG draft + fast resize", "fast")):
        batch = torch.stack([load_uint8(p, method, draft=True)[0] for p in jpegs])
        pixels = (batch.int() - jpeg_reference.int()).abs()
        rows.append(
            _parity_row(route, len(jpegs), pixels, _score(predictors, jpeg_reference), _score(predictors, batch))
        )
    result: dict[str, Any] = {"rows": rows, "images": len(images), "jpegs": len(jpegs)}
    if toy_root is not None and (toy_root / "test").is_dir():
        result["toy_test"] = toy_split(toy_root, predictors)
    return result


def _parity_row(route: str, n: int, pixels: torch.Tensor, want: dict, got: dict) -> dict[str, Any]:
    row: dict[str, Any] = {
        "route": route,
        "images": n,
        "pixel_max": int(pixels.max()),
        "pixel_mean": float(pixels.float().mean()),
    }
    for name in want:
        row[name] = {
            "max_dlogit": float(np.abs(want[name] - got[name]).max()),
            "decisions_changed": int(((want[name] >= 0) != (got[name] >= 0)).sum()),
        }
    return row


def toy_split(root: Path, predictors: dict[str, Any]) -> dict[str, Any]:
    """AP and decisions on the toy test split with the reference, the fast resize and draft mode."""
    from sklearn.metrics import average_precision_score

    from ladeda_lib.data import detect_dataset

    samples = [s for s in detect_dataset(root, warn=False).samples if s.split == "test"]
    labels = np.array([s.label for s in samples])
    out: dict[str, Any] = {"images": len(samples)}
    batches = {
        "reference": torch.stack([load_uint8(s.path, "exact")[0] for s in samples]),
        "fast": torch.stack([load_uint8(s.path, "fast")[0] for s in samples]),
        "draft + exact": torch.stack([load_uint8(s.path, "exact", draft=True)[0] for s in samples]),
    }
    scores = {route: _score(predictors, batch) for route, batch in batches.items()}
    for route, by_model in scores.items():
        out[route] = {
            name: {
                "ap": float(average_precision_score(labels, logits)),
                "decisions_changed": int(((logits >= 0) != (scores["reference"][name] >= 0)).sum()),
            }
            for name, logits in by_model.items()
        }
    return out


def run(threads: int = 2, seconds: float = 5.0, n_images: int = 48, toy_root: Path | None = None) -> dict[str, Any]:
    """Every measurement of this file as one dict."""
    from ladeda_lib.checkpoints import load_checkpoint
    from ladeda_lib.export import convert_to_tflite, export_onnx

    torch.set_num_threads(threads)
    results: dict[str, Any] = {"threads": threads, "load_start": _load(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="ladeda_video_") as tmp:
        work = Path(tmp)
        student = load_checkpoint(get_entry("toy-student-augmented").path).model
        onnx_file = export_onnx(student, work / "student.onnx", with_patches=True)
        model = convert_to_tflite(onnx_file, work, ["float32"])["float32"]
        results["clips"] = bench_clips(work, model, seconds, threads)
        results["stills"] = bench_stills(work, model, n_images, threads)
        results["parity"] = bench_parity(work, toy_root)
    results["load_end"] = _load()
    return results


def markdown_section(results: dict[str, Any]) -> str:
    lines = [
        "## Video and stills: decoding that keeps up",
        "",
        f"Float32 TFLite student (the shipped augmented student exported here), {results['threads']} threads, "
        f"{results['cores']} cores; load average {results['load_start']:.1f} at the start and "
        f"{results['load_end']:.1f} at the end of this section. Every frame scored. Frames/s rest on two rounds "
        "per path (best kept), interleaved, so a busy moment slows all paths alike: read the ratios.",
        "",
        "| clip | H.264 bitrate | fast frames/s | naive (PIL bicubic) | reference (project image path) | fast / naive |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, c in results["clips"].items():
        fps = c["fps"]
        fast, naive, ref = fps["fast"], fps["naive (PIL bicubic)"], fps["reference (project image path)"]
        lines.append(
            f"| {name} ({c['size']}, {c['frames']} frames) | {c['mbit_per_s']:.1f} Mbit/s | **{fast:.0f}** | "
            f"{naive:.0f} | {ref:.0f} | **{fast / naive:.1f}×** |"
        )
    lines += ["", "Where the time goes, milliseconds per frame, each stage measured alone:", ""]
    names = list(results["clips"])
    lines += [f"| stage | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]
    for stage in results["clips"][names[0]]["profile"]:
        lines.append(f"| {stage} | " + " | ".join(f"{results['clips'][n]['profile'][stage]:.1f}" for n in names) + " |")
    s = results["stills"]
    lines += [
        "",
        f"A folder of {s['images']} 1080p JPEGs (quality 90) through `predict_batch`, {s['decode_threads']} "
        "decoding threads ahead of the model:",
        "",
        "| loader | images/s |",
        "|---|---:|",
        *(f"| {k} | {v:.0f} |" for k, v in s["images_per_s"].items()),
        "",
        "Per 1080p JPEG, one thread, each stage alone (ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in s["profile"].items())
        + ".",
        "",
        f"Parity against the reference resize (the shared input geometry) on {results['parity']['images']} images "
        f"(photographs at their own size and as 720p / 1080p frames, toy images; draft rows: the "
        f"{results['parity']['jpegs']} of them at least 512 pixels a side, saved as JPEG quality 90):",
        "",
        "| route | pixels max / mean | plain student max \\|Δ logit\\|, decisions changed | augmented student |",
        "|---|---:|---:|---:|",
    ]
    for r in results["parity"]["rows"]:
        p, a = r["toy-student-plain"], r["toy-student-augmented"]
        lines.append(
            f"| {r['route']} | {r['pixel_max']} / {r['pixel_mean']:.2f} | {p['max_dlogit']:.3f}, "
            f"{p['decisions_changed']} of {r['images']} | {a['max_dlogit']:.3f}, {a['decisions_changed']} of {r['images']} |"
        )
    toy = results["parity"].get("toy_test")
    if toy:
        lines += ["", f"Toy test split ({toy['images']} images, all under 512 pixels a side):", ""]
        lines += ["| route | plain AP, decisions changed | augmented AP, decisions changed |", "|---|---:|---:|"]
        for route in ("reference", "fast", "draft + exact"):
            p, a = toy[route]["toy-student-plain"], toy[route]["toy-student-augmented"]
            lines.append(
                f"| {route} | {p['ap']:.4f}, {p['decisions_changed']} | {a['ap']:.4f}, {a['decisions_changed']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each clip")
    parser.add_argument("--images", type=int, default=48, help="1080p JPEGs in the folder")
    parser.add_argument("--toy", type=Path, default=None, help="toy dataset for the AP rows (default data/toy_wildrf)")
    parser.add_argument("--markdown", type=Path, default=None, help="write the section here")
    args = parser.parse_args(argv)
    from ladeda_lib.paths import default_toy_dir

    results = run(args.threads, args.seconds, args.images, args.toy or default_toy_dir())
    text = f"# Video benchmark\n\nMeasured by `python benchmarks/bench_video.py {' '.join(argv or sys.argv[1:])}`.\n\n"
    text += markdown_section(results)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
