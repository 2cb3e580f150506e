"""``ladeda export``: clear errors for bad inputs, and one end-to-end run on a tiny toy dataset."""

import json

import pytest
import torch

from ladeda_lib.checkpoints import save_checkpoint
from ladeda_lib.cli import main
from ladeda_lib.models import LaDeDa, TinyLaDeDa


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nope.pt"), "--no-verify"]) == 1
    assert "model checkpoint not found" in capsys.readouterr().err


def test_teacher_where_a_student_is_expected(tmp_path, capsys):
    path = save_checkpoint(LaDeDa(width=4), tmp_path / "teacher.pt")
    assert main(["export", "--model", str(path), "--no-verify", "--output", str(tmp_path / "t.tflite")]) == 1
    err = capsys.readouterr().err
    assert "LaDeDa teacher" in err and "--teacher" in err
    assert not (tmp_path / "t.onnx").exists()


def test_output_must_be_writable_and_a_tflite_file(tmp_path, capsys):
    path = save_checkpoint(TinyLaDeDa(), tmp_path / "s.pt")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = ["export", "--model", str(path), "--no-verify", "--quantization", "float16"]
    assert main([*args, "--output", str(blocker / "s.tflite")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main([*args, "--output", str(tmp_path / "s.onnx")]) == 1
    assert "must name a .tflite file" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_on_a_published_state_dict(toy_data, tmp_path, capsys):
    data = toy_data
    torch.manual_seed(0)
    torch.save(TinyLaDeDa().state_dict(), tmp_path / "WildRF_Tiny_LaDeDa.pth")  # a bare published state_dict
    out = tmp_path / "out" / "student_quantized.tflite"
    code = main(
        [
            "export",
            "--model",
            str(tmp_path / "WildRF_Tiny_LaDeDa.pth"),
            "--quantization",
            "dynamic_range",
            "--output",
            str(out),
            "--data",
            str(data),
            "--calibration-count",
            "4",
            "--latency-runs",
            "2",
            "--with-patches",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert out.is_file() and (tmp_path / "out" / "student_quantized.onnx").is_file()
    assert "| dynamic_range |" in printed and "| onnx |" in printed
    report = json.loads((tmp_path / "out" / "student_quantized_verification.json").read_text())
    assert report["passed"] and report["num_images"] == 18  # 3 per class × 3 platforms
    assert [f["format"] for f in report["formats"]] == ["pytorch", "onnx", "dynamic_range"]
