"""Training speed on the CPU: student training images/s, where a step's time goes, teacher-target throughput.

Measures, with ``--threads`` (default 2) PyTorch threads:

1. **Student training step** (Tiny-LaDeDa, batch 32, 256×256, distillation loss against a 31×31 teacher map):
   images/s, and each step split into data (gather uint8 batch + normalise), forward (+ loss), backward and
   optimizer step — the share of step time spent outside forward/backward is what the data pipeline and the
   optimizer cost.
2. **Student training epoch** through the real loop (:func:`ladeda_lib.distill.train_student` on in-memory
   data): images/s including validation, checkpoints, ``log.json`` and ``resume.pt``, and the share of the
   epoch outside forward/backward of the training batches.
3. **Teacher targets**: :func:`ladeda_lib.distill.compute_teacher_targets` (no cache: hashing, batching,
   copying the outputs) against the teacher's bare forward on the same batches, images/s each.

Synthetic images are used (speed does not depend on pixel values); weights are random.

4. **Scale** (:func:`bench_scale`, ``--scale SMALL LARGE``): ``ladeda train-student --device cpu`` as a
   subprocess on two toy sets (300 and 3,000 training images: ``ladeda make-toy-data --train-per-class 150 /
   1500``) with the shipped toy teacher (width 16), each from an empty cache (decode + teacher targets + one
   epoch + calibration): wall time and peak resident memory of the process (``rss_probe.py``); and one process
   (2 threads) against ``torchrun --standalone --nproc_per_node 2`` (gloo, 1 thread each) on the small set with
   a warm cache and the same global batch: training seconds per epoch, training images/s, peak RSS of every
   process, and how far apart the two runs' final weights are. ``run.py`` runs it when the two sets exist.

    python benchmarks/bench_training.py [--threads 2] [--images 96] [--width 16] [--json OUT] [--markdown OUT]
    python benchmarks/bench_training.py --scale data/toy300 data/toy3000 [--teacher T.pt] [--baseline-src DIR]

:func:`markdown_section` returns the Markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ladeda_lib.data.images import normalize_uint8
from ladeda_lib.data.layouts import DatasetIndex
from ladeda_lib.data.tensors import ImageTensors
from ladeda_lib.distill import StudentTrainConfig, TrainingData, compute_teacher_targets, train_student
from ladeda_lib.distill.loss import default_alignment, distillation_loss
from ladeda_lib.models import LaDeDa, TinyLaDeDa
from ladeda_lib.runner import CPU_BATCH_LIMIT


def _images(n: int, size: int = 256, seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageTensors(images, torch.arange(n) % 2, [])


def bench_student_steps(
    n_steps: int = 12, batch_size: int = 32, warmup: int = 2, channels_last: bool = True
) -> dict[str, Any]:
    """Time the parts of a student training step: data, forward + loss, backward, optimizer step.

    ``channels_last`` as the training loop does by default (:func:`ladeda_lib.distill.fit`).
    """
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = TinyLaDeDa().train().to(memory_format=layout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = _images(batch_size * 4)
    targets = torch.randn(len(data), 1, 31, 31)
    idx_all = default_alignment(256)
    parts: dict[str, list[float]] = {"data": [], "forward": [], "backward": [], "optimizer": [], "step": []}
    g = torch.Generator().manual_seed(0)
    for step in range(warmup + n_steps):
        t0 = time.perf_counter()
        idx = torch.randperm(len(data), generator=g)[:batch_size]
        x = normalize_uint8(data.images[idx].contiguous(memory_format=layout))
        y, t = data.labels[idx], targets[idx]
        t1 = time.perf_counter()
        logit, patches = model.forward_with_patches(x)
        loss = distillation_loss(patches, logit, t, y, indices=idx_all).total
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        finite = bool(torch.isfinite(loss.detach()))
        float(loss.detach())
        t4 = time.perf_counter()
        assert finite
        if step >= warmup:
            for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
                parts[key].append(value)
    med = {k: statistics.median(v) for k, v in parts.items()}
    return {
        "batch_size": batch_size,
        "images_per_s": batch_size / med["step"],
        "median_s": med,
        "share_outside_fwd_bwd": 1.0 - (med["forward"] + med["backward"]) / med["step"],
    }


def bench_student_epoch(n_images: int = 96, n_val: int = 32, batch_size: int = 32) -> dict[str, Any]:
    """One epoch through the real loop (validation, checkpoints, logs included), with forward/backward timed."""
    teacher = LaDeDa(width=1)
    with tempfile.TemporaryDirectory() as tmp:
        data = TrainingData(DatasetIndex(Path(tmp), "folder", []), _images(n_images, seed=1), _images(n_val, seed=2))
        # targets first (not timed here), so the epoch measures training only
        compute_teacher_targets(teacher, data.train, Path(tmp) / "cache", progress=False)
        compute_teacher_targets(teacher, data.val, Path(tmp) / "cache", progress=False)
        fwd_bwd = {"s": 0.0}
        original = torch.Tensor.backward

        def timed_backward(self, *args, **kwargs):
            start = time.perf_counter()
            original(self, *args, **kwargs)
            fwd_bwd["s"] += time.perf_counter() - start

        forward_time = {"s": 0.0}
        original_fwp = TinyLaDeDa.forward_with_patches

        def timed_forward(self, x):
            start = time.perf_counter()
            out = original_fwp(self, x)
            if self.training:
                forward_time["s"] += time.perf_counter() - start
            return out

        cfg = StudentTrainConfig(
            output=Path(tmp) / "run", epochs=1, batch_size=batch_size, cache_dir=Path(tmp) / "cache"
        )
        torch.Tensor.backward = timed_backward
        TinyLaDeDa.forward_with_patches = timed_forward
        try:
            start = time.perf_counter()
            result = train_student(cfg, teacher=teacher, data=data, progress=False)
            wall = time.perf_counter() - start
        finally:
            torch.Tensor.backward = original
            TinyLaDeDa.forward_with_patches = original_fwp
        epoch = result.history[0]["time_s"]
    inside = forward_time["s"] + fwd_bwd["s"]
    return {
        "train_images": n_images,
        "val_images": n_val,
        "epoch_s": epoch,
        "wall_s": wall,
        "train_images_per_s": n_images / epoch,
        "fwd_bwd_s": inside,
        "share_outside_fwd_bwd": 1.0 - inside / epoch,
    }


def bench_teacher_targets(width: int = 16, n_images: int = 64, batch_size: int = 32) -> dict[str, Any]:
    """compute_teacher_targets (hash + batches + copies, no cache) vs the teacher's bare forward.

    Two bare forwards: the layout and batch ``predict`` uses (channels-last, CPU batches of
    ``CPU_BATCH_LIMIT``) — the fair reference for the overhead — and the naive default layout at
    ``batch_size``.
    """
    torch.manual_seed(0)
    teacher = LaDeDa(width=width).eval()
    data = _images(n_images, seed=3)

    def bare(model: torch.nn.Module, step: int, layout: torch.memory_format) -> float:
        with torch.no_grad():
            model(normalize_uint8(data.images[:2]).contiguous(memory_format=layout))  # warm-up
            start = time.perf_counter()
            for i in range(0, n_images, step):
                model.forward_with_patches(normalize_uint8(data.images[i : i + step]).contiguous(memory_format=layout))
            return time.perf_counter() - start

    naive = bare(teacher, batch_size, torch.contiguous_format)
    fast_model = copy.deepcopy(teacher).to(memory_format=torch.channels_last)
    fast = bare(fast_model, CPU_BATCH_LIMIT, torch.channels_last)
    start = time.perf_counter()
    compute_teacher_targets(teacher, data, cache_dir=None, batch_size=batch_size, progress=False)
    full = time.perf_counter() - start
    return {
        "width": width,
        "parameters": teacher.num_parameters(),
        "images": n_images,
        "bare_images_per_s": n_images / fast,
        "naive_images_per_s": n_images / naive,
        "naive_batch_size": batch_size,
        "targets_images_per_s": n_images / full,
        "bare_ms_per_image": 1e3 * fast / n_images,
        "overhead": full / fast - 1.0,
    }


def run(threads: int = 2, n_images: int = 96, width: int = 16) -> dict[str, Any]:
    """All three measurements with ``threads`` PyTorch threads."""
    torch.set_num_threads(threads)
    return {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": threads,
            "torch": torch.__version__,
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "student_step": bench_student_steps(),
        "student_step_contiguous": bench_student_steps(channels_last=False),
        "student_epoch": bench_student_epoch(n_images),
        "teacher_targets": bench_teacher_targets(width, min(n_images, 64)),
    }


def markdown_section(results: dict[str, Any]) -> str:
    """The "Training" section of ``benchmarks/RESULTS.md`` from :func:`run`'s results."""
    m, s, e, t = results["machine"], results["student_step"], results["student_epoch"], results["teacher_targets"]
    med = s["median_s"]
    lines = [
        "## Training (CPU)",
        "",
        f"{m['threads']} PyTorch threads on {m['cpu_count']} cores ({m['cpu']}), torch {m['torch']}; "
        f"1-minute load average at start {m['load_average_1min']:.1f}. `python benchmarks/bench_training.py`.",
        "",
        f"**Student training step** (Tiny-LaDeDa, batch {s['batch_size']}, 256×256, distillation loss, "
        f"channels-last as the training loop runs it): **{s['images_per_s']:.1f} images/s** "
        f"(default contiguous layout: {results['student_step_contiguous']['images_per_s']:.1f} images/s).",
        "",
        "| part of a step | median ms | share |",
        "|---|---:|---:|",
    ]
    for key, label in (
        ("data", "data (gather uint8 batch, normalise)"),
        ("forward", "forward + loss"),
        ("backward", "backward"),
        ("optimizer", "optimizer step + loss read-out"),
    ):
        lines.append(f"| {label} | {1e3 * med[key]:.1f} | {100 * med[key] / med['step']:.1f} % |")
    lines += [
        f"| **step** | **{1e3 * med['step']:.1f}** | 100 % |",
        "",
        f"Share of step time outside forward/backward: **{100 * s['share_outside_fwd_bwd']:.1f} %**.",
        "",
        f"**Student epoch through the real loop** ({e['train_images']} training + {e['val_images']} validation "
        f"images): epoch {e['epoch_s']:.1f} s (training + validation), "
        f"**{e['train_images_per_s']:.1f} training images/s**; "
        f"{100 * e['share_outside_fwd_bwd']:.1f} % of the epoch is outside the training forward/backward "
        f"(validation pass, batching, optimizer). The whole call took {e['wall_s']:.1f} s including data "
        "hashing, cached teacher targets, checkpoints, `log.json` and `resume.pt`.",
        "",
        f"**Teacher targets** (LaDeDa width {t['width']}, {t['parameters']:,} parameters, {t['images']} images): "
        f"bare forward {t['bare_images_per_s']:.1f} images/s ({t['bare_ms_per_image']:.0f} ms/image, channels-last, "
        f"batches of {CPU_BATCH_LIMIT} as `predict` runs it); `compute_teacher_targets` "
        f"{t['targets_images_per_s']:.1f} images/s ({100 * t['overhead']:+.1f} % for hashing, batching, the model "
        f"copy and output copies). The naive default-layout forward in batches of {t['naive_batch_size']}: "
        f"{t['naive_images_per_s']:.1f} images/s.",
        "",
    ]
    return "\n".join(lines)


