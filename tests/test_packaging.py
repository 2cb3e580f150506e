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


def test_command_table_matches_what_the_modules_register():
    import argparse
    import importlib

    from ladeda_lib import cli

    registered = {}
    for module in cli.COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register_cli(sub)
        registered.update({action.dest: (module, action.help) for action in sub._choices_actions})
    assert registered == cli.COMMANDS


def test_help_lists_every_command_without_importing_torch():
    code = (
        "import sys\n"
        "from ladeda_lib import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0\n"
        "assert 'torch' not in sys.modules, 'ladeda --help imported torch'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    from ladeda_lib.cli import COMMANDS

    assert all(name in out for name in COMMANDS)


def test_a_command_registers_only_its_own_module(capsys):
    import argparse

    from ladeda_lib import cli

    try:
        cli.main(["data-info", "--help"])
    except SystemExit as stop:
        assert stop.code == 0
    assert "--verify" in capsys.readouterr().out  # data-info's own options are shown
    parser = cli.build_parser([cli.COMMANDS["data-info"][0]])
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"data-info", "make-toy-data"}


def test_generated_content_is_ignored_but_readmes_are_kept():
    ignored = (ROOT / ".gitignore").read_text()
    assert "data/*" in ignored and "!data/README.md" in ignored
    assert "weights/*" in ignored and "!weights/README.md" in ignored
    assert (ROOT / "data" / "README.md").exists() and (ROOT / "weights" / "README.md").exists()
