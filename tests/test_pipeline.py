"""``ladeda pipeline`` end to end on a tiny configuration: report, reuse of artifacts, a failing stage."""

import json

import pytest
import torch

from ladeda_lib.checkpoints import load_checkpoint
from ladeda_lib.data.toy import ToyConfig, make_toy_dataset
from ladeda_lib.pipeline import PipelineConfig, PipelineError, run_pipeline

TINY_TOY = ToyConfig(train_per_class=8, val_per_class=4, test_per_class=4, min_side=96, max_side=128)


def tiny(tmp_path, **overrides):
    settings = dict(
        output=tmp_path / "run",
        teacher_width=4,
        teacher_epochs=1,
        student_epochs=1,
        epochs_s1=1,
        epochs_s2=1,
        deployed_epochs=2,
        deployed_warmup_epochs=1,
        quantization="dynamic_range",
        representative_count=4,
        latency_runs=2,
        progress=False,
    )
    settings.update(overrides)
    return PipelineConfig(**settings)


@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_reuses_artifacts(tmp_path, monkeypatch):
    import ladeda_lib.export

    export_calls = []
    real_export = ladeda_lib.export.export_model

    def recording_export(*args, **kwargs):
        export_calls.append(kwargs)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(ladeda_lib.export, "export_model", recording_export)
    data = make_toy_dataset(tmp_path / "toy", seed=3, config=TINY_TOY, progress=False)
    result = run_pipeline(tiny(tmp_path, data=data))
    # every backend is timed with the thread count the report states
    assert [call["threads"] for call in export_calls] == [torch.get_num_threads()]
    out = tmp_path / "run"
    report = result.report.read_text()
    for heading in (
        "average precision per split and platform",
        "Accuracy at threshold 0.5",
        "parity, size and latency",
        "Stage timings",
        "Real photographs: false-positive audit",
    ):
        assert heading in report
    for name in (
        "teacher",
        "label-only student",
        "single-stage student",
        "two-stage student",
        "deployed student",
        "student.tflite",
    ):
        assert f"| {name} |" in report
    assert "trained on this data" in report  # not the toy data: the report says a teacher was trained on it
    assert "Reliability on the test images" in report or "reliability" in report
    for path in (
        "teacher_compact.pt",
        "single_stage/student_final.pt",
        "label_only/student_final.pt",
        "two_stage/student_final.pt",
        "deployed/student_best.pt",
        "export/student.onnx",
        "export/student.tflite",
        "figures/ap_per_platform.png",
    ):
        assert (out / path).is_file(), path
    metrics = json.loads((out / "metrics.json").read_text())
    # the audit: the students on the photographs shipped in installed packages (this toy set holds none)
    audit = metrics["audit"]
    assert audit["photographs"].startswith("the photographs shipped")
    assert set(audit["models"]) == {"label-only", "two-stage", "deployed"}
    assert all(0 <= m["false_positive_rate"] <= 1 and m["n_real"] >= 3 for m in audit["models"].values())
    assert (out / "audit" / "deployed" / "audit.md").is_file() and "| deployed |" in report
    students = {"label-only student", "single-stage student", "two-stage student", "deployed student"}
    assert set(metrics["models"]) == {"teacher", *students}
    assert set(metrics["models"]["teacher"]["groups"]) >= {"val", "test/reddit", "test/twitter", "test/facebook"}
    # the deployed student: labels only, augmented, on crops, its best val epoch
    deployed = load_checkpoint(out / "deployed" / "student_best.pt").metadata["config"]
    assert (deployed["alpha_distill"], deployed["crop_size"], deployed["crops_per_image"]) == (0.0, 64, 4)
    assert deployed["augment"]["p_jpeg"] > 0 and deployed["val_views"] == "clean+degraded"
    assert "deployed student: labels only" in report
    # the float32 file ranks the test images as the deployed student it was exported from
    exported_ap = metrics["exported"]["student.tflite"]["test"]["ap"]
    assert exported_ap == pytest.approx(metrics["models"]["deployed student"]["groups"]["test"]["ap"], abs=0.01)

    # A second run reuses every trained model and export instead of rebuilding them.
    stamps = {
        p: (out / p).stat().st_mtime_ns
        for p in (
            "teacher_compact.pt",
            "two_stage/student_final.pt",
            "deployed/student_best.pt",
            "export/student.tflite",
        )
    }
    again = run_pipeline(tiny(tmp_path, data=data))
    assert {p: (out / p).stat().st_mtime_ns for p in stamps} == stamps
    assert any("reused" in note for note in again.notes)


def test_a_failing_stage_names_itself_and_keeps_earlier_artifacts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match=r"stage 1/9 'data' failed") as err:
        run_pipeline(tiny(tmp_path, data=tmp_path / "empty"))
    assert "Artifacts of the earlier stages are kept" in str(err.value)


def test_teacher_warnings_flag_a_teacher_weaker_than_the_label_only_student():
    from ladeda_lib.pipeline.report import teacher_warnings

    metrics = {"teacher": {"mAP": 0.70}, "label-only student": {"mAP": 0.75}, "single-stage student": {"mAP": 0.80}}
    lines = teacher_warnings(metrics)
    assert len(lines) == 1 and "teacher" in lines[0] and "0.700" in lines[0] and "cannot help" in lines[0]
    assert teacher_warnings({**metrics, "teacher": {"mAP": 0.9}}) == []


def test_audit_uses_a_photo_worlds_held_out_photographs(tmp_path):
    from ladeda_lib.data.photos import heldout_dir
    from ladeda_lib.models import TinyLaDeDa
    from ladeda_lib.pipeline.report import audit_section, audit_students, audit_table

    root = tmp_path / "world"
    root.mkdir()
    (root / "photos.json").write_text("{}")
    held = heldout_dir(root)
    held.mkdir()
    g = torch.Generator().manual_seed(0)
    from PIL import Image

    for i in range(3):
        Image.fromarray((torch.rand(300, 280, 3, generator=g) * 255).byte().numpy()).save(held / f"p{i}.png")
    (held / "broken.png").write_bytes(b"not an image")  # reported by the audit, not fatal
    torch.manual_seed(0)
    audits = audit_students({"tiny student": TinyLaDeDa()}, root, tmp_path / "audit")
    assert audits["photographs"] == "the photo world's held-out test photographs"
    assert audits["models"]["tiny student"]["n_real"] == 3
    assert (tmp_path / "audit" / "tiny" / "audit.md").is_file()
    table = audit_section(audits)
    assert table[0].startswith("## Real photographs") and table[-1].startswith("| tiny student | ")
    assert table[-3:] == audit_table(audits) and audit_table(audits)[0].startswith("| student | called fake |")


@pytest.mark.slow
def test_a_failing_second_trainer_names_its_log_and_gives_the_core_back(tmp_path):
    """The deployed student trains in a spawned process: its failure stops the run at its stage, with its log."""
    data = make_toy_dataset(tmp_path / "toy", seed=3, config=TINY_TOY, progress=False)
    threads = torch.get_num_threads()
    with pytest.raises(PipelineError, match=r"'deployed student' failed: RuntimeError: its training process failed"):
        run_pipeline(tiny(tmp_path, data=data, deployed_crop_size=512))  # larger than the 256-pixel images
    assert torch.get_num_threads() == threads
    log = (tmp_path / "run" / "deployed" / "train.log").read_text()
    assert "crop_size must be a multiple of 8 in [16, 256], got 512" in log
    assert (tmp_path / "run" / "two_stage" / "student_final.pt").is_file()  # the stages before it finished
