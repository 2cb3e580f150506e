"""Detection metrics on hand-computed cases, pixel AUC of placed heatmaps, and evaluate_model end to end."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda_lib import cli
from ladeda_lib.checkpoints import save_checkpoint
from ladeda_lib.data.layouts import Sample, detect_dataset
from ladeda_lib.evaluation import binary_metrics, evaluate_model, localisation_score, pixel_auc
from ladeda_lib.geometry import upsample_patch_map
from ladeda_lib.models import PatchDetector, TinyLaDeDa


def test_binary_metrics_known_case():
    # probabilities: sigmoid(-2) < 0.5 (real, right), sigmoid(1) >= 0.5 (real, wrong), fakes both >= 0.5
    m = binary_metrics([0, 0, 1, 1], torch.tensor([-2.0, 1.0, 0.5, 3.0]))
    assert m["accuracy"] == 0.75 and m["real_acc"] == 0.5 and m["fake_acc"] == 1.0
    assert m["auc"] == pytest.approx(0.75)  # 3 of 4 (real, fake) pairs ordered correctly
    assert m["ap"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)  # ranking F, R, F, R
    assert (m["n"], m["n_real"], m["n_fake"]) == (4, 2, 2)


def test_binary_metrics_single_class_gives_nan_ap_auc():
    m = binary_metrics([1, 1], [0.3, -0.2])
    assert math.isnan(m["ap"]) and math.isnan(m["auc"]) and math.isnan(m["real_acc"])
    assert m["fake_acc"] == 0.5


def test_pixel_auc_of_a_geometry_placed_map():
    student = TinyLaDeDa().geometry()
    patch_map = torch.zeros(126, 126)
    patch_map[40:80, 40:80] = 1.0  # patches i in [40, 80) cover pixels 2i-1 .. 2i+5
    heat = upsample_patch_map(patch_map, student, 256)
    mask = torch.zeros(256, 256, dtype=torch.bool)
    mask[79:164, 79:164] = True  # pixels 2·40−1 … 2·79+5: exactly those some selected patch covers
    assert pixel_auc(heat, mask) == pytest.approx(1.0)
    assert pixel_auc(-heat, mask) == pytest.approx(0.0)
    assert math.isnan(pixel_auc(heat, torch.zeros(256, 256, dtype=torch.bool)))


class _Oracle(PatchDetector):
    """A fake 'detector' whose patch logit is the red channel at the patch centre: tests the placement path."""

    arch = "TinyLaDeDa"

    def __init__(self):
        super().__init__(pool="all")
        self.student = TinyLaDeDa()
        self.fc = torch.nn.Linear(1, 1)

    def patch_logits(self, x):
        g = self.student.geometry()
        centres = g.centres(x.shape[-1]).round().long().clamp(0, x.shape[-1] - 1)
        return x[:, :1][:, :, centres][:, :, :, centres]

    def main_path_specs(self):
        return self.student.main_path_specs()

    def config(self):
        return {}


def test_localisation_score_with_an_oracle(tmp_path):
    image = np.zeros((256, 256, 3), np.uint8)
    image[60:160, 90:200, 0] = 255
    mask = np.zeros((256, 256), np.uint8)
    mask[60:160, 90:200] = 255
    Image.fromarray(image).save(tmp_path / "fake.png")
    Image.fromarray(mask).save(tmp_path / "fake_mask.png")
    sample = Sample(tmp_path / "fake.png", 1, "test", None, tmp_path / "fake_mask.png")
    score = localisation_score(_Oracle(), [sample], progress=False)
    assert score["n_images"] == 1 and score["pixel_auc"] > 0.97


def test_evaluate_model_per_split_and_platform(toy_data):
    torch.manual_seed(0)
    report = evaluate_model(TinyLaDeDa(), toy_data, progress=False)
    groups = report["groups"]
    assert set(groups) == {"val", "test", "test/reddit", "test/twitter", "test/facebook"}
    assert groups["val"]["n"] == 6 and groups["test"]["n"] == 18 and groups["test/reddit"]["n"] == 6
    platform_aps = [groups[f"test/{p}"]["ap"] for p in ("reddit", "twitter", "facebook")]
    assert report["mAP"] == pytest.approx(float(np.mean(platform_aps)))
    loc = report["localisation"]
    spliced = [
        x
        for x in detect_dataset(toy_data).samples
        if x.mask is not None and x.label == 1 and x.split in ("val", "test")
    ]
    assert loc["n_images"] == len(spliced) >= 1
    assert loc["pixel_auc"] == pytest.approx(float(np.nanmean(loc["per_image"])))


def test_evaluate_cli(toy_data, tmp_path, capsys):
    path = save_checkpoint(TinyLaDeDa(), tmp_path / "student.pt")
    out = tmp_path / "metrics.json"
    code = cli.main(["evaluate", "--model", str(path), "--data", str(toy_data), "--quiet", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "test/twitter" in text and "mAP" in text
    assert out.is_file()


def test_evaluate_any_format_with_scores_and_ece(toy_data, student_onnx, tmp_path):
    from ladeda_lib.calibration import expected_calibration_error
    from ladeda_lib.viz import plot_reliability

    model, exported = student_onnx
    onnx = tmp_path / "Student.ONNX"  # suffix case does not matter
    onnx.write_bytes(exported.read_bytes())
    (tmp_path / "Student.ONNX.ladeda.json").write_bytes(Path(f"{exported}.ladeda.json").read_bytes())
    torch_report = evaluate_model(model, toy_data, progress=False, localisation=False, keep_scores=True)
    onnx_report = evaluate_model(onnx, toy_data, progress=False, keep_scores=True)
    for group, metrics in torch_report["groups"].items():
        assert onnx_report["groups"][group]["ap"] == pytest.approx(metrics["ap"], abs=1e-6)
    assert onnx_report["localisation"]["n_images"] >= 1 and onnx_report["calibrated"] is False
    scores = torch_report["scores"]["test"]
    probabilities = 1 / (1 + np.exp(-np.array(scores["logits"])))
    ece = expected_calibration_error(scores["labels"], probabilities)
    assert torch_report["groups"]["test"]["ece"] == pytest.approx(ece) and ece > 0
    fig = plot_reliability({"student": (scores["labels"], probabilities)})
    assert "ECE" in fig.axes[0].get_legend().get_texts()[1].get_text()
