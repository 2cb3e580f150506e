"""The training loop every command shares: stages, checkpoints, resume, NaN guard, JSON log.

One loop serves the teacher, the single-stage student and both stages of the two-stage student. What
differs — how a batch is fetched, what the loss is, how validation scores — comes from a :class:`TrainTask`;
what is trained with which optimizer comes from a list of :class:`Stage`. Read it top to bottom in
:func:`fit`:

* **Stages** — each stage names the submodules it keeps frozen (no gradient, and *eval mode*, so a frozen
  BatchNorm keeps its running statistics), its learning rate and its scheduler (``"plateau"`` =
  ReduceLROnPlateau on the validation loss, ``"cosine"`` = CosineAnnealingLR over the stage). Adam always.
* **Determinism** — the batch order comes from one ``torch.Generator`` seeded with ``seed``; on CPU the
  same seed gives bit-identical weights.
* **Files** (``output/``) — ``<prefix>epoch_NNN.pt`` after every epoch, ``<name>_best.pt`` (highest
  validation AP, ties to the lower validation loss), ``<name>_final.pt``, ``log.json`` (config, one row per
  epoch: both loss terms, accuracy, AP, AUC, lr, time) and ``resume.pt`` (model, optimizer, scheduler, RNG
  state, history — plain tensors and numbers, loadable with ``weights_only=True``). All written atomically.
* **Resume** — with ``resume=True`` the loop reloads ``resume.pt`` and continues with the next epoch;
  the result equals an uninterrupted run.
* **NaN guard** — a non-finite loss stops the run with :class:`TrainingDiverged` before the optimizer step;
  the last epoch checkpoint and ``resume.pt`` (the last good state) are left as they were.
* **GPU** — with CUDA, batches come from DataLoader workers with pinned memory and the forward/backward
  runs under ``torch.autocast`` (float16) with a ``GradScaler``; on CPU neither is used.

Introduced in notebook 03.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ladeda_lib.checkpoints import atomic_torch_save, save_checkpoint
from ladeda_lib.models import PatchDetector

RESUME_FILE = "resume.pt"
LOG_FILE = "log.json"
_RESUME_VERSION = 1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch, the batch and the last good checkpoint."""


@dataclass
class Stage:
    """One phase of training: which submodules stay frozen, Adam's learning rate, the scheduler, the epochs."""

    name: str
    epochs: int
    lr: float
    frozen: tuple[str, ...] = ()
    scheduler: str | None = None  # None, "plateau" or "cosine"
    weight_decay: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    checkpoint_prefix: str = ""


class TrainTask(Protocol):
    """What :func:`fit` needs from a kind of training (teacher or student)."""

    def plan(self, generator: torch.Generator, batch_size: int) -> list[Any]:
        """The batches of one epoch (e.g. index tensors), drawn from ``generator`` in the main process."""

    def fetch(self, spec: Any) -> dict[str, torch.Tensor]:
        """One batch of CPU tensors for a plan entry (runs in DataLoader workers on CUDA)."""

    def loss(self, model: PatchDetector, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"loss": total (scalar), <term>: scalar, ...}`` for a batch already on the model's device."""

    def validate(self, model: PatchDetector) -> dict[str, float]:
        """Validation metrics (``loss`` and the loss terms, ``accuracy``, ``ap``, ``auc``, ...)."""


class _EpochBatches(Dataset):
    def __init__(self, plan: list[Any], fetch: Callable[[Any], dict[str, torch.Tensor]]) -> None:
        self.plan, self.fetch = plan, fetch

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.fetch(self.plan[i])


@dataclass
class TrainResult:
    """What a training run produced: the trained model (CPU, eval mode), one history row per epoch, the files."""

    model: PatchDetector
    history: list[dict[str, Any]]
    output: Path
    final_path: Path
    best_path: Path | None
    log_path: Path
    best: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def set_frozen(model: nn.Module, frozen: tuple[str, ...]) -> list[nn.Parameter]:
    """Freeze the named submodules (``requires_grad=False``), unfreeze the rest; returns the trainable parameters.

    Raises ``ValueError`` for a name the model does not have.
    """
    frozen_ids = set()
    for name in frozen:
        try:
            module = model.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"cannot freeze {name!r}: {type(model).__name__} has no such submodule") from err
        frozen_ids |= {id(p) for p in module.parameters()}
    trainable = []
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen_ids)
        if p.requires_grad:
            trainable.append(p)
    return trainable


def train_mode(model: nn.Module, frozen: tuple[str, ...]) -> None:
    """``model.train()`` but frozen submodules in eval mode: their BatchNorm running statistics do not move."""
    model.train()
    for name in frozen:
        model.get_submodule(name).eval()


