"""Run ``python -m MODULE ARGS...`` in this process and record its peak resident memory.

    python benchmarks/rss_probe.py OUT_DIR MODULE [ARGS...]
    torchrun --standalone --nproc_per_node 2 benchmarks/rss_probe.py OUT_DIR MODULE [ARGS...]

The module runs exactly as ``python -m MODULE ARGS...`` would (``runpy``, as ``__main__``), in this process,
so the figure is the command's own. On exit (normal, error or ``SystemExit``) it writes
``OUT_DIR/rss_rank<RANK>.json`` with ``peak_rss_mib`` (``VmHWM``: the largest resident set this process had
since it started, see :func:`own_peak_rss_mib`), ``children_peak_rss_mib`` (the largest child it waited for,
e.g. DataLoader workers, 0 if none), the rank (``RANK`` set by torchrun, else 0) and the exit status. Under
torchrun every worker process writes its own file: peak memory per process. Used by
``bench_training.bench_scale``.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
from pathlib import Path


def own_peak_rss_mib() -> float:
    """This process's peak resident memory since its ``exec`` (MiB): ``VmHWM`` of ``/proc/self/status``.

    Not ``ru_maxrss``: on Linux that also counts the parent's resident memory at the ``fork`` before the
    ``exec`` (a child of a 2.5 GiB benchmark process reports at least 2.5 GiB). ``ru_maxrss`` where there is
    no ``/proc``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _write(out_dir: Path, exit_code: object) -> None:
    rank = int(os.environ.get("RANK", "0"))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "rank": rank,
        "peak_rss_mib": own_peak_rss_mib(),
        "ru_maxrss_mib": maxrss,
        "children_peak_rss_mib": children,
        "exit": exit_code,
    }
    (out_dir / f"rss_rank{rank}.json").write_text(json.dumps(record) + "\n")


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: rss_probe.py OUT_DIR MODULE [ARGS...]")
    out_dir, module = Path(sys.argv[1]), sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    code: object = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        raise
    except BaseException:
        code = "exception"
        raise
    finally:
        _write(out_dir, code)


if __name__ == "__main__":
    main()
