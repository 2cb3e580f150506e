"""Shared test fixtures, built once per session, and the ``slow`` marker.

* ``benchmarks/`` is on the import path: the stand-ins for the published checkpoints (``standins``) and the
  int8 study's tools live there, not in the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
