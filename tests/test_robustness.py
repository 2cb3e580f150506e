"""The robustness sweep on a tiny model and a tiny toy set: files, flips, determinism, clear errors."""

import json

import numpy as np
import pytest
import torch

from ladeda_lib import cli
from ladeda_lib.checkpoints import save_checkpoint
from ladeda_lib.data.degrade import Degradation
from ladeda_lib.models import TinyLaDeDa
from ladeda_lib.robustness import (
    Setting,
    default_sweep,
    deployment_table,
    load_scorer,
    run_sweep,
    select_test_samples,
    tta_score,
)


@pytest.fixture(scope="module")
def student_path(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(TinyLaDeDa(), tmp_path_factory.mktemp("w") / "student.pt")


SMALL = [
    Setting("clean", (), None, "clean"),
    Setting("jpeg", (Degradation("jpeg", 30),), 30.0),
    Setting("rescale", (Degradation("rescale", 0.25),), 0.25),
    Setting("blur", (Degradation("blur", 2.0),), 2.0),
    Setting("crop", (Degradation("crop"),), None, "centre crop"),
]


def test_default_sweep_covers_every_family_from_clean():
    settings = default_sweep()
    assert settings[0].family == "clean"
    families = {s.family for s in settings}
    assert families == {"clean", "jpeg", "rescale", "blur", "crop", "platform"}
    jpeg = [s.x for s in settings if s.family == "jpeg"]
    assert max(jpeg) == 95 and min(jpeg) == 30
    rescale = [s.x for s in settings if s.family == "rescale"]
    assert min(rescale) == 0.25


def test_sweep_is_deterministic_and_clean_never_flips(toy_data, student_path):
    a = run_sweep(student_path, toy_data, settings=SMALL, progress=False)
    b = run_sweep(student_path, toy_data, settings=SMALL, progress=False)
    assert a.rows == b.rows
    assert a.platform == "reddit" and a.n == 6
    assert a.rows[0]["flip_rate"] == 0.0
    # a flip rate is a share of the 6 images' decisions
    assert all(r["n"] == 6 and r["flip_rate"] * 6 == pytest.approx(round(r["flip_rate"] * 6)) for r in a.rows)


def test_cli_writes_table_json_and_plot(toy_data, student_path, tmp_path, capsys):
    out = tmp_path / "rob"
    code = cli.main(
        ["robustness", "--model", str(student_path), "--data", str(toy_data), "--output", str(out), "--quiet"]
    )
    assert code == 0
    for name in ("robustness.md", "robustness.json", "robustness.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    payload = json.loads((out / "robustness.json").read_text())
    labels = [s["label"] for s in payload["settings"]]
    assert labels[0] == "clean" and "JPEG 50" in labels and "rescale 0.5" in labels
    assert any(label.startswith("facebook-like") for label in labels)
    assert "| JPEG 50 |" in (out / "robustness.md").read_text()
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "JPEG 30" in capsys.readouterr().out


def test_bad_model_gives_a_clear_error(toy_data, tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert cli.main(["robustness", "--model", str(missing), "--data", str(toy_data), "--quiet"]) == 1
    assert "nope.pt" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_scorer(garbage)


def test_empty_split_gives_a_clear_error(toy_data, student_path):
    with pytest.raises(ValueError, match="no images in split 'test', platform 'instagram'"):
        run_sweep(student_path, toy_data, platform="instagram", settings=SMALL, progress=False)
    with pytest.raises(ValueError, match="split 'holdout'"):
        select_test_samples(toy_data, split="holdout")


def test_tta_averages_copies_and_one_copy_is_the_plain_score(toy_data, student_path):
    score, _ = load_scorer(student_path)
    from ladeda_lib.data.tensors import load_tensors

    samples, _, _ = select_test_samples(toy_data)
    images = load_tensors(samples, progress=False).images
    plain = score(images)
    np.testing.assert_array_equal(tta_score(score, images, 1), plain)
    three = tta_score(score, images, 3)
    assert three.shape == plain.shape and not np.allclose(three, plain)
    with pytest.raises(ValueError, match="--tta"):
        tta_score(score, images, 0)


def test_deployment_table_has_jpeg50_and_rescale05(toy_data, student_path):
    result, table = deployment_table(student_path, toy_data)
    assert [r["label"] for r in result.rows] == ["clean", "JPEG 50", "rescale 0.5"]
    assert "| JPEG 50 |" in table and "| rescale 0.5 |" in table