PROBE = Path(__file__).resolve().parent / "rss_probe.py"
SHIPPED_TEACHER = Path(__file__).resolve().parents[1] / "ladeda_lib" / "pretrained" / "toy_teacher_w16.pt"


def _peak_run(cmd: list[str], env: dict[str, str], probe_dir: Path) -> dict[str, Any]:
    """Run ``cmd`` (a :mod:`rss_probe` command writing into ``probe_dir``): wall seconds and peak resident
    memory (MiB) of every process that ran the command (one per rank), and of the whole process tree
    (``ru_maxrss`` from ``wait4``: the largest single process, the torchrun agent included)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    ranks = sorted((json.loads(f.read_text()) for f in probe_dir.glob("rss_rank*.json")), key=lambda r: r["rank"])
    if not ranks:
        raise RuntimeError(f"{' '.join(cmd)} wrote no memory record into {probe_dir}")
    return {"seconds": seconds, "peak_rss_mib": max(r["peak_rss_mib"] for r in ranks), "ranks": ranks}


def _student_cmd(
    probe_dir: Path, data: Path, teacher: Path, out: Path, cache: Path, epochs: int, procs: int = 1
) -> list[str]:
    """``[torchrun --standalone --nproc_per_node N] rss_probe.py ... ladeda_lib train-student ... --device cpu``."""
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    return [*launcher, str(PROBE), str(probe_dir), "ladeda_lib", "train-student", "--data", str(data),
            "--teacher", str(teacher), "--output", str(out), "--cache-dir", str(cache), "--epochs", str(epochs),
            "--device", "cpu", "--quiet"]  # fmt: skip


def _shown(cmd: list[str]) -> str:
    """The command as a reader would type it (no probe, no temporary folders)."""
    skip = {str(PROBE)}
    words: list[str] = []
    it = iter(cmd)
    for word in it:
        if word == str(PROBE):
            next(it)  # the probe's output folder
            words += ["-m"]
            continue
        if word in {"--output", "--cache-dir"}:
            next(it)
            continue
        if word not in skip:
            words.append(word)
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    text = " ".join(words).replace(f"{sys.executable} -m torch.distributed.run", "torchrun")
    return text.replace(sys.executable, "python").replace(root, "")


def _max_weight_difference(a: Path, b: Path) -> tuple[float, str]:
    """Largest absolute difference between the floating-point tensors of two checkpoints, and its tensor."""
    sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    return max((float((sa[k] - sb[k]).abs().max()), k) for k in sa if sa[k].is_floating_point())


def bench_scale(
    small: Path,
    large: Path,
    teacher: Path = SHIPPED_TEACHER,
    threads: int = 2,
    source: Path | None = None,
    process_epochs: int = 2,
) -> dict[str, Any]:
    """Peak memory of ``train-student`` on a small and a large dataset; 1 process against 2 (torchrun, gloo).

    Memory: ``train-student --epochs 1`` on each set from an empty cache (decode, teacher targets, one epoch,
    calibration), peak RSS of the process. Processes: on the small set with the warm cache, ``--epochs
    process_epochs`` with the same global batch (32), one process with ``threads`` threads against
    ``torchrun --nproc_per_node 2`` with ``threads // 2`` each (the same cores in all); the last epoch's
    training time (validation excluded: rank 0 validates alone), peak RSS of each process, and the largest
    difference between the two runs' final weights.

    ``source``: run the code of another checkout (its root on ``PYTHONPATH``), e.g. the in-memory cache
    before memory-mapping, as the baseline. The 1-vs-2 comparison runs only for this checkout.
    """
    root = Path(source or Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(threads)}
    out: dict[str, Any] = {"source": str(root), "threads": threads, "teacher": str(teacher), "sizes": {}}
    out["load_start"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in (("small", small), ("large", large)):
            run_dir = Path(tmp) / name
            cmd = _student_cmd(run_dir / "rss", data, teacher, run_dir / "out", run_dir / "cache", 1)
            row = _peak_run(cmd, env, run_dir / "rss")
            log = json.loads((run_dir / "out" / "log.json").read_text())
            n_train, n_val = int(log["metadata"]["data"]["n_train"]), int(log["metadata"]["data"]["n_val"])
            row.update(n_train=n_train, n_val=n_val, epoch_s=log["history"][0]["time_s"], command=_shown(cmd))
            out["sizes"][name] = row
        out["rss_ratio"] = out["sizes"]["large"]["peak_rss_mib"] / out["sizes"]["small"]["peak_rss_mib"]
        if source is None:
            cache = Path(tmp) / "small" / "cache"  # warm: images and targets decoded and computed above
            procs: dict[str, Any] = {}
            for n in (1, 2):
                run_dir = Path(tmp) / f"procs{n}"
                each = max(1, threads // n)
                cmd = _student_cmd(run_dir / "rss", small, teacher, run_dir / "out", cache, process_epochs, n)
                row = _peak_run(cmd, {**env, "OMP_NUM_THREADS": str(each)}, run_dir / "rss")
                log = json.loads((run_dir / "out" / "log.json").read_text())
                n_train = int(log["metadata"]["data"]["n_train"])
                last = log["history"][-1]  # the last epoch: no start-up costs
                train_s = last.get("train_time_s", last["time_s"])
                row.update(epoch_s=last["time_s"], train_s=train_s, images_per_s=n_train / train_s,
                           threads_per_process=each, n_train=n_train, command=_shown(cmd))  # fmt: skip
                procs[str(n)] = row
            out["processes"] = procs
            out["process_epochs"] = process_epochs
            out["weights_max_abs_diff"], out["weights_max_diff_tensor"] = _max_weight_difference(
                Path(tmp) / "procs1" / "out" / "student_final.pt", Path(tmp) / "procs2" / "out" / "student_final.pt"
            )
    out["load_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return out


def _teacher_name(results: dict[str, Any]) -> str:
    path = Path(results["teacher"])
    return "the shipped toy teacher, LaDeDa width 16" if path.name == SHIPPED_TEACHER.name else f"teacher `{path.name}`"


def _in_tensor(results: dict[str, Any]) -> str:
    key = results.get("weights_max_diff_tensor")
    return f" in `{key}`" if key else ""


def scale_markdown(results: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The RESULTS.md section "Training at scale" from :func:`bench_scale`'s results (and a baseline's)."""
    small, large = results["sizes"]["small"], results["sizes"]["large"]
    lines = [
        "## Training at scale (CPU)",
        "",
        f"`ladeda train-student` as a subprocess with {_teacher_name(results)} and `--device cpu`, "
        f"{results['threads']} cores in all. Peak resident memory is the high-water mark (`VmHWM`) of each process "
        "running the command (`benchmarks/rss_probe.py`), which does not depend on how busy the machine is; times "
        f"do (1-minute load average {results.get('load_start', float('nan')):.1f} at the start of this section, "
        f"{results.get('load_end', float('nan')):.1f} at its end).",
        "",
        f"**Memory against dataset size**: `{small['command']}` and the same on the large set (empty cache: decode, "
        "teacher targets, one epoch with validation, calibration):",
        "",
        "| code | training images | validation images | whole command s | epoch s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, res in (("memory-mapped cache (this)", results), ("in-memory cache (before)", baseline)):
        if res is None:
            continue
        for size in ("small", "large"):
            r = res["sizes"][size]
            lines.append(
                f"| {label} | {r['n_train']:,} | {r.get('n_val', 0):,} | {r['seconds']:.0f} | {r['epoch_s']:.1f} | "
                f"{r['peak_rss_mib']:.0f} |"
            )
        lines.append(f"| {label}: ratio large / small | | | | | **{res['rss_ratio']:.2f}** |")
    lines += [
        "",
        f"{large['n_train'] / small['n_train']:.0f}× the training images, {results['rss_ratio']:.2f}× the peak "
        f"memory (the goal: at most 1.20×). Held whole in memory, the large set's decoded images alone would be "
        f"{large['n_train'] * 3 * 256 * 256 / 2**20:,.0f} MiB.",
    ]
    if "processes" in results:
        one, two = results["processes"]["1"], results["processes"]["2"]
        lines += [
            "",
            f"**1 process against 2** (torchrun `--standalone`, gloo; epoch {results['process_epochs']} of "
            f"`train-student --epochs {results['process_epochs']}` on the {one['n_train']} training images of the "
            "small set, warm cache, global batch 32 in both; training time excludes validation, which rank 0 runs "
            "alone):",
            "",
            "| processes | threads each | training s / epoch | training images/s | epoch s (with validation) | "
            "peak RSS per process MiB | whole command s |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n, r in results["processes"].items():
            rss = " + ".join(f"{x['peak_rss_mib']:.0f}" for x in r["ranks"])
            lines.append(
                f"| {n} | {r['threads_per_process']} | {r['train_s']:.1f} | {r['images_per_s']:.1f} | "
                f"{r['epoch_s']:.1f} | {rss} | {r['seconds']:.0f} |"
            )
        total_two = sum(x["peak_rss_mib"] for x in two["ranks"])
        lines += [
            "",
            f"Commands: `{one['command']}` against `{two['command']}` (`OMP_NUM_THREADS` "
            f"{one['threads_per_process']} and {two['threads_per_process']}). Two processes train at "
            f"**{two['images_per_s'] / one['images_per_s']:.2f}×** the speed of one and hold "
            f"{total_two / one['peak_rss_mib']:.2f}× its memory in all; the two runs' final weights differ by at most "
            f"{results['weights_max_abs_diff']:.1e}{_in_tensor(results)} (float rounding: other thread counts and "
            "reduction order, carried through Adam's steps).",
        ]
    return "\n".join(lines) + "\n"


def scale_readme(results: dict[str, Any], command: str) -> str:
    """The measured paragraph of the README section "Training at scale" (``command``: how it was produced)."""
    small, large = results["sizes"]["small"], results["sizes"]["large"]
    text = [
        f"Measured by `{command}` ({_teacher_name(results)}; toy sets with {small['n_train']:,} and "
        f"{large['n_train']:,} training images and {small['n_val']} validation images; 1-minute load average "
        f"{results.get('load_start', float('nan')):.1f} at the start, {results.get('load_end', float('nan')):.1f} at "
        "the end; the tables are in `benchmarks/RESULTS.md`):",
        "",
        f"* Peak resident memory of `ladeda train-student --epochs 1` (empty cache: decode, teacher targets, one "
        f"epoch, calibration): {small['peak_rss_mib']:,.0f} MiB for {small['n_train']:,} training images, "
        f"{large['peak_rss_mib']:,.0f} MiB for {large['n_train']:,}: **ratio {results['rss_ratio']:.2f}** (the limit "
        f"is 1.2). Held whole in memory, {large['n_train']:,} decoded images alone would take "
        f"{large['n_train'] * 3 * 256 * 256 / 2**20:,.0f} MiB.",
    ]
    if "processes" in results:
        one, two = results["processes"]["1"], results["processes"]["2"]
        speed = two["images_per_s"] / one["images_per_s"]
        verdict = (
            "about as fast as"
            if 0.9 <= speed <= 1.1
            else (f"{speed:.2f}× the speed of" if speed > 1 else f"slower than ({speed:.2f}×)")
        )
        rss_two = " and ".join(f"{x['peak_rss_mib']:,.0f}" for x in two["ranks"])
        text.append(
            f"* 1 process against 2 on the CPU (gloo), {one['n_train']} training images, the same global batch and "
            f"the same {results['threads']} cores in all ({one['threads_per_process']} threads in one process, "
            f"{two['threads_per_process']} in each of two): {one['images_per_s']:.1f} against "
            f"{two['images_per_s']:.1f} training images/s ({one['train_s']:.1f} s against {two['train_s']:.1f} s of "
            f"training per epoch): two processes are {verdict} one. Peak memory {one['peak_rss_mib']:,.0f} MiB in "
            f"one process, {rss_two} MiB in the two. The final weights of the two runs differ by at most "
            f"{results['weights_max_abs_diff']:.1e}{_in_tensor(results)}."
        )
        why = (
            "The same cores do the work either way, so the gain suggests that one process does not keep its two threads "
            "busy (small convolutions, Python between operations), not that a second process adds compute; it also "
            "pays for the gradient all-reduce, the global BatchNorm statistics and a second copy of the interpreter."
            + (
                " On a busy machine (load average above the core count) two processes also take a larger share of "
                "the cores from the other jobs than one process does."
                if results.get("load_start", 0.0) > (os.cpu_count() or 1)
                else ""
            )
            if speed > 1.1
            else "On one 2-core CPU a second process adds no compute: the cores are the same, and it pays for the "
            "gradient all-reduce, the global BatchNorm statistics and a second copy of the interpreter and model."
        )
        text.append(
            f"  {why} The CPU run is how the multi-process path is checked to train the same model as one process; "
            "the speed-up comes with more devices: one process per GPU (NCCL), or per machine."
        )
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2: the target machine)")
    p.add_argument("--images", type=int, default=96, help="training images in the epoch measurement")
    p.add_argument("--width", type=int, default=16, help="teacher width for the target measurement")
    p.add_argument("--json", default=None, help="write the raw results here")
    p.add_argument("--markdown", default=None, help="write the Markdown section here")
    p.add_argument("--scale", nargs=2, type=Path, metavar=("SMALL", "LARGE"), help="dataset roots: memory vs size")
    p.add_argument(
        "--teacher",
        type=Path,
        default=SHIPPED_TEACHER,
        help="teacher for --scale (default: the shipped toy teacher, width 16)",
    )
    p.add_argument("--baseline-src", type=Path, help="with --scale: also measure this checkout's code")
    args = p.parse_args(argv)
    if args.scale:
        results = bench_scale(*args.scale, args.teacher, args.threads)
        base = bench_scale(*args.scale, args.teacher, args.threads, args.baseline_src) if args.baseline_src else None
        if args.json:
            Path(args.json).write_text(json.dumps({"scale": results, "baseline": base}, indent=2) + "\n")
        section = scale_markdown(results, base)
        print(section)
        if args.markdown:
            Path(args.markdown).write_text(section)
        return 0
    results = run(args.threads, args.images, args.width)
    section = markdown_section(results)
    print(section)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
