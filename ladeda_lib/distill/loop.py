"""The training loop every command shares: stages, checkpoints, resume, NaN guard, JSON log, torchrun.

One loop serves the teacher, the single-stage student and both stages of the two-stage student. What
differs — how a batch is fetched, what the loss is, how validation scores — comes from a :class:`TrainTask`;
what is trained with which optimizer comes from a list of :class:`Stage`; how the loop runs (batch size,
seed, device, resume, …) from :class:`FitOptions`. Read it top to bottom: :func:`fit` sets up and walks
the stages and epochs; :func:`run_epoch` is one epoch of training; :class:`RunFiles` writes what a run
leaves on disk and reads ``resume.pt`` back.

* **Stages** — each stage names the submodules it keeps frozen (no gradient, and *eval mode*, so a frozen
  BatchNorm keeps its running statistics), its learning rate and its scheduler (``"plateau"`` =
  ReduceLROnPlateau on the validation loss, ``"cosine"`` = CosineAnnealingLR over the stage,
  ``"warmup_cosine"`` = a linear warm-up over ``warmup_epochs``, then a cosine decay to zero, set at every
  optimizer step by :func:`warmup_cosine_lr`). Adam always.
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
* **Several processes** (``torchrun``, :mod:`ladeda_lib.distributed`) — every rank draws the same batch
  plan and trains on its contiguous share of each global batch, weighted so that DistributedDataParallel's
  gradient average equals the gradient of the whole batch; BatchNorm uses global-batch statistics. So
  ``batch_size`` is the *global* batch and N processes train the same model as one, up to float rounding.
  Rank 0 validates (the others receive its numbers), writes every file and shows the progress bars.

Introduced in notebook 03.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ladeda_lib import distributed
from ladeda_lib.checkpoints import save_checkpoint
from ladeda_lib.data.tensors import release_pages
from ladeda_lib.distill.runfiles import RunFiles, RunState
from ladeda_lib.models import PatchDetector


@dataclass
class Stage:
    """One phase of training: which submodules stay frozen, Adam's learning rate, the scheduler, the epochs."""

    name: str
    epochs: int
    lr: float
    frozen: tuple[str, ...] = ()
    scheduler: str | None = None  # None, "plateau", "cosine" or "warmup_cosine"
    warmup_epochs: float = 0.0  # "warmup_cosine" only: epochs of linear warm-up (fractions allowed)
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

    # Optional: ``begin_epoch(epoch)`` (epoch of the stage, from 0) is called before each epoch's ``plan``.


class _EpochBatches(Dataset):
    def __init__(self, plan: list[Any], fetch: Callable[[Any], dict[str, torch.Tensor]]) -> None:
        self.plan, self.fetch = plan, fetch

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.fetch(self.plan[i])


@dataclass
class FitOptions:
    """How :func:`fit` runs (what is trained, and on what, comes from its other arguments).

    ``bn_momentum`` is used by *trainable* BatchNorm layers while training (the published stem uses 0.001,
    meant for hundreds of thousands of steps: in a short run its running statistics would barely leave
    their initial values); the model's own values are restored afterwards, None keeps them.
    ``channels_last`` trains in the channels-last memory layout (about 2× faster for Tiny-LaDeDa on CPU;
    the values are the same up to float rounding). ``batch_size`` is the global batch over all ranks.
    """

    name: str = "student"  # file stem of the best/final checkpoints (student_best.pt, student_final.pt)
    batch_size: int = 32
    seed: int = 0
    resume: bool = False
    device: torch.device | str = "cpu"
    num_workers: int | None = None  # DataLoader workers; None = 0 on CPU, 2 on CUDA
    amp: bool | None = None  # float16 autocast + GradScaler; None = on for CUDA only
    bn_momentum: float | None = 0.1
    channels_last: bool = True
    progress: bool = True


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


@dataclass
class Finished:
    """What a finishing hook did to a trained model (see :func:`fit`'s ``finish``).

    ``metadata`` goes into that model's checkpoint; ``log`` (entries of ``log.json``) and ``note`` (one line
    for the run's notes) are used for the final model only.
    """

    metadata: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


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


