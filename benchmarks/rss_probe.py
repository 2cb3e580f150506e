"""Run ``python -m MODULE ARGS...`` in this process and record its peak resident memory.

    python benchmarks/rss_probe.py OUT_DIR MODULE [ARGS...]
    torchrun --standalone --nproc_per_node 2 benchmarks/rss_probe.py OUT_DIR MODULE [ARGS...]

The module runs exactly as ``python -m MODULE ARGS...`` would (``runpy``, as ``__main__``), in this process,
so the figure is the command's own. On exit (normal, error or ``SystemExit``) it writes
``OUT_DIR/rss_rank<RANK>.json`` with ``peak_rss_mib`` (``ru_maxrss`` of this process: the largest resident
set it ever had), ``children_peak_rss_mib`` (the largest child it waited for, e.g. DataLoader workers, 0 if
none), the rank (``RANK`` set by torchrun, else 0) and the exit status. Under torchrun every worker process
writes its own file: peak memory per process. Used by ``bench_training.bench_scale``.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
from pathlib import Path


def _write(out_dir: Path, exit_code: object) -> None:
    rank = int(os.environ.get("RANK", "0"))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"rank": rank, "peak_rss_mib": own, "children_peak_rss_mib": children, "exit": exit_code}
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
