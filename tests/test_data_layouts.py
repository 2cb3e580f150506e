"""Dataset detection: WildRF tree, single class folder, CSV; problems reported; clear layout errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ladeda_lib.data.layouts import DatasetLayoutError, detect_dataset, holdout_split


def _img(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def _wildrf(root: Path) -> Path:
    for split in ("train", "val"):
        for cls in ("0_real", "1_fake"):
            for i in range(2):
                _img(root / split / cls / f"{i}.png")
    for platform in ("reddit", "twitter"):
        for cls in ("0_real", "1_fake"):
            _img(root / "test" / platform / cls / "a.jpg")
    _img(root / "masks" / "train" / "1_fake" / "0.png", 255)
    return root


def test_wildrf_layout(tmp_path):
    index = detect_dataset(_wildrf(tmp_path / "WildRF"), warn=False)
    assert index.layout == "wildrf"
    assert index.splits == ["train", "val", "test"]
    assert index.platforms == ["reddit", "twitter"]
    assert len(index.select("train")) == 4 and len(index.select("test", "twitter")) == 2
    assert {s.label for s in index.select("val")} == {0, 1}
    masked = [s for s in index.samples if s.mask is not None]
    assert len(masked) == 1 and masked[0].path.name == "0.png" and masked[0].label == 1
    assert not index.problems
    summary = index.summary()
    assert "twitter" in summary and "wildrf" in summary


@pytest.mark.parametrize("names", [("0_real", "1_fake"), ("real", "fake")])
def test_single_folder_layout_and_holdout(tmp_path, names):
    for i in range(10):
        _img(tmp_path / names[0] / f"r{i}.png")
        _img(tmp_path / names[1] / f"f{i}.webp")
    index = detect_dataset(tmp_path, warn=False)
    assert index.layout == "folder" and index.splits == ["train"]
    assert sum(s.label for s in index.samples) == 10
    train, val = holdout_split(index.samples, fraction=0.3, seed=0)
    assert len(train) + len(val) == 20 and 0 < len(val) < 20
    assert all(s.split == "val" for s in val)
    assert holdout_split(index.samples, fraction=0.3, seed=0) == (train, val)


def test_csv_layout_relative_paths_and_labels(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    _img(tmp_path / "imgs" / "c.png")
    (tmp_path / "labels.csv").write_text(
        "path,label,split\nimgs/a.png,0,train\nimgs/b.png,fake,val\nimgs/c.png,REAL,\n"
    )
    index = detect_dataset(tmp_path / "labels.csv", warn=False)
    assert index.layout == "csv"
    got = [(s.path.name, s.label, s.split) for s in index.samples]
    assert got == [("a.png", 0, "train"), ("c.png", 0, "train"), ("b.png", 1, "val")]
    # a folder holding exactly one CSV is detected too
    assert detect_dataset(tmp_path, warn=False).layout == "csv"


def test_csv_missing_files_are_reported(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text("path,label\na.png,1\ngone.png,0\nalso_gone.jpg,1\n")
    with pytest.warns(UserWarning, match="2 CSV rows naming missing files"):
        index = detect_dataset(tmp_path / "l.csv")
    assert [s.path.name for s in index.samples] == ["a.png"]
    assert index.problems.missing_files == ["gone.png", "also_gone.jpg"]
    assert "gone.png" in index.summary()


def test_csv_bad_label_and_header(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text("path,label\na.png,maybe\n")
    with pytest.raises(DatasetLayoutError, match="line 2.*maybe"):
        detect_dataset(tmp_path / "l.csv")
    (tmp_path / "l.csv").write_text("file,class\na.png,0\n")
    with pytest.raises(DatasetLayoutError, match="'path' and 'label'"):
        detect_dataset(tmp_path / "l.csv")


def test_empty_class_and_unknown_extension_reported(tmp_path):
    _img(tmp_path / "0_real" / "r.png")
    (tmp_path / "0_real" / "notes.txt").write_text("hi")
    (tmp_path / "1_fake").mkdir()
    with pytest.warns(UserWarning) as record:
        index = detect_dataset(tmp_path)
    text = str(record[0].message)
    assert "1 empty class folders" in text and "1_fake" in text
    assert "unknown extensions" in text and "notes.txt" in text
    assert len(index.samples) == 1


def test_unreadable_files_reported_with_verify(tmp_path):
    _img(tmp_path / "0_real" / "ok.png")
    _img(tmp_path / "1_fake" / "ok.png")
    (tmp_path / "1_fake" / "broken.png").write_bytes(b"\x89PNG not really")
    index = detect_dataset(tmp_path, verify=True, warn=False)
    assert [p.name for p in index.problems.unreadable_files] == ["broken.png"]
    assert len(index.samples) == 2


def test_unrecognised_folder_error_shows_path_contents_and_trees(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(DatasetLayoutError) as info:
        detect_dataset(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg
    assert "photos/" in msg and "readme.md" in msg  # what was found
    assert "├── train/" in msg and "0_real/" in msg and "path,label" in msg  # the accepted trees
    with pytest.raises(FileNotFoundError):
        detect_dataset(tmp_path / "nope")


def test_hint_for_parent_folder(tmp_path):
    _wildrf(tmp_path / "WildRF")
    with pytest.raises(DatasetLayoutError, match="Did you mean .*WildRF"):
        detect_dataset(tmp_path)
