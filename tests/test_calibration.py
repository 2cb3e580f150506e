"""Calibration: an uncalibrated checkpoint with huge logits goes from chance to what its ranking allows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda_lib import cli
from ladeda_lib.calibration import (
    expected_calibration_error,
    fit_calibration,
    reliability_bins,
)
from ladeda_lib.contract import DecisionCalibration
from ladeda_lib.inference import InferencePipeline
from ladeda_lib.models import TinyLaDeDa
from ladeda_lib.predictors import load_predictor


def test_fit_recovers_offset_and_temperature_of_huge_logits():
    rng = np.random.default_rng(0)
    true = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true))).astype(int)
    raw = 2500 + 300 * true  # ForenSynth-like: every logit in the thousands
    cal = fit_calibration(raw, labels, {"split": "val"})
    assert cal.offset == pytest.approx(2500, abs=60) and cal.temperature == pytest.approx(300, rel=0.1)
    assert cal.fitted_on["split"] == "val" and cal.fitted_on["n"] == 4000
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration(raw, np.ones(4000))
    with pytest.raises(ValueError, match="higher than fakes"):
        fit_calibration(-raw, labels)


def test_ece_and_reliability_bins():
    labels = np.array([0, 0, 1, 1])
    assert expected_calibration_error(labels, [0.0, 0.0, 1.0, 1.0]) == 0.0
    assert expected_calibration_error(labels, [1.0, 1.0, 1.0, 1.0]) == pytest.approx(0.5)
    bins = reliability_bins(labels, [0.05, 0.15, 0.95, 0.95], bins=10)
    assert [b["count"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[9]["frequency"] == 1.0 and math.isnan(bins[5]["confidence"])


def _image(fake: bool, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96]
    base = 120 + 60 * np.sin(xx / (6 + seed % 5)) * np.cos(yy / 9)
    amplitude = 6 + 20 * fake + rng.uniform(-4, 4)  # fakes carry more high-frequency noise; the ranges touch
    pixels = base[..., None] + rng.normal(0, amplitude, (96, 96, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    for split, count in (("train", 2), ("val", 16), ("test", 16)):
        for label, name in ((0, "0_real"), (1, "1_fake")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                _image(bool(label), 1000 * label + 100 * len(split) + i).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def huge_logit_student(tmp_path_factory) -> Path:
    """A published-layout state_dict whose logits are all in the hundreds (bn1 variance divided by 300)."""
    torch.manual_seed(0)
    model = TinyLaDeDa(pool="all").eval()
    with torch.no_grad():
        model.conv1.weight.abs_()
        model.layer1[0].conv1.weight.abs_()
        model.layer1[0].conv2.weight.abs_()
        model.fc.weight.abs_()
        model.bn1.running_var.div_(300)
        model.bn1.running_mean.zero_()
        model.bn1.bias.data.fill_(0.0)
        model.fc.bias.fill_(300.0)
    path = tmp_path_factory.mktemp("weights") / "ForenSynth_like.pth"
    torch.save(model.state_dict(), path)
    return path


def test_calibrate_turns_chance_into_what_the_ranking_allows(labelled, huge_logit_student, tmp_path, capsys):
    before = InferencePipeline(huge_logit_student).predict_folder(labelled / "test", progress=False)
    logits = np.array([r["logit"] for r in before])
    labels = np.array([int("1_fake" in r["source"]) for r in before])
    assert logits.min() > 100 and not InferencePipeline(huge_logit_student).calibrated
    assert np.mean([r["is_fake"] for r in before] == labels) == 0.5  # every image "fake": chance
    # what the ranking allows: the best accuracy any single threshold reaches on the test images
    best = max(np.mean((logits >= t) == labels) for t in logits)
    assert best >= 0.85

    out = tmp_path / "calibrated.pt"
    code = cli.main(["calibrate", "--model", str(huge_logit_student), "--data", str(labelled), "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "temperature" in printed and out.is_file()
    predictor = load_predictor(out)
    assert predictor.calibration is not None and predictor.calibration.fitted_on["split"] == "val"
    assert predictor.calibration.fitted_on["n"] == 32
    pipe = InferencePipeline(out)
    after = pipe.predict_folder(labelled / "test", progress=False)
    accuracy = np.mean([r["is_fake"] == bool(y) for r, y in zip(after, labels, strict=True)])
    assert pipe.calibrated and all(r["calibrated"] for r in after)
    assert accuracy >= best - 0.1, (accuracy, best)

    metrics = tmp_path / "m.json"
    cli.main(
        [
            "evaluate",
            "--model",
            str(out),
            "--data",
            str(labelled),
            "--quiet",
            "--no-localisation",
            "--json",
            str(metrics),
        ]
    )
    text = capsys.readouterr().out
    assert "ECE" in text and "calibrated" in text
    report = json.loads(metrics.read_text())[str(out)]
    assert report["calibrated"] is True and report["groups"]["test"]["accuracy"] >= best - 0.1


def test_unsure_band_and_the_missing_record_note(huge_logit_student, labelled, capsys):
    cal = DecisionCalibration(offset=0.0, temperature=1.0)
    assert cal.apply(np.array([2.0]))[0] == 2.0
    pipe = InferencePipeline(TinyLaDeDa(), threshold=0.5, unsure=(0.0, 1.0))
    result = pipe.predict(_image(True, 1))
    assert result["verdict"] == "unsure" and result["is_fake"] is None
    with pytest.raises(ValueError, match="unsure band"):
        InferencePipeline(TinyLaDeDa(), unsure=(0.6, 0.9))
    code = cli.main(
        ["predict", str(labelled / "val" / "0_real"), "--model", str(huge_logit_student), "--unsure", "0:1"]
    )
    out, err = capsys.readouterr()
    assert code == 0 and "no calibration record" in err and "unsure" in out
    code = cli.main(["predict", str(labelled), "--model", str(huge_logit_student), "--unsure", "0.3"])
    assert code == 1 and "LOW:HIGH" in capsys.readouterr().err