def _set_bn_momentum(model: nn.Module, frozen: tuple[str, ...], momentum: float | None) -> dict[str, Any]:
    """Use ``momentum`` for the trainable BatchNorm layers during training; returns the originals to restore."""
    if momentum is None:
        return {}
    frozen_modules = {id(m) for name in frozen for m in model.get_submodule(name).modules()}
    original = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen_modules:
            original[name] = m.momentum
            m.momentum = momentum
    return original


def _restore_bn_momentum(model: nn.Module, original: dict[str, Any]) -> None:
    for name, value in original.items():
        model.get_submodule(name).momentum = value


def _make_scheduler(stage: Stage, optimizer: torch.optim.Optimizer):
    if stage.scheduler is None:
        return None
    if stage.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=stage.plateau_factor, patience=stage.plateau_patience
        )
    if stage.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, stage.epochs))
    raise ValueError(f"unknown scheduler {stage.scheduler!r}; expected None, 'plateau' or 'cosine'")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_log(path: Path, payload: dict[str, Any]) -> None:
    """Write the JSON log atomically (NaN/inf become null, so every JSON reader accepts it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_finite(payload), indent=2) + "\n")
    tmp.replace(path)


def _better(row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    ap, best_ap = row.get("val_ap"), best.get("val_ap")
    ap = -1.0 if ap is None or math.isnan(ap) else ap
    best_ap = -1.0 if best_ap is None or math.isnan(best_ap) else best_ap
    if ap != best_ap:
        return ap > best_ap
    return row.get("val_loss", math.inf) < best.get("val_loss", math.inf)


def fit(
    model: PatchDetector,
    stages: list[Stage],
    task: TrainTask,
    output: str | Path,
    *,
    name: str = "student",
    batch_size: int = 32,
    seed: int = 0,
    resume: bool = False,
    device: torch.device | str = "cpu",
    num_workers: int | None = None,
    amp: bool | None = None,
    bn_momentum: float | None = 0.1,
    channels_last: bool = True,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` through ``stages`` on ``task``, writing checkpoints, ``log.json`` and ``resume.pt``.

    Args:
        model: the network to train (moved to ``device``; returned on CPU in eval mode).
        stages: the phases, in order (one for single-stage training, two for the two-stage fine-tune).
        task: batches, loss and validation (see :class:`TrainTask`).
        output: run folder.
        name: file stem of the best/final checkpoints (``student_best.pt``, ``student_final.pt``).
        bn_momentum: momentum used by *trainable* BatchNorm layers while training (the published stem uses
            0.001, meant for hundreds of thousands of steps: in a short run its running statistics would
            barely leave their initial values). The model's own values are restored afterwards. None keeps them.
        channels_last: train in the channels-last memory layout (about 2× faster for Tiny-LaDeDa on CPU;
            the values are the same up to float rounding). The returned model is contiguous again.
        callback: called with each epoch's history row (live plots in notebooks; raising stops the run).

    Raises:
        TrainingDiverged: on a NaN/inf loss (the last good checkpoint stays on disk).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    use_amp = (device.type == "cuda") if amp is None else bool(amp and device.type == "cuda")
    workers = (2 if device.type == "cuda" else 0) if num_workers is None else num_workers
    log_path, resume_path = output / LOG_FILE, output / RESUME_FILE
    final_path, best_path = output / f"{name}_final.pt", output / f"{name}_best.pt"
    metadata = dict(metadata or {})
    model.to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)

    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_stage, start_epoch, last_good = 0, 0, None
    notes: list[str] = []
    stage_names = [s.name for s in stages]
    if resume and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("stages") != stage_names:
            raise ValueError(
                f"{resume_path} belongs to a run with stages {state.get('stages')}, not {stage_names}; "
                "use another --output or drop --resume"
            )
        model.load_state_dict(state["model"])  # copies values into the model's own layout
        generator.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        history, best = list(state["history"]), state["best"]
        start_stage, start_epoch, last_good = state["stage_index"], state["epochs_done"], state.get("last_good")
        notes.append(f"resumed from {resume_path} after {len(history)} epochs")
        if progress:
            tqdm.write(f"resuming {name} from {resume_path}: {len(history)} epochs done")
    elif resume:
        notes.append(f"--resume: no {resume_path} yet, starting from the beginning")

    def log(status: str, message: str = "") -> None:
        payload = {
            "name": name,
            "status": status,
            "message": message,
            "stages": [s.__dict__ for s in stages],
            "metadata": metadata,
            "history": history,
            "best": best,
            "notes": notes,
        }
        write_log(log_path, payload)

    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    global_epoch = len(history)
    for stage_index, stage in enumerate(stages):
        if stage_index < start_stage:
            continue
        trainable = set_frozen(model, stage.frozen)
        if not trainable:
            raise ValueError(f"stage {stage.name!r} freezes every parameter; nothing to train")
        optimizer = torch.optim.Adam(trainable, lr=stage.lr, weight_decay=stage.weight_decay)
        scheduler = _make_scheduler(stage, optimizer)
        first_epoch = 0
        if resume and stage_index == start_stage and start_epoch > 0:
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            first_epoch = start_epoch
        momenta = _set_bn_momentum(model, stage.frozen, bn_momentum)
        try:
            for epoch in range(first_epoch, stage.epochs):
                t0 = time.perf_counter()
                train_mode(model, stage.frozen)
                plan = task.plan(generator, batch_size)
                loader = DataLoader(
                    _EpochBatches(plan, task.fetch),
                    batch_size=None,
                    shuffle=False,
                    num_workers=workers,
                    pin_memory=device.type == "cuda",
                    persistent_workers=False,
                )
                sums: dict[str, float] = {}
                seen = 0
                bar = tqdm(
                    loader,
                    desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}",
                    unit="batch",
                    disable=not progress,
                    leave=False,
                )
                for batch_index, batch in enumerate(bar):
                    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                    if channels_last:
                        batch = {k: v.contiguous(memory_format=layout) if v.dim() == 4 else v for k, v in batch.items()}
                    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                        terms = task.loss(model, batch)
                    total = terms["loss"]
                    if not torch.isfinite(total.detach()).all():
                        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                        where = str(last_good) if last_good else "none yet (no epoch finished; nothing was written)"
                        message = (
                            f"training stopped: the loss became non-finite in stage {stage.name!r}, epoch "
                            f"{epoch + 1}, batch {batch_index + 1} ({values}). Last good checkpoint: {where}. "
                            "Lower the learning rate or check the data; --resume restarts from the last good state."
                        )
                        log("diverged", message)
                        raise TrainingDiverged(message)
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(total).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        total.backward()
                        optimizer.step()
                    n = next(iter(batch.values())).shape[0]
                    seen += n
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
                    if progress:
                        bar.set_postfix(loss=f"{float(total.detach()):.4f}")
                bar.close()
                val = task.validate(model)
                lr = optimizer.param_groups[0]["lr"]
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(val["loss"])
                elif scheduler is not None:
                    scheduler.step()
                global_epoch += 1
                row = {"epoch": global_epoch, "stage": stage.name, "stage_epoch": epoch + 1, "lr": lr}
                row.update({f"train_{k}": v / max(1, seen) for k, v in sums.items()})
                row.update({f"val_{k}": v for k, v in val.items()})
                row["time_s"] = time.perf_counter() - t0
                history.append(row)
                epoch_meta = {**metadata, "stage": stage.name, "epoch": global_epoch, "metrics": row}
                epoch_path = output / f"{stage.checkpoint_prefix}epoch_{global_epoch:03d}.pt"
                save_checkpoint(model, epoch_path, epoch_meta)
                if _better(row, best):
                    best = row
                    save_checkpoint(model, best_path, epoch_meta)
                last_good = str(epoch_path)
                atomic_torch_save(
                    {
                        "version": _RESUME_VERSION,
                        "stages": stage_names,
                        "stage_index": stage_index,
                        "epochs_done": epoch + 1,
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "rng": generator.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "history": _finite(history),
                        "best": _finite(best),
                        "last_good": last_good,
                    },
                    resume_path,
                )
                log("running")
                if progress:
                    tqdm.write(_summary(row))
                if callback is not None:
                    callback(row)
        finally:
            _restore_bn_momentum(model, momenta)
        start_epoch = 0

    model.eval()
    model.to(memory_format=torch.contiguous_format)
    save_checkpoint(model, final_path, {**metadata, "epochs": global_epoch, "best": best})
    log("finished")
    model.cpu()
    return TrainResult(
        model, history, output, final_path, best_path if best_path.exists() else None, log_path, best, notes
    )


def _summary(row: dict[str, Any]) -> str:
    def f(key: str) -> str:
        v = row.get(key)
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    parts = [f"{row['stage']} epoch {row['stage_epoch']} (#{row['epoch']})", f"train loss {f('train_loss')}"]
    for term in ("distill", "task"):
        if f"train_{term}" in row:
            parts.append(f"{term} {f(f'train_{term}')}")
    parts.append(f"| val loss {f('val_loss')} acc {f('val_accuracy')} AP {f('val_ap')} AUC {f('val_auc')}")
    parts.append(f"({row['time_s']:.1f} s)")
    return " ".join(parts)
