"""Printed paths name the project's folders, never one machine's."""

from pathlib import Path

from ladeda_lib.paths import project_root, shown, weights_dir


def test_paths_inside_the_root_are_shown_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LADEDA_HOME", str(tmp_path))
    assert project_root() == tmp_path.resolve()
    assert shown(weights_dir() / "single_stage" / "student_final.pt") == str(
        Path("weights/single_stage/student_final.pt")
    )
    assert shown(tmp_path / "data" / ".." / "data" / "toy_wildrf") == str(Path("data/toy_wildrf"))
    outside = tmp_path.parent / "elsewhere.pt"
    assert shown(outside) == str(outside)  # outside the root: as given
