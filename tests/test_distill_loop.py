"""The training loop under torchrun semantics: 2 gloo processes equal 1 process; only rank 0 writes or prints.

Tiny sizes: Tiny-LaDeDa (3 BatchNorm layers, so global-batch statistics matter) trained with the teacher's task
(random 32×32 grid crops: a batch plan of tuples) on 12 images of 64×64, global batch 8 (split 4 + 4, the last
batch 2 + 2), 2 epochs, Adam at 1e-2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ladeda_lib.data.layouts import DatasetIndex
from ladeda_lib.data.tensors import ImageTensors
from ladeda_lib.distill.data import TrainingData
from ladeda_lib.distill.loop import FitOptions, Stage, fit
from ladeda_lib.distill.teacher import TeacherTask
from ladeda_lib.models import TinyLaDeDa

#: Weights of 2 processes vs 1 (same global batch): equal up to float32 summation order, amplified by 4 Adam
#: steps (seen: at most 4e-7, against weight changes of 1e-2 to 1).
TOLERANCE = 1e-5


def _tensors(n: int, seed: int) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 3, 64, 64, generator=g) * 200 + labels[:, None, None, None] * 40
    return ImageTensors(images.to(torch.uint8), labels, [])


def _train(output: Path, progress: bool) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    data = TrainingData(DatasetIndex(output, "folder", []), _tensors(12, 0), _tensors(6, 1))
    torch.manual_seed(0)
    model = TinyLaDeDa()
    task = TeacherTask(data, crop_size=32, crops_per_image=1, stride=2, eval_batch_size=8)
    opts = FitOptions(name="teacher", batch_size=8, seed=0, progress=progress)
    result = fit(model, [Stage("teacher", 2, 1e-2)], task, output, opts)
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def _worker(rank: int, world: int, root: str) -> None:
    root_path = Path(root)
    sys.stdout = open(root_path / f"stdout_{rank}.txt", "w")  # noqa: SIM115 - closed when the process ends
    sys.stderr = open(root_path / f"stderr_{rank}.txt", "w")  # noqa: SIM115
    dist.init_process_group("gloo", init_method=f"file://{root_path / 'rendezvous'}", rank=rank, world_size=world)
    try:
        # each rank gets its own output folder, so a write by rank 1 would show up in rank1/
        state = _train(root_path / f"rank{rank}", progress=True)
        torch.save(state, root_path / f"weights_{rank}.pt")
    finally:
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()


@pytest.mark.slow  # two processes and a gloo rendezvous: about 24 s on 2 cores
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_gloo_processes_match_one_and_only_rank_0_writes(tmp_path):
    single = _train(tmp_path / "single", progress=False)
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    double = torch.load(tmp_path / "weights_0.pt", weights_only=True)
    other = torch.load(tmp_path / "weights_1.pt", weights_only=True)
    for key, value in single.items():
        assert torch.equal(double[key], other[key]), f"ranks disagree on {key}"
        if value.is_floating_point():
            torch.testing.assert_close(double[key], value, rtol=TOLERANCE, atol=TOLERANCE, msg=key)
        else:
            assert torch.equal(double[key], value), key  # num_batches_tracked: same number of steps
    # the runs trained: weights moved away from the initialisation
    torch.manual_seed(0)
    assert not torch.allclose(TinyLaDeDa().state_dict()["fc.weight"], single["fc.weight"])

    # rank 0 wrote the run's files and showed progress; rank 1 wrote and printed nothing
    written = {p.name for p in (tmp_path / "rank0").iterdir()}
    assert {"epoch_001.pt", "epoch_002.pt", "teacher_best.pt", "teacher_final.pt", "log.json", "resume.pt"} <= written
    assert not (tmp_path / "rank1").exists()
    assert "teacher epoch 2" in (tmp_path / "stdout_0.txt").read_text() + (tmp_path / "stderr_0.txt").read_text()
    assert (tmp_path / "stdout_1.txt").read_text() == "" and (tmp_path / "stderr_1.txt").read_text() == ""
    log = json.loads((tmp_path / "rank0" / "log.json").read_text())
    assert log["status"] == "finished" and [row["epoch"] for row in log["history"]] == [1, 2]
    # each row times the training batches alone, inside the whole epoch (validation included)
    assert all(0 < row["train_time_s"] <= row["time_s"] for row in log["history"])
