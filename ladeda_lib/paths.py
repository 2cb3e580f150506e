"""Where the project keeps its data, weights and run outputs.

Defaults resolve against the project root (the folder holding ``pyproject.toml`` next to this package,
i.e. the clone), so notebooks started from ``notebooks/`` and commands started from the root find the
same files. Set ``LADEDA_HOME`` to use another root (for example an installed package).
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The root holding ``data/`` and ``weights/``: ``$LADEDA_HOME``, else the clone, else the cwd."""
    env = os.environ.get("LADEDA_HOME")
    if env:
        return Path(env).expanduser().resolve()
    clone = Path(__file__).resolve().parent.parent
    if (clone / "pyproject.toml").exists():
        return clone
    return Path.cwd()


def data_dir() -> Path:
    """``<root>/data``: WildRF or the generated toy dataset."""
    return project_root() / "data"


def weights_dir() -> Path:
    """``<root>/weights``: published checkpoints, trained teachers and students, exports."""
    return project_root() / "weights"


def default_toy_dir() -> Path:
    """``<root>/data/toy_wildrf``: where the toy dataset is generated when no data is given."""
    return data_dir() / "toy_wildrf"


def shown(path: str | os.PathLike) -> str:
    """``path`` as outputs print it: relative to :func:`project_root` when inside it (``data/toy_wildrf``), so no
    stored output or log names one machine's folders; a path outside the root is printed as given."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(project_root()))
    except ValueError:
        return str(p)
