"""Checkpoints: atomic saves, published state_dicts, clear errors, no unpickling of code."""

import os

import pytest
import torch

from ladeda_lib.checkpoints import (
    CheckpointError,
    atomic_torch_save,
    detect_arch,
    load_checkpoint,
    save_checkpoint,
)
from ladeda_lib.models import LaDeDa, TinyLaDeDa


def test_round_trip_with_metadata(tmp_path):
    torch.manual_seed(0)
    model = TinyLaDeDa(preprocess="x_grad", pool=0.25)
    path = save_checkpoint(model, tmp_path / "s.pt", {"epochs": 3, "data": tmp_path, "lr": 1e-3})
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "TinyLaDeDa" and not ckpt.published
    assert ckpt.config == {"preprocess": "x_grad", "pool": 0.25}
    assert ckpt.metadata == {"epochs": 3, "data": str(tmp_path), "lr": 1e-3}
    assert not ckpt.model.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model.eval()(x))


def test_published_bare_state_dicts_load_strictly(tmp_path):
    teacher, student = LaDeDa(width=64), TinyLaDeDa()
    torch.save(teacher.state_dict(), tmp_path / "WildRF_LaDeDa.pth")
    torch.save(student.state_dict(), tmp_path / "WildRF_Tiny_LaDeDa.pth")
    t = load_checkpoint(tmp_path / "WildRF_LaDeDa.pth", expected="LaDeDa")
    s = load_checkpoint(tmp_path / "WildRF_Tiny_LaDeDa.pth")
    assert t.published and t.arch == "LaDeDa" and t.config["width"] == 64
    assert s.published and s.arch == "TinyLaDeDa"
    # the published models pool with the mean of the patch logits
    assert t.model.pool.k is None and s.model.pool.k is None
    for k, v in student.state_dict().items():
        assert torch.equal(s.model.state_dict()[k], v)


def test_compact_teacher_width_is_recognised(tmp_path):
    torch.save(LaDeDa(width=8).state_dict(), tmp_path / "t.pth")
    assert load_checkpoint(tmp_path / "t.pth").config["width"] == 8


def test_wrong_model_gives_a_clear_error(tmp_path):
    torch.save(LaDeDa(width=4).state_dict(), tmp_path / "teacher.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "teacher.pth", expected="TinyLaDeDa")
    text = str(err.value)
    assert "This is a LaDeDa teacher checkpoint, not a Tiny-LaDeDa student" in text
    assert "Unexpected keys" in text and "layer1.0.conv3.weight" in text


def test_missing_keys_are_named(tmp_path):
    sd = TinyLaDeDa().state_dict()
    del sd["fc.bias"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"(?s)Missing keys \(1\): fc.bias.*Unexpected keys \(1\): extra.weight"):
        load_checkpoint(tmp_path / "broken.pth", expected="TinyLaDeDa")


def test_shape_mismatch_is_named(tmp_path):
    sd = TinyLaDeDa().state_dict()
    sd["fc.weight"] = torch.zeros(1, 16)
    torch.save(sd, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="fc.weight"):
        load_checkpoint(tmp_path / "wide.pth")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": TinyLaDeDa().state_dict(), "hook": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_missing_file_and_junk(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="neither a LaDeDa teacher nor a Tiny-LaDeDa student"):
        load_checkpoint(tmp_path / "other.pt")


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"x": torch.ones(2)}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"x": Unsaveable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_detect_arch():
    assert detect_arch(LaDeDa(width=4).state_dict()) == "LaDeDa"
    assert detect_arch(TinyLaDeDa().state_dict()) == "TinyLaDeDa"
    assert detect_arch({"weight": torch.zeros(1)}) is None
