"""The JSON files the project writes (reports, metrics, sidecars): plain values only, NaN and infinity as null.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON and which other tools refuse; a metric
that is undefined (AP with one class) is written as ``null`` instead. Paths become strings, tuples lists and
dict keys strings. Introduced in notebook 05.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float → None, Path → str, tuple → list, dict key → str (recursively)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, value: Any) -> Path:
    """Write :func:`json_safe` of ``value`` to ``path`` (folders created, indented, trailing newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(value), indent=2) + "\n")
    return path
