"""End to end through the command line on a tiny toy set: teacher, targets, single stage, two stage, resume."""

import json

from ladeda_lib import cli
from ladeda_lib.data.toy import ToyConfig, make_toy_dataset


def test_training_commands_end_to_end(tmp_path, capsys):
    data = make_toy_dataset(tmp_path / "toy", seed=2, config=ToyConfig(2, 2, 1), progress=False)
    common = ["--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--quiet", "--device", "cpu"]
    teacher = tmp_path / "teacher.pt"
    assert cli.main(["train-teacher", *common, "--output", str(teacher), "--width", "2", "--epochs", "1",
                     "--crop-size", "32", "--batch-size", "4"]) == 0  # fmt: skip
    assert teacher.is_file()
    assert cli.main(["teacher-targets", *common, "--teacher", str(teacher)]) == 0
    assert cli.main(["teacher-targets", *common, "--teacher", str(teacher)]) == 0
    out = capsys.readouterr().out
    assert "computed" in out and "reused" in out

    single = tmp_path / "single"
    args = ["train-student", *common, "--teacher", str(teacher), "--output", str(single), "--batch-size", "2"]
    assert cli.main([*args, "--epochs", "1"]) == 0
    assert cli.main([*args, "--epochs", "2", "--resume"]) == 0  # continues with epoch 2 only
    log = json.loads((single / "log.json").read_text())
    assert [row["epoch"] for row in log["history"]] == [1, 2] and log["status"] == "finished"

    two = tmp_path / "two"
    assert cli.main(["train-student-two-stage", *common, "--teacher", str(teacher), "--output", str(two),
                     "--init", str(single / "student_final.pt"), "--epochs-s1", "1", "--epochs-s2", "1"]) == 0  # fmt: skip
    assert (two / "student_final.pt").is_file()
    assert "starting from --init" in capsys.readouterr().out

    assert cli.main(["train-student", *common, "--teacher", str(tmp_path / "missing.pt")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
