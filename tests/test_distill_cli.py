"""End to end through the command line on a tiny toy set: teacher, targets, single stage, two stage, resume."""

import json

from ladeda_lib import cli


def test_training_commands_end_to_end(toy_data, tmp_path, capsys):
    data = toy_data
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


def test_every_config_field_has_a_flag_with_the_dataclass_default():
    import argparse
    from dataclasses import fields

    from ladeda_lib.distill.cli import config_from_args, register_cli
    from ladeda_lib.distill.config import StudentTrainConfig, TeacherTrainConfig, TwoStageTrainConfig

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    commands = {"train-teacher": TeacherTrainConfig, "train-student": StudentTrainConfig,
                "train-student-two-stage": TwoStageTrainConfig}  # fmt: skip
    for command, cls in commands.items():
        sub = parser._subparsers._group_actions[0].choices[command]
        flags = {opt for action in sub._actions for opt in action.option_strings}
        for f in fields(cls):
            assert "--" + f.name.replace("_", "-") in flags, f"{command}: no flag for {f.name}"
        args = parser.parse_args([command])
        assert config_from_args(cls, args) == cls(), command  # parsed defaults == dataclass defaults

    args = parser.parse_args(["train-student-two-stage", "--warmup-lr", "0.5", "--plateau-patience", "3",
                              "--preprocess", "raw", "--no-fit-offset", "--no-amp", "--resume", "--pool", "all"])  # fmt: skip
    cfg = config_from_args(TwoStageTrainConfig, args)
    assert (cfg.warmup_lr, cfg.plateau_patience, cfg.preprocess) == (0.5, 3, "raw")
    assert (cfg.fit_offset, cfg.amp, cfg.resume, cfg.pool) == (False, False, True, "all")
    assert config_from_args(TeacherTrainConfig, parser.parse_args(["train-teacher", "--keep-last"])).keep_best is False


def test_flag_generator_handles_any_simple_field_type():
    import argparse
    from dataclasses import dataclass
    from pathlib import Path
    from typing import Any, Literal

    from ladeda_lib.distill.cli import add_config_flags, config_from_args

    @dataclass
    class Example:
        label_fraction: float = 1.0
        augment: bool = False
        mode: Literal["a", "b"] = "a"
        limit: int | None = None
        where: str | Path | None = None
        pool: Any = 0.1

    parser = argparse.ArgumentParser()
    add_config_flags(parser, Example)
    assert config_from_args(Example, parser.parse_args([])) == Example()
    args = parser.parse_args(["--label-fraction", "0.2", "--augment", "--mode", "b", "--limit", "7", "--where", "x"])
    assert config_from_args(Example, args) == Example(0.2, True, "b", 7, "x", 0.1)