@contextlib.contextmanager
def bn_momentum(model: nn.Module, frozen: tuple[str, ...], momentum: float | None) -> Iterator[None]:
    """Inside the block the *trainable* BatchNorm layers use ``momentum``; the originals come back after."""
    if momentum is None:
        yield
        return
    frozen_modules = {id(m) for name in frozen for m in model.get_submodule(name).modules()}
    original = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen_modules:
            original[name] = m.momentum
            m.momentum = momentum
    try:
        yield
    finally:
        for name, value in original.items():
            model.get_submodule(name).momentum = value


def warmup_cosine_lr(stage: Stage, epoch: int, steps_per_epoch: int, step: int) -> float:
    """The learning rate of optimizer step ``step`` of epoch ``epoch`` (both from 0) under ``"warmup_cosine"``.

    With ``t = epoch + step / steps_per_epoch`` epochs done before the step and ``w = stage.warmup_epochs``:
    ``lr · (t + 1/steps_per_epoch) / w`` while that is below ``lr`` (a linear ramp whose first step is not
    zero), then ``lr · ½(1 + cos(π (t − w) / (epochs − w)))`` (down to zero at the end of the stage). A pure
    function of the position, so a resumed run sets exactly the rates an uninterrupted one would.
    """
    steps = max(1, int(steps_per_epoch))
    t = epoch + step / steps
    w = max(0.0, float(stage.warmup_epochs))
    if w > 0 and t + 1 / steps < w:
        return stage.lr * (t + 1 / steps) / w
    span = max(stage.epochs - w, 1e-9)
    progress = min(1.0, max(0.0, (t - w) / span))
    return stage.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _make_scheduler(stage: Stage, optimizer: torch.optim.Optimizer):
    if stage.scheduler is None or stage.scheduler == "warmup_cosine":  # the latter is set per step in run_epoch
        return None
    if stage.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=stage.plateau_factor, patience=stage.plateau_patience
        )
    if stage.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, stage.epochs))
    raise ValueError(f"unknown scheduler {stage.scheduler!r}; expected None, 'plateau', 'cosine' or 'warmup_cosine'")


def _local_part(spec: Any, lo: int, hi: int) -> Any:
    """Rows ``[lo, hi)`` of a batch-plan entry (a tensor, or a tuple/list of tensors of equal length)."""
    if isinstance(spec, torch.Tensor):
        return spec[lo:hi]
    if isinstance(spec, tuple | list):
        return type(spec)(_local_part(s, lo, hi) for s in spec)
    raise TypeError(f"a batch plan entry must be a tensor or a tuple of tensors to split across ranks, got {spec!r}")


def _plan_size(spec: Any) -> int:
    return int(spec.shape[0]) if isinstance(spec, torch.Tensor) else _plan_size(spec[0])


def _shard_plan(plan: list[Any]) -> tuple[list[Any], list[float]]:
    """This rank's share of every global batch, and the loss weight that makes DDP's average exact.

    DDP averages gradients over W ranks; a rank holding n of a global batch of N weights its mean loss by
    n·W/N, so the average is the gradient of the mean over all N. Batches smaller than W are dropped (every
    rank must take part in every step).
    """
    ctx = distributed.context()
    if not ctx.distributed:
        return plan, [1.0] * len(plan)
    local, weights = [], []
    for spec in plan:
        n = _plan_size(spec)
        if n < ctx.world_size:
            continue
        lo, hi = distributed.shard_range(n, ctx)
        local.append(_local_part(spec, lo, hi))
        weights.append((hi - lo) * ctx.world_size / n)
    return local, weights


