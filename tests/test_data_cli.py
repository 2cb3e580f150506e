"""``ladeda data-info`` and ``ladeda make-toy-data`` through the real command-line entry point."""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from ladeda_lib.cli import main


def test_data_info_prints_counts(tmp_path, capsys):
    for cls, n in (("0_real", 3), ("1_fake", 2)):
        for i in range(n):
            (tmp_path / cls).mkdir(exist_ok=True)
            Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / cls / f"{i}.png")
    assert main(["data-info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "layout:  folder" in out
    train_row = next(line for line in out.splitlines() if line.startswith("train"))
    assert train_row.split() == ["train", "-", "3", "2", "5"]


def test_data_info_unrecognised_folder_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "stuff").mkdir()
    assert main(["data-info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "No dataset recognised" in err and "stuff/" in err and "0_real" in err


def test_cli_import_stays_light():
    # `ladeda --help` registers the data commands without importing torchvision or scipy.
    import subprocess

    code = "import sys, ladeda_lib.data; print('torchvision' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_make_toy_data_sizes_from_flags(tmp_path, capsys):
    import json

    out = tmp_path / "toy"
    args = ["make-toy-data", "--output", str(out), "--train-per-class", "2", "--val-per-class", "1",
            "--test-per-class", "1", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert len(list((out / "train" / "0_real").iterdir())) == 2 and len(list((out / "val" / "1_fake").iterdir())) == 1
    assert json.loads((out / "toy_config.json").read_text())["config"]["train_per_class"] == 2
    assert "2/1/1 per class" in capsys.readouterr().out
    assert main(["make-toy-data", "--output", str(out), "--train-per-class", "0"]) == 1
    assert "--train-per-class must be at least 1" in capsys.readouterr().err
