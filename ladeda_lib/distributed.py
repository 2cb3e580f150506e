"""Several processes, one training run: the torchrun / DistributedDataParallel plumbing in one place.

``torchrun --nproc_per_node N -m ladeda_lib train-student ...`` starts N copies of the command, each with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its environment. :func:`distributed_session` turns that
into a process group (NCCL on CUDA, gloo on the CPU; process ``i`` uses GPU ``LOCAL_RANK``) and
everything else asks this module who it is:

* :func:`is_main` — rank 0 (or a plain single process). Only rank 0 writes files, logs and progress bars.
* :func:`barrier`, :func:`broadcast_object`, :func:`all_reduce_sum` — collectives that are no-ops in a
  single process, so every caller runs the same code with or without torchrun.
* :func:`shard_range` — the contiguous rows ``[lo, hi)`` of N that this rank handles (teacher targets).
* :func:`synchronized_batchnorm` — BatchNorm whose training statistics are taken over the *global*
  batch (all ranks), on the CPU as well as on CUDA (``torch.nn.SyncBatchNorm`` refuses CPU tensors), so
  N processes with the same global batch train the same model as one process.

Seeds per rank: every rank draws the batch plan (order, crop positions) from the same generator seeded
with ``seed`` and takes its share of each global batch; the global torch RNG of rank ``r`` is seeded with
``seed + r`` for anything drawn inside a rank. Introduced in the README section "Training at scale".
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Who this process is: ``rank`` of ``world_size`` (``local_rank`` = its GPU on this machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def context() -> DistContext:
    """The current process's place in the run (rank 0 of 1 without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistContext()


def is_main() -> bool:
    """True on rank 0 and in a plain single process: the process that writes files and prints."""
    return context().is_main


def launched_by_torchrun() -> bool:
    """True when the environment says this is one of several processes (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def distributed_session(device: str = "auto", timeout_minutes: float = 60.0) -> Iterator[DistContext]:
    """Join the process group torchrun describes (if any) for the duration of a command.

    Backend: NCCL when the command will run on CUDA (``device`` ``"auto"`` with a GPU, or ``"cuda"``),
    gloo otherwise; on CUDA each process binds to GPU ``LOCAL_RANK`` so ``"cuda"`` means its own GPU.
    Without torchrun (``WORLD_SIZE`` unset or 1) it yields a single-process context and does nothing.
    ``timeout_minutes`` bounds how long ranks wait for each other (rank 0 validates alone each epoch).
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield context()
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    cuda = torch.cuda.is_available() and str(device) in {"auto", "cuda"} or str(device).startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible: "
                "use --nproc_per_node at most the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    try:
        yield context()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if context().distributed:
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank (any picklable value; no-op in a single process)."""
    if not context().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over ranks, in place, returned (no-op in a single process)."""
    if context().distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    ctx = context()
    if not ctx.distributed:
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on at least one (used by the NaN guard)."""
    if not context().distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t).item() > 0)


def shard_range(n: int, ctx: DistContext | None = None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` for this rank: contiguous, sizes differ by at most one."""
    ctx = ctx or context()
    return n * ctx.rank // ctx.world_size, n * (ctx.rank + 1) // ctx.world_size


def seed_rank(seed: int, ctx: DistContext | None = None) -> None:
    """Seed the global torch RNG with ``seed + rank`` (per-rank randomness, reproducible per rank)."""
    ctx = ctx or context()
    torch.manual_seed(seed + ctx.rank)


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: d(sum over ranks)/d(each rank's input)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - autograd context
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


class _GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch (all ranks).

    Mean and variance are all-reduced with an autograd-aware sum (:class:`_SumOverRanks`), so the gradient
    is that of one process seeing the whole batch. Eval mode (and a single process) is plain BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and context().distributed):
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], device=x.device, dtype=torch.float32)
        count = all_reduce_sum(count)
        mean = all_reduce(xf.sum(dim=(0, 2, 3))) / count
        centred = xf - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


@contextlib.contextmanager
def synchronized_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every ``BatchNorm2d`` of ``model`` normalises with global-batch statistics.

    The modules keep their parameters, buffers and identity (only their class is switched), so optimizers
    and state_dicts are unaffected; the original classes come back on exit. In a single process it
    changes nothing.
    """
    swapped: list[tuple[nn.Module, type]] = []
    if context().distributed:
        for m in model.modules():
            if type(m) is nn.BatchNorm2d:
                swapped.append((m, type(m)))
                m.__class__ = _GlobalBatchNorm
    try:
        yield model
    finally:
        for m, cls in swapped:
            m.__class__ = cls


class _Forward(nn.Module):
    """Routes both forward methods of a patch detector through one ``forward`` (what DDP wraps)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, with_patches: bool = False):
        return self.model.forward_with_patches(x) if with_patches else self.model(x)


class DDPModel:
    """The model as a training task sees it under DDP: ``model(x)`` and ``model.forward_with_patches(x)``
    both run through :class:`~torch.nn.parallel.DistributedDataParallel`, so gradients are averaged over
    ranks in ``backward``; every other attribute is the wrapped model's."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        # BatchNorm statistics are global (synchronized_batchnorm), so buffers agree without broadcasting
        # them before every forward (DDP's default); parameters and buffers are synced once at construction.
        self.ddp = nn.parallel.DistributedDataParallel(_Forward(model), device_ids=ids, forward_sync_buffers=False)
        self.module = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.ddp(x)

    def forward_with_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ddp(x, with_patches=True)

    def __getattr__(self, name: str):
        return getattr(self.module, name)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module | DDPModel:
    """:class:`DDPModel` around ``model`` when distributed (gradients averaged over ranks), else ``model``."""
    return DDPModel(model, device) if context().distributed else model