def run_epoch(
    net: Any,
    task: TrainTask,
    optimizer: torch.optim.Optimizer,
    plan: list[Any],
    opts: FitOptions,
    scaler: torch.amp.GradScaler | None = None,
    desc: str = "epoch",
    on_diverged: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    lr_at: Callable[[int], float] | None = None,
) -> dict[str, float]:
    """One epoch of training over the batches of ``plan``; returns the mean of every loss term over images.

    ``net`` is the model in training mode (or its DDP wrapper). For each batch: fetch it (DataLoader
    workers on CUDA), move it to the device, compute the loss terms, stop on a non-finite loss (calls
    ``on_diverged(batch_index, terms)``, which raises), then zero_grad → backward → step (with
    ``lr_at(batch_index)`` as every parameter group's learning rate when given). The sums are totalled over
    ranks.
    """
    ctx = distributed.context()
    device = torch.device(opts.device)
    use_amp = scaler is not None
    layout = torch.channels_last if opts.channels_last else torch.contiguous_format
    workers = (2 if device.type == "cuda" else 0) if opts.num_workers is None else opts.num_workers
    local, weights = _shard_plan(plan)
    loader = DataLoader(
        _EpochBatches(local, task.fetch),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    sums: dict[str, float] = {}
    seen = 0
    bar = tqdm(loader, desc=desc, unit="batch", disable=not (opts.progress and ctx.is_main), leave=False)
    for batch_index, batch in enumerate(bar):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if opts.channels_last:
            batch = {k: v.contiguous(memory_format=layout) if v.dim() == 4 else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            terms = task.loss(net, batch)
        total = terms["loss"]
        if distributed.any_rank(not bool(torch.isfinite(total.detach()).all()), device) and on_diverged:
            on_diverged(batch_index, terms)
        optimizer.zero_grad(set_to_none=True)
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(batch_index)
        weighted = total * weights[batch_index] if ctx.distributed else total
        if scaler is not None:
            scaler.scale(weighted).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            weighted.backward()
            optimizer.step()
        n = next(iter(batch.values())).shape[0]
        seen += n
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
        release_pages()  # rows read from a memory-mapped cache leave resident memory
        if opts.progress:
            bar.set_postfix(loss=f"{float(total.detach()):.4f}")
    bar.close()
    keys = sorted(sums)
    totals = distributed.all_reduce_sum(torch.tensor([float(seen)] + [sums[k] for k in keys], dtype=torch.float64))
    return {k: float(v) / max(1.0, float(totals[0])) for k, v in zip(keys, totals[1:].tolist(), strict=True)}


def _validate(task: TrainTask, model: PatchDetector) -> dict[str, float]:
    """Rank 0 validates; every rank gets its numbers (the scheduler and the best epoch must agree)."""
    val = task.validate(model) if distributed.is_main() else None
    return distributed.broadcast_object(val)


def fit(
    model: PatchDetector,
    stages: list[Stage],
    task: TrainTask,
    output: str | Path,
    options: FitOptions | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    finish: Callable[[PatchDetector, str], Finished] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train ``model`` through ``stages`` on ``task``, writing checkpoints, ``log.json`` and ``resume.pt``.

    Args:
        model: the network to train (moved to the device; returned on CPU in eval mode).
        stages: the phases, in order (one for single-stage training, two for the two-stage fine-tune).
        task: batches, loss and validation (see :class:`TrainTask`).
        output: run folder.
        options: :class:`FitOptions`; keyword ``overrides`` replace single fields
            (``fit(..., batch_size=16, seed=1)``).
        metadata: stored in every checkpoint and the log.
        callback: called with each epoch's history row (live plots in notebooks; raising stops the run).
        finish: a finishing hook ``finish(model, which) -> Finished``, called after the last epoch on the final
            model (``which="final"``) and on the best epoch's weights (``"best"``) before each is written: it
            may change the weights (the students' decision offset, :mod:`.offset`). Checkpoints and ``log.json``
            are then written once, with what it returns.

    Raises:
        TrainingDiverged: on a NaN/inf loss (the last good checkpoint stays on disk).
    """
    opts = replace(options or FitOptions(), **overrides)
    ctx = distributed.context()
    device = torch.device(opts.device)
    opts = replace(opts, device=device, progress=opts.progress and ctx.is_main)
    use_amp = (device.type == "cuda") if opts.amp is None else bool(opts.amp and device.type == "cuda")
    files = RunFiles(output, opts.name, stages, dict(metadata or {}))
    model.to(device)
    model.to(memory_format=torch.channels_last if opts.channels_last else torch.contiguous_format)
    generator = torch.Generator().manual_seed(opts.seed)  # the batch plan: the same on every rank
    if ctx.distributed:
        distributed.seed_rank(opts.seed, ctx)
    state = files.load_resume(model, generator, opts.progress) if opts.resume else RunState()
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    with distributed.synchronized_batchnorm(model):
        for stage_index, stage in enumerate(stages):
            if stage_index < state.stage_index:
                continue
            trainable = set_frozen(model, stage.frozen)
            if not trainable:
                raise ValueError(f"stage {stage.name!r} freezes every parameter; nothing to train")
            optimizer = torch.optim.Adam(trainable, lr=stage.lr, weight_decay=stage.weight_decay)
            scheduler = _make_scheduler(stage, optimizer)
            first_epoch = 0
            if stage_index == state.stage_index and state.epochs_done > 0:  # resuming inside this stage
                optimizer.load_state_dict(state.optimizer)
                if scheduler is not None and state.scheduler is not None:
                    scheduler.load_state_dict(state.scheduler)
                first_epoch = state.epochs_done
            net = distributed.wrap_ddp(model, device)
            with bn_momentum(model, stage.frozen, opts.bn_momentum):
                for epoch in range(first_epoch, stage.epochs):
                    t0 = time.perf_counter()
                    train_mode(model, stage.frozen)
                    if hasattr(task, "begin_epoch"):
                        task.begin_epoch(epoch)
                    plan = task.plan(generator, opts.batch_size)
                    desc = f"{stage.name} epoch {epoch + 1}/{stage.epochs}"
                    diverged = functools.partial(files.diverged, state, stage.name, epoch)
                    lr_at = None
                    if stage.scheduler == "warmup_cosine":
                        lr_at = functools.partial(warmup_cosine_lr, stage, epoch, len(_shard_plan(plan)[0]))
                    train = run_epoch(net, task, optimizer, plan, opts, scaler, desc, diverged, lr_at)
                    train_s = time.perf_counter() - t0
                    val = _validate(task, model)
                    lr = optimizer.param_groups[0]["lr"]
                    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        scheduler.step(val["loss"])
                    elif scheduler is not None:
                        scheduler.step()
                    row = {"epoch": len(state.history) + 1, "stage": stage.name, "stage_epoch": epoch + 1, "lr": lr}
                    row.update({f"train_{k}": v for k, v in train.items()})
                    row.update({f"val_{k}": v for k, v in val.items()})
                    row["train_time_s"] = train_s  # the training batches alone (no validation)
                    row["time_s"] = time.perf_counter() - t0
                    state.history.append(row)
                    files.save_epoch(model, state, row, stage, stage_index, optimizer, scheduler, generator, opts.seed)
                    if opts.progress:
                        tqdm.write(_summary(row))
                    if callback is not None:
                        callback(row)
            state.epochs_done = 0

    model.eval()
    model.to(memory_format=torch.contiguous_format)
    final_meta = {**files.metadata, "epochs": len(state.history), "best": state.best}
    extra: dict[str, Any] = {}
    if finish is not None:
        done = finish(model, "final")
        final_meta.update(done.metadata)
        extra = done.log
        if done.note:
            state.notes.append(done.note)
        best = files.best_weights(state)
        if best is not None:
            weights, best_meta = best
            best_model = copy.deepcopy(model)
            best_model.load_state_dict(weights)
            save_checkpoint(best_model, files.best_path, {**best_meta, **finish(best_model, "best").metadata})
    save_checkpoint(model, files.final_path, final_meta)
    files.log(state, "finished", extra=extra)
    model.cpu()
    best_path = files.best_path if state.best is not None else None
    return TrainResult(
        model, state.history, files.output, files.final_path, best_path, files.log_path, state.best, state.notes
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
