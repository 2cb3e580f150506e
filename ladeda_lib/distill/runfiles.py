"""What a training run leaves on disk, and reads back to resume: ``log.json``, checkpoints, ``resume.pt``.

:class:`RunFiles` writes, under the run folder (rank 0 only, atomically): ``<prefix>epoch_NNN.pt`` after every
epoch, ``<name>_best.pt`` when validation improved (highest AP, ties to the lower loss), ``log.json`` and
``resume.pt`` (model, optimizer, scheduler, RNG state, history — plain tensors and numbers, loadable with
``weights_only=True``). :class:`RunState` is where a run stands. Used by :func:`ladeda_lib.distill.loop.fit`.
Introduced in notebook 03.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ladeda_lib import distributed
from ladeda_lib.checkpoints import atomic_torch_save, save_checkpoint
from ladeda_lib.jsonio import json_safe

if TYPE_CHECKING:
    from ladeda_lib.distill.loop import Stage

RESUME_FILE = "resume.pt"
LOG_FILE = "log.json"
RESUME_VERSION = 1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch, the batch and the last good checkpoint."""


def write_log(path: Path, payload: dict[str, Any]) -> None:
    """Write the JSON log atomically (NaN/inf become null, so every JSON reader accepts it); rank 0 only."""
    if not distributed.is_main():
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(payload), indent=2) + "\n")
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


@dataclass
class RunState:
    """Where a run stands: finished epochs, the best one, notes, and (after a resume) the saved optimizer."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    last_good: str | None = None
    stage_index: int = 0  # stage to continue in
    epochs_done: int = 0  # epochs already done in that stage
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    best_weights: dict[str, torch.Tensor] | None = None  # a CPU copy of the best epoch's weights (this process)
    best_metadata: dict[str, Any] | None = None


class RunFiles:
    """Everything a run writes under ``output`` (rank 0 only) and reads back on resume."""

    def __init__(self, output: str | Path, name: str, stages: list[Stage], metadata: dict[str, Any]) -> None:
        self.output = Path(output)
        self.name, self.stages, self.metadata = name, stages, metadata
        self.log_path, self.resume_path = self.output / LOG_FILE, self.output / RESUME_FILE
        self.final_path, self.best_path = self.output / f"{name}_final.pt", self.output / f"{name}_best.pt"
        if distributed.is_main():
            self.output.mkdir(parents=True, exist_ok=True)

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def log(self, state: RunState, status: str, message: str = "", extra: dict[str, Any] | None = None) -> None:
        """Write ``log.json``: the run's stages, metadata, history, best epoch and notes (plus ``extra`` entries)."""
        payload = {
            "name": self.name,
            "status": status,
            "message": message,
            "stages": [s.__dict__ for s in self.stages],
            "metadata": self.metadata,
            "history": state.history,
            "best": state.best,
            "notes": state.notes,
            **(extra or {}),
        }
        write_log(self.log_path, payload)

    def best_weights(self, state: RunState) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The best epoch's weights and checkpoint metadata: kept in memory, else (a resumed run that has not
        improved since) read back from ``<name>_best.pt``; None when no epoch finished."""
        if state.best_weights is not None:
            return state.best_weights, state.best_metadata or {}
        if state.best is None or not self.best_path.is_file():
            return None
        saved = torch.load(self.best_path, map_location="cpu", weights_only=True)
        return saved["state_dict"], saved.get("metadata", {})

    def load_resume(self, model: nn.Module, generator: torch.Generator, progress: bool) -> RunState:
        """Restore model, batch-order generator and RNG from ``resume.pt`` (a fresh state when absent)."""
        if not self.resume_path.is_file():
            return RunState(notes=[f"--resume: no {self.resume_path} yet, starting from the beginning"])
        saved = torch.load(self.resume_path, map_location="cpu", weights_only=True)
        if saved.get("stages") != self.stage_names:
            raise ValueError(
                f"{self.resume_path} belongs to a run with stages {saved.get('stages')}, not {self.stage_names}; "
                "use another --output or drop --resume"
            )
        model.load_state_dict(saved["model"])  # copies values into the model's own layout
        generator.set_state(saved["rng"])
        ctx = distributed.context()
        per_rank = saved.get("torch_rng_ranks")
        if per_rank is not None and len(per_rank) == ctx.world_size:
            torch.set_rng_state(per_rank[ctx.rank])
        elif ctx.distributed:
            distributed.seed_rank(int(saved.get("seed", 0)) + len(saved["history"]) * 1000, ctx)
        else:
            torch.set_rng_state(saved["torch_rng"])
        state = RunState(
            history=list(saved["history"]),
            best=saved["best"],
            last_good=saved.get("last_good"),
            stage_index=saved["stage_index"],
            epochs_done=saved["epochs_done"],
            optimizer=saved["optimizer"],
            scheduler=saved.get("scheduler"),
        )
        state.notes.append(f"resumed from {self.resume_path} after {len(state.history)} epochs")
        if progress:
            tqdm.write(f"resuming {self.name} from {self.resume_path}: {len(state.history)} epochs done")
        return state

    def diverged(
        self, state: RunState, stage: str, epoch: int, batch_index: int, terms: dict[str, torch.Tensor]
    ) -> None:
        """Log the non-finite loss and raise :class:`TrainingDiverged` naming the last good checkpoint."""
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        where = state.last_good or "none yet (no epoch finished; nothing was written)"
        message = (
            f"training stopped: the loss became non-finite in stage {stage!r}, epoch {epoch + 1}, batch "
            f"{batch_index + 1} ({values}). Last good checkpoint: {where}. "
            "Lower the learning rate or check the data; --resume restarts from the last good state."
        )
        self.log(state, "diverged", message)
        raise TrainingDiverged(message)

    def save_epoch(
        self,
        model: nn.Module,
        state: RunState,
        row: dict[str, Any],
        stage: Stage,
        stage_index: int,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator,
        seed: int,
    ) -> None:
        """Epoch checkpoint, best checkpoint if it improved, ``resume.pt`` and the log (collective call)."""
        epoch_meta = {**self.metadata, "stage": stage.name, "epoch": row["epoch"], "metrics": row}
        epoch_path = self.output / f"{stage.checkpoint_prefix}epoch_{row['epoch']:03d}.pt"
        save_checkpoint(model, epoch_path, epoch_meta)
        if _better(row, state.best):
            state.best = row
            state.best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            state.best_metadata = epoch_meta
            save_checkpoint(model, self.best_path, epoch_meta)
        state.last_good = str(epoch_path)
        rng_ranks = distributed.gather_objects(torch.get_rng_state())
        if distributed.is_main():
            resume = {
                "version": RESUME_VERSION,
                "stages": self.stage_names,
                "stage_index": stage_index,
                "epochs_done": row["stage_epoch"],
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "torch_rng_ranks": rng_ranks,
                "seed": seed,
                "history": json_safe(state.history),
                "best": json_safe(state.best),
                "last_good": state.last_good,
            }
            atomic_torch_save(resume, self.resume_path)
        self.log(state, "running")
