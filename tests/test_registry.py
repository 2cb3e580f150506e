"""The weights registry: the shipped toy teacher (hash, recorded AP), published layouts, teacher resolution."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from ladeda_lib.checkpoints import detect_arch, load_checkpoint
from ladeda_lib.data.toy import GENERATOR_VERSION, ToyConfig
from ladeda_lib.models import LaDeDa, TinyLaDeDa
from ladeda_lib.registry import REGISTRY, file_sha256, get_entry, identify, shipped_teacher_fits


def test_every_entry_is_complete():
    for entry in REGISTRY.values():
        assert entry.arch in ("LaDeDa", "TinyLaDeDa") and entry.role in ("teacher", "student")
        assert entry.source in ("shipped", "published") and entry.notes
        if entry.source == "shipped":
            assert entry.sha256 and len(entry.sha256) == 64 and "ladeda train-" in entry.command
            assert "val_ap" in entry.metrics
    with pytest.raises(ValueError, match="known: toy-teacher"):
        get_entry("nope")


@pytest.mark.parametrize("name", [e.name for e in REGISTRY.values() if e.source == "shipped"])
def test_shipped_file_matches_its_hash_and_config(name):
    entry = get_entry(name)
    assert entry.path.is_file(), f"{entry.path} is missing from the package"
    assert file_sha256(entry.path) == entry.sha256
    ckpt = load_checkpoint(entry.path, expected=entry.arch)
    assert {k: ckpt.config[k] for k in entry.config} == entry.config
    # the recipe in the command is the one the checkpoint records
    config = ckpt.metadata["config"]
    assert (config["augment"]["p_rescale"] > 0) == ("--augment" in entry.command)
    assert config["epochs"] == entry.metrics["epochs"]
    if entry.role == "teacher" or "epoch" in entry.metrics:  # the val-selected epoch the file holds
        assert ckpt.metadata["epoch"] == entry.metrics["epoch"]
    if entry.role == "student":
        for flag in (
            "pool_warmup_epochs",
            "augment_warmup_epochs",
            "val_views",
            "schedule",
            "crop_size",
            "crops_per_image",
        ):
            if flag in config:  # students trained before these options existed do not record them
                default = {"pool_warmup_epochs": 0, "augment_warmup_epochs": 0, "crops_per_image": 1}.get(flag)
                given = f"--{flag.replace('_', '-')} {config[flag]}" in entry.command
                assert given or config[flag] in (default, "clean", "constant"), (name, flag, config[flag])


@pytest.mark.slow
def test_shipped_students_reproduce_their_test_ap_and_augmentation_closes_the_gap(tmp_path):
    from ladeda_lib.data import make_toy_dataset
    from ladeda_lib.evaluation import evaluate_model

    # the test split of the default toy set only: every image is rendered from its own seed
    cfg = ToyConfig(train_per_class=0, val_per_class=0)
    root = make_toy_dataset(tmp_path / "toy", seed=0, config=cfg, progress=False)
    ap = {}
    for name in ("toy-student-plain", "toy-student-augmented", "toy-student-long", "toy-student-crops"):
        entry = get_entry(name)
        report = evaluate_model(entry.path, root, splits=("test",), progress=False, localisation=False)
        ap[name] = {p: report["groups"][f"test/{p}"]["ap"] for p in ("reddit", "twitter", "facebook")}
        assert ap[name] == pytest.approx(entry.metrics["test_ap"], abs=0.01), name
    plain, augmented = ap["toy-student-plain"], ap["toy-student-augmented"]
    assert augmented["reddit"] - augmented["facebook"] <= 0.05 < plain["reddit"] - plain["facebook"]
    assert augmented["reddit"] >= plain["reddit"] - 0.01
    # the 160-epoch student: mAP >= 0.97 and gap <= 0.04 where it was measured (0.973, 0.022); each AP may move
    # by the 0.01 above on a machine that renders the toy set slightly differently
    long = ap["toy-student-long"]
    assert sum(long.values()) / 3 >= 0.96 and long["reddit"] - long["facebook"] <= 0.04, long
    # the recommended student, trained on crops: measured 0.977 and 0.025, the same 0.01 per AP
    crops = ap["toy-student-crops"]
    assert sum(crops.values()) / 3 >= 0.965 and crops["reddit"] - crops["facebook"] <= 0.045, crops


@pytest.mark.slow
@pytest.mark.parametrize("name", ["toy-teacher", "toy-teacher-robust"])
def test_shipped_teacher_reproduces_its_recorded_validation_ap(tmp_path, name):
    from ladeda_lib.data import detect_dataset, make_toy_dataset
    from ladeda_lib.data.tensors import load_tensors
    from ladeda_lib.evaluation import binary_metrics, predict

    entry = get_entry(name)
    # Only the validation split of the default toy set: every image is rendered from its own seed, so these
    # are exactly the images the teacher was validated on.
    cfg = ToyConfig(train_per_class=0, test_per_class=0, platforms=())
    root = make_toy_dataset(tmp_path / "toy", seed=0, config=cfg, progress=False)
    val = load_tensors(detect_dataset(root, warn=False).select(split="val"), progress=False)
    logits, _ = predict(load_checkpoint(entry.path).model, val.images, 16, "cpu")
    assert binary_metrics(val.labels, logits)["ap"] == pytest.approx(entry.metrics["val_ap"], abs=0.01)


def test_identify_published_layouts_by_keys_and_shapes():
    assert identify(TinyLaDeDa().state_dict()).name == "WildRF_Tiny_LaDeDa"
    with torch.device("meta"):
        published_teacher = LaDeDa(width=64).state_dict()
    assert identify(published_teacher).name == "WildRF_LaDeDa"
    compact = LaDeDa(width=16).state_dict()
    assert identify(compact) is None and detect_arch(compact) == "LaDeDa"  # other widths are still recognised
    broken = dict(TinyLaDeDa().state_dict())
    broken["fc.weight"] = torch.zeros(1, 9)
    assert identify(broken) is None


def test_shipped_teacher_only_fits_the_default_toy_data(tmp_path):
    assert shipped_teacher_fits(None)
    toy = tmp_path / "toy"
    toy.mkdir()
    manifest = {"seed": 0, "config": asdict(ToyConfig()), "generator": GENERATOR_VERSION, "images": 700}
    (toy / "toy_config.json").write_text(json.dumps(manifest))
    assert shipped_teacher_fits(toy)
    (toy / "toy_config.json").write_text(json.dumps({**manifest, "seed": 1}))
    assert not shipped_teacher_fits(toy)
    (toy / "toy_config.json").write_text(json.dumps({**manifest, "world": "scenes"}))
    assert shipped_teacher_fits(toy)
    (toy / "toy_config.json").write_text(json.dumps({**manifest, "world": "photos"}))
    assert not shipped_teacher_fits(toy)  # same seed and config, other data
    assert not shipped_teacher_fits(tmp_path)  # some other folder: no toy manifest


def test_default_teacher_prefers_published_then_shipped_for_toy_data(tmp_path, monkeypatch):
    from ladeda_lib.distill.teacher import default_teacher_path

    monkeypatch.setenv("LADEDA_HOME", str(tmp_path))
    assert default_teacher_path(None) == get_entry("toy-teacher").path
    assert default_teacher_path(tmp_path / "my_data") is None  # other data: a teacher must be trained on it
    (tmp_path / "weights").mkdir()
    torch.save(LaDeDa(width=16).state_dict(), tmp_path / "weights" / "teacher_compact.pt")
    assert default_teacher_path(tmp_path / "my_data") == tmp_path / "weights" / "teacher_compact.pt"
    torch.save(LaDeDa(width=16).state_dict(), tmp_path / "weights" / "WildRF_LaDeDa.pth")
    assert default_teacher_path(None) == tmp_path / "weights" / "WildRF_LaDeDa.pth"


def test_pipeline_distils_from_the_robust_shipped_teacher(tmp_path, monkeypatch):
    from ladeda_lib.registry import pipeline_teacher_entry

    monkeypatch.setenv("LADEDA_HOME", str(tmp_path))
    assert pipeline_teacher_entry(get_entry("toy-teacher").path) is get_entry("toy-teacher-robust")
    assert pipeline_teacher_entry(tmp_path / "weights" / "WildRF_LaDeDa.pth") is None  # published: used as it is
    monkeypatch.setitem(REGISTRY, "toy-teacher-robust", get_entry("WildRF_LaDeDa"))  # a robust file that is missing
    assert not get_entry("toy-teacher-robust").available()
    assert pipeline_teacher_entry(get_entry("toy-teacher").path) is get_entry("toy-teacher")
