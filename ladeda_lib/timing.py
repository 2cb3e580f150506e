"""One thread policy, one device resolver, one latency rule.

* :func:`resolve_threads`: ``None`` means PyTorch's current thread count, and every backend (PyTorch,
  onnxruntime, LiteRT) gets the same number.
* :func:`resolve_device`: ``"auto"`` → cuda, else mps, else cpu; other names are checked.
* :func:`measure_latency_ms` is the latency rule used by verification, the pipeline and the benchmarks:
  batch-1 calls in consecutive blocks, the median of the quietest block.

Introduced in notebook 08.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def resolve_threads(threads: int | None = None) -> int:
    """The thread count every backend uses: ``threads`` if given, else PyTorch's current count
    (``torch.set_num_threads``, ``OMP_NUM_THREADS``). LiteRT's own default uses fewer threads than the
    machine has, so it is always given this number explicitly."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return int(threads or torch.get_num_threads())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda if available, else mps, else cpu; other names are checked and returned."""
    name = str(device)
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use cpu or auto")
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise ValueError(f"--device {name}: Apple MPS is not available on this machine; use cpu or auto")
    if dev.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"--device {name}: expected one of auto, cpu, cuda, mps")
    return dev


def latency_samples_ms(fn: Callable[[], Any], runs: int = 30, warmup: int = 3) -> list[float]:
    """``runs`` timed calls of ``fn()`` after ``warmup`` untimed ones, in milliseconds, in call order."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def quietest_block_median(times_ms: list[float], blocks: int = 3) -> float:
    """Median of the quietest of ``blocks`` consecutive blocks of ``times_ms``."""
    size = max(1, -(-len(times_ms) // max(1, blocks)))
    return float(min(np.median(times_ms[i : i + size]) for i in range(0, len(times_ms), size)))


def measure_latency_ms(fn: Callable[[], Any], runs: int = 30, warmup: int = 3, blocks: int = 3) -> float:
    """Batch-1 latency of ``fn()`` in milliseconds: the median of the quietest of ``blocks`` blocks of calls.

    On a shared machine a burst of outside load can slow a whole stretch of calls (measured: onnxruntime 7 ms
    instead of 2.3 ms in one of three identical runs); the quietest block's median is the closest to what the
    backend itself costs, and equals the plain median when nothing interferes. Works behind notebook 08.
    """
    return quietest_block_median(latency_samples_ms(fn, runs, warmup), blocks)
