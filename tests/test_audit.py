"""Tests of ladeda_lib.audit and ``ladeda audit``: report contents, shortcut transforms, errors, bundled photographs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from sklearn.metrics import average_precision_score

from ladeda_lib.audit import (
    TRANSFORMS,
    AuditReport,
    audit_photographs,
    bundled_photographs,
    exif_rotated,
    resolve_model,
)
from ladeda_lib.checkpoints import save_checkpoint
from ladeda_lib.cli import main
from ladeda_lib.data.degrade import jpeg, to_input_size
from ladeda_lib.data.images import load_image
from ladeda_lib.inference import InferencePipeline
from ladeda_lib.models import TinyLaDeDa
from ladeda_lib.registry import get_entry


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(TinyLaDeDa().eval(), tmp_path_factory.mktemp("model") / "tiny.pt")


def _photo_crops() -> dict[str, np.ndarray]:
    """Three small crops of real photographs (uint8 HWC), of different sizes and aspect ratios."""
    return {
        "astronaut": skdata.astronaut()[100:196, 150:278],
        "coffee": skdata.coffee()[50:170, 200:290],
        "chelsea": skdata.chelsea()[60:140, 100:220],
    }


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "real"
    folder.mkdir()
    for name, array in _photo_crops().items():
        Image.fromarray(array).save(folder / f"{name}.png")
    return folder


def test_report_scores_the_original_as_the_pipeline_does_and_writes_md_json_png(checkpoint, photos, tmp_path):
    report = audit_photographs(checkpoint, photos, progress=False)
    pipe = InferencePipeline(checkpoint)
    assert [p["file"] for p in report.photos] == ["astronaut.png", "chelsea.png", "coffee.png"]
    for photo in report.photos:
        direct = pipe.predict(photos / photo["file"])
        assert photo["original"]["fake_probability"] == pytest.approx(direct["fake_probability"], abs=1e-6)
        assert photo["original"]["verdict"] == direct["verdict"]
        assert list(photo["transforms"]) == list(TRANSFORMS)
    s = report.summary()
    assert s["false_positive_rate"] == sum(p["original"]["verdict"] == "fake" for p in report.photos) / 3
    assert s["unsure_rate"] is None  # no band asked for

    paths = report.write(tmp_path / "out")
    assert {p.name for p in paths.values()} == {"audit.md", "audit.json", "audit.png"}
    stored = json.loads(paths["json"].read_text())
    assert {"model", "threshold", "unsure", "calibrated", "photos", "unreadable", "summary"} <= set(stored)
    assert set(stored["summary"]) >= {"n_real", "false_positive_rate", "unsure_rate", "transforms", "exif_honoured"}
    for row in stored["summary"]["transforms"].values():
        assert set(row) >= {"decision_changed", "turned_fake", "median_abs_delta", "max_abs_delta"}
    text = paths["md"].read_text()
    assert "False-positive rate" in text and all(f"| {name} |" in text for name in TRANSFORMS)
    with Image.open(paths["png"]) as figure:
        assert figure.format == "PNG" and figure.width > 300


def test_threshold_and_unsure_band_change_the_rates(checkpoint, photos):
    everything_fake = audit_photographs(checkpoint, photos, threshold=0.0, progress=False).summary()
    assert everything_fake["false_positive_rate"] == 1.0
    all_unsure = audit_photographs(checkpoint, photos, unsure=(0.0, 1.0), progress=False).summary()
    assert all_unsure["unsure_rate"] == 1.0 and all_unsure["false_positive_rate"] == 0.0


def test_a_transform_score_is_the_transform_of_the_same_decoded_image(checkpoint, photos):
    report = audit_photographs(checkpoint, photos, progress=False)
    image = torch.from_numpy(np.array(load_image(photos / "coffee.png"))).permute(2, 0, 1).contiguous()
    expected = InferencePipeline(checkpoint).predict(to_input_size(jpeg(image, 75)))["fake_probability"]
    coffee = next(p for p in report.photos if p["file"] == "coffee.png")
    assert coffee["transforms"]["JPEG 75"]["fake_probability"] == pytest.approx(expected, abs=1e-6)


def test_transforms_change_what_they_should_and_sizes_follow():
    image = torch.from_numpy(_photo_crops()["coffee"]).permute(2, 0, 1).contiguous()  # (3, 120, 90)
    for name in ("JPEG 95", "JPEG 75", "JPEG re-save"):
        out = TRANSFORMS[name](image)
        assert out.shape == image.shape and not torch.equal(out, image)
    assert not torch.equal(TRANSFORMS["JPEG re-save"](image), TRANSFORMS["JPEG 95"](image))  # a second encode
    assert TRANSFORMS["resize x0.5"](image).shape == (3, 60, 45)
    assert TRANSFORMS["resize x2"](image).shape == (3, 240, 180)
    assert TRANSFORMS["centre crop 256"](image).shape == (3, 256, 256)
    assert torch.equal(TRANSFORMS["EXIF orientation"](image), image)  # the loader undoes the EXIF rotation


def test_exif_check_notices_a_loader_that_ignores_exif(monkeypatch, checkpoint, photos):
    import ladeda_lib.data.images as images

    monkeypatch.setattr(images.ImageOps, "exif_transpose", lambda img: img)
    image = torch.from_numpy(_photo_crops()["coffee"]).permute(2, 0, 1).contiguous()
    assert exif_rotated(image).shape == (3, 90, 120)  # sideways
    report = audit_photographs(checkpoint, photos, progress=False)
    assert report.summary()["exif_honoured"] is False
    assert "ignores EXIF orientation" in report.markdown()


def test_a_corrupt_file_is_listed_not_fatal(checkpoint, photos):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    report = audit_photographs(checkpoint, photos, progress=False)
    assert len(report.photos) == 3
    assert [u["file"] for u in report.unreadable] == ["broken.jpg"] and report.unreadable[0]["role"] == "real"
    assert "broken.jpg" in report.markdown()


def test_fakes_add_detection_rate_and_ap(checkpoint, photos, tmp_path):
    fakes = tmp_path / "fake"
    fakes.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(fakes / f"f{k}.png")
    report = audit_photographs(checkpoint, photos, fakes, progress=False)
    s = report.summary()
    assert s["n_fake"] == 2 and s["detection_rate"] == sum(f["verdict"] == "fake" for f in report.fakes) / 2
    probs = [p["original"]["fake_probability"] for p in report.photos] + [f["fake_probability"] for f in report.fakes]
    assert s["ap"] == pytest.approx(average_precision_score([0, 0, 0, 1, 1], probs))


def test_the_report_names_a_format_shortcut_in_words():
    def scored(p: float) -> dict:
        return {"fake_probability": p, "logit": float(np.log(p / (1 - p))), "verdict": "fake" if p >= 0.5 else "real"}

    transforms = {name: scored(0.3) for name in TRANSFORMS} | {"JPEG re-save": scored(0.8)}
    photo = dict(file="beach.png", format="PNG", size=[64, 64], original=scored(0.3), transforms=transforms)
    report = AuditReport("m.pt", 0.5, None, False, "real", photos=[photo | {"exif_upright": True}])
    text = report.markdown()
    assert "**Format shortcut:**" in text and "beach.png after JPEG re-save" in text
    assert report.summary()["transforms"]["JPEG re-save"]["turned_fake"] == 1.0
    report.photos[0]["transforms"]["JPEG re-save"] = scored(0.3)
    assert "no format shortcut" in report.markdown()


def test_cli_writes_the_report_and_accepts_registry_names(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "audit_out"
    assert main(["audit", "--model", str(checkpoint), "--real", str(photos), "--output", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["audit.json", "audit.md", "audit.png"]
    assert "False-positive rate" in capsys.readouterr().out
    assert resolve_model("toy-student-plain") == get_entry("toy-student-plain").path
    with pytest.raises(FileNotFoundError, match="toy-student-augmented"):
        resolve_model("no-such-model")


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable"])
def test_cli_bad_folder_is_a_usage_error(case, checkpoint, tmp_path, capsys):
    folder = tmp_path / case
    if case != "missing":
        folder.mkdir()
    if case == "unreadable":
        (folder / "broken.png").write_bytes(b"not a png")
    code = main(
        ["audit", "--model", str(checkpoint), "--real", str(folder), "--output", str(tmp_path / "o"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ladeda audit: error:") and str(folder) in err
    assert not (tmp_path / "o").exists()
    with pytest.raises((FileNotFoundError, ValueError)):
        audit_photographs(checkpoint, folder, progress=False)


def test_bundled_photographs_are_found_offline(tmp_path):
    files, notes = bundled_photographs(tmp_path)
    assert len(files) >= 5 and {"astronaut.png", "coffee.png"} <= {f.name for f in files}
    for f in files:
        with Image.open(f) as img:
            assert img.format == "PNG" and min(img.size) >= 64
    assert notes[0].startswith(f"{len(files)} photographs")
