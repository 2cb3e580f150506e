"""Packaging: pyproject and environment.yml agree, the console script and ``python -m`` work."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r): r.replace(" ", "") for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith("-e")}
    assert listed == declared  # same names and the same version ranges
    assert "python=3.11" in env["dependencies"]
    assert "-e ." in pip_section


def test_console_entry_points():
    help_text = subprocess.run(
        [sys.executable, "-m", "ladeda_lib", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "models" in help_text
    out = subprocess.run(
        [sys.executable, "-m", "ladeda_lib", "models", "--width", "16"], capture_output=True, text=True, check=True
    ).stdout
    assert "1,297" in out and "126x126" in out and "31x31" in out


def test_generated_content_is_ignored_but_readmes_are_kept():
    ignored = (ROOT / ".gitignore").read_text()
    assert "data/*" in ignored and "!data/README.md" in ignored
    assert "weights/*" in ignored and "!weights/README.md" in ignored
    assert (ROOT / "data" / "README.md").exists() and (ROOT / "weights" / "README.md").exists()
