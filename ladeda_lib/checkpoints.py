"""Saving and loading models: atomic writes, metadata, published state_dicts, clear errors.

Our checkpoint is a plain dict — ``{"format": "ladeda", "version": 1, "arch", "config", "state_dict",
"metadata"}`` — holding only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: a file that carries pickled code is refused. A bare published
state_dict (``WildRF_LaDeDa.pth``, ``WildRF_Tiny_LaDeDa.pth``, …) loads too; the architecture is
recognised from its keys. Introduced in notebook 01.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ladeda_lib.models import LaDeDa, PatchDetector, TinyLaDeDa

FORMAT = "ladeda"
VERSION = 1
ARCHES: dict[str, type[PatchDetector]] = {"LaDeDa": LaDeDa, "TinyLaDeDa": TinyLaDeDa}
DESCRIPTIONS = {"LaDeDa": "a LaDeDa teacher", "TinyLaDeDa": "a Tiny-LaDeDa student"}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used as asked; the message says why and what was expected."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode) plus what was stored with it."""

    model: PatchDetector
    arch: str
    config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    published: bool = False
    path: Path | None = None


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash mid-write leaves the previous file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _plain(value: Any) -> Any:
    """Turn metadata into types ``weights_only`` loading accepts (Paths → str, tuples → lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return value
    return str(value)


def save_checkpoint(model: PatchDetector, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``model`` atomically with its architecture, config and ``metadata`` (training config, metrics).

    Under torchrun only rank 0 writes, and every rank waits until the file is there (a collective: every
    rank calls it), so a ``load_checkpoint`` right after it reads the new file on every rank.
    """
    from ladeda_lib import distributed

    if not distributed.is_main():
        distributed.barrier()
        return Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": model.arch,
        "config": _plain(model.config()),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": _plain(metadata or {}),
    }
    saved = atomic_torch_save(payload, path)
    distributed.barrier()
    return saved


def detect_arch(state_dict: dict[str, Any]) -> str | None:
    """Recognise a state_dict's architecture: "LaDeDa", "TinyLaDeDa" or None.

    A published layout is matched exactly (keys and shapes) through :func:`ladeda_lib.registry.identify`;
    other widths of the teacher are recognised from their keys.
    """
    from ladeda_lib.registry import identify

    entry = identify(state_dict)
    if entry is not None:
        return entry.arch
    keys = set(state_dict)
    if "layer4.0.conv1.weight" in keys and "fc.weight" in keys:
        return "LaDeDa"
    if "layer1.0.conv2.weight" in keys and "layer2.0.conv1.weight" not in keys and "fc.weight" in keys:
        if "layer1.0.conv3.weight" not in keys:
            return "TinyLaDeDa"
    return None


def _read(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected a checkpoint file (.pt/.pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} was refused: it holds pickled Python objects, and checkpoints are only loaded with "
            f"weights_only=True so that opening a downloaded file cannot run code. Save plain state_dicts "
            f"(or use ladeda_lib.checkpoints.save_checkpoint). Details: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({err})") from err


def _mismatch(path: Path, arch: str, missing: list[str], unexpected: list[str], found: str | None) -> str:
    lines = [f"{path} does not fit {DESCRIPTIONS[arch]}."]
    if found and found != arch:
        lines.append(f"This is {DESCRIPTIONS[found]} checkpoint, not {DESCRIPTIONS[arch]}.")
    if missing:
        lines.append(f"Missing keys ({len(missing)}): {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
    if unexpected:
        more = " …" if len(unexpected) > 8 else ""
        lines.append(f"Unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{more}")
    return "\n".join(lines)


def build_model(arch: str, config: dict[str, Any] | None = None) -> PatchDetector:
    """Instantiate ``arch`` ("LaDeDa" or "TinyLaDeDa") with ``config`` (width, preprocess, pool)."""
    if arch not in ARCHES:
        raise CheckpointError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHES)}")
    return ARCHES[arch](**(config or {}))


def load_checkpoint(
    path: str | Path,
    expected: str | None = None,
    pool: Any = "stored",
    preprocess: str | None = None,
) -> Checkpoint:
    """Load our checkpoint or a bare published state_dict into a model in eval mode (strict).

    Args:
        path: the ``.pt``/``.pth`` file.
        expected: "LaDeDa" or "TinyLaDeDa" to insist on one architecture (clear error otherwise).
        pool: top-K to use; ``"stored"`` keeps the file's own (published state_dicts: mean, "all").
        preprocess: override the preprocessing (published files do not record it; defaults apply).

    Raises:
        FileNotFoundError, CheckpointError: with the missing/unexpected keys and what the file looks like.
    """
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}; expected a state_dict or a ladeda checkpoint")
    published = raw.get("format") != FORMAT
    if published:
        state_dict, metadata, config = raw, {}, {"pool": "all"}
        arch = detect_arch(state_dict)
        if arch == "LaDeDa":
            config["width"] = int(state_dict["conv1.weight"].shape[0])
        if arch is None:
            arch = expected
            if arch is None:
                sample = ", ".join(list(state_dict)[:6])
                raise CheckpointError(
                    f"{path} is neither a LaDeDa teacher nor a Tiny-LaDeDa student state_dict (first keys: {sample})"
                )
    else:
        state_dict, metadata = raw["state_dict"], raw.get("metadata", {})
        arch, config = raw["arch"], dict(raw.get("config", {}))
    found = arch
    if expected is not None and expected != arch:
        sd_model = build_model(expected)
        missing = sorted(set(sd_model.state_dict()) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(sd_model.state_dict()))
        raise CheckpointError(_mismatch(path, expected, missing, unexpected, found))
    if pool != "stored":
        config["pool"] = pool
    if preprocess is not None:
        config["preprocess"] = preprocess
    model = build_model(arch, config)
    expected_sd = model.state_dict()
    missing = sorted(set(expected_sd) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected_sd))
    shape_errors = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected_sd[k].shape)}"
        for k, v in state_dict.items()
        if k in expected_sd and tuple(v.shape) != tuple(expected_sd[k].shape)
    ]
    if missing or unexpected or shape_errors:
        message = _mismatch(path, arch, missing, unexpected, detect_arch(state_dict))
        if shape_errors:
            message += "\nShape mismatches: " + "; ".join(shape_errors[:5])
        raise CheckpointError(message)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    return Checkpoint(model, arch, model.config(), dict(metadata), published, path)
