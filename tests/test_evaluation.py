"""Detection metrics on hand-computed cases, pixel AUC of placed heatmaps, and evaluate_model end to end."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda_lib import cli
from ladeda_lib.checkpoints import save_checkpoint
from ladeda_lib.data.layouts import Sample
from ladeda_lib.data.toy import ToyConfig, make_toy_dataset
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


@pytest.fixture(scope="module")
def tiny_toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    cfg = ToyConfig(train_per_class=2, val_per_class=3, test_per_class=3, partial_fraction=0.5)
    return make_toy_dataset(root, seed=1, config=cfg, progress=False)


def test_evaluate_model_per_split_and_platform(tiny_toy):
    torch.manual_seed(0)
    report = evaluate_model(TinyLaDeDa(), tiny_toy, progress=False)
    groups = report["groups"]
    assert set(groups) == {"val", "test", "test/reddit", "test/twitter", "test/facebook"}
    assert groups["val"]["n"] == 6 and groups["test"]["n"] == 18 and groups["test/reddit"]["n"] == 6
    platform_aps = [groups[f"test/{p}"]["ap"] for p in ("reddit", "twitter", "facebook")]
    assert report["mAP"] == pytest.approx(float(np.mean(platform_aps)))
    loc = report["localisation"]
    assert loc is not None and loc["n_images"] >= 1 and 0.0 <= loc["pixel_auc"] <= 1.0


def test_evaluate_cli(tiny_toy, tmp_path, capsys):
    path = save_checkpoint(TinyLaDeDa(), tmp_path / "student.pt")
    out = tmp_path / "metrics.json"
    code = cli.main(["evaluate", "--model", str(path), "--data", str(tiny_toy), "--quiet", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "test/twitter" in text and "mAP" in text
    assert out.is_file()


def test_predict_matches_the_plain_forward_and_leaves_the_model_alone():
    from ladeda_lib.data.images import normalize_uint8
    from ladeda_lib.evaluation import CPU_BATCH_LIMIT, predict
    from ladeda_lib.models import LaDeDa

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (CPU_BATCH_LIMIT + 3, 3, 64, 64), dtype=torch.uint8, generator=g)
    for model in (TinyLaDeDa(), LaDeDa(width=2)):
        model.train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        logits, patches = predict(model, images, batch_size=32, keep_patches=True)
        assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert model.conv1.weight.is_contiguous()  # the caller's layout is unchanged
        with torch.no_grad():
            ref_logit, ref_patches = model.eval().forward_with_patches(normalize_uint8(images))
        torch.testing.assert_close(logits, ref_logit.reshape(-1), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(patches, ref_patches, rtol=1e-4, atol=1e-4)
        assert patches.is_contiguous()


def test_predict_caps_cpu_batches(monkeypatch):
    from ladeda_lib import evaluation

    seen = []
    original = TinyLaDeDa.forward_with_patches

    def spy(self, x):
        seen.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(TinyLaDeDa, "forward_with_patches", spy)
    images = torch.zeros(evaluation.CPU_BATCH_LIMIT * 2 + 1, 3, 32, 32, dtype=torch.uint8)
    evaluation.predict(TinyLaDeDa(), images, batch_size=32)
    assert seen == [evaluation.CPU_BATCH_LIMIT, evaluation.CPU_BATCH_LIMIT, 1]
    seen.clear()
    evaluation.predict(TinyLaDeDa(), images, batch_size=4)
    assert seen == [4, 4, 4, 4, 1]


def test_evaluate_any_format_with_scores_and_ece(tiny_toy, tmp_path):
    from ladeda_lib.export import export_onnx
    from ladeda_lib.viz import plot_reliability

    torch.manual_seed(0)
    model = TinyLaDeDa()
    onnx = export_onnx(model, tmp_path / "Student.ONNX", with_patches=True)  # suffix case does not matter
    torch_report = evaluate_model(model, tiny_toy, progress=False, localisation=False, keep_scores=True)
    onnx_report = evaluate_model(onnx, tiny_toy, progress=False, keep_scores=True)
    for group, metrics in torch_report["groups"].items():
        assert onnx_report["groups"][group]["ap"] == pytest.approx(metrics["ap"], abs=1e-6)
        assert 0.0 <= metrics["ece"] <= 1.0
    assert onnx_report["localisation"]["n_images"] >= 1 and onnx_report["calibrated"] is False
    scores = torch_report["scores"]["test"]
    probabilities = 1 / (1 + np.exp(-np.array(scores["logits"])))
    fig = plot_reliability({"student": (scores["labels"], probabilities)})
    assert "ECE" in fig.axes[0].get_legend().get_texts()[1].get_text()
