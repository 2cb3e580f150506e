"""Docs point at what exists: every "Introduced in notebook NN" names a notebook that uses that name, and the
README's library table lists every module of the package."""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POINTER = re.compile(r"Introduced in notebooks? (\d\d)((?:(?:,| and| or) \d\d)*)")


def _notebook_sources() -> dict[str, str]:
    texts = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts[path.name[:2]] = "\n".join("".join(c["source"]) for c in cells)
    return texts


def _pointers() -> list[tuple[str, str, list[str]]]:
    found = []
    for path in sorted((ROOT / "ladeda_lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for m in POINTER.finditer(ast.get_docstring(node) or ""):
                    numbers = [m.group(1), *re.findall(r"\d\d", m.group(2))]
                    found.append((f"{path.relative_to(ROOT)}:{node.name}", node.name, numbers))
    return found


def test_every_introduced_in_pointer_names_a_notebook_that_uses_the_name():
    notebooks = _notebook_sources()
    pointers = _pointers()
    assert len(pointers) > 20  # the scan sees the docstrings it is meant to check
    wrong = [
        (where, numbers)
        for where, name, numbers in pointers
        if not any(re.search(rf"\b{re.escape(name)}\b", notebooks.get(n, "")) for n in numbers)
    ]
    assert not wrong, f"'Introduced in notebook NN' where notebook NN never names it: {wrong}"


def test_the_readme_library_table_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `ladeda_lib/")]
    listed = " ".join(re.findall(r"`([^`]+)`", " ".join(row.split("|")[1] for row in rows)))
    missing = []
    for path in sorted((ROOT / "ladeda_lib").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if path.name in ("__init__.py", "__main__.py", "cli.py") and rel.parent == Path("ladeda_lib"):
            continue  # the package itself and its command dispatcher
        folders = [f"{parent.as_posix()}/" for parent in rel.parents if parent != Path(".")]
        if rel.as_posix() not in listed and path.name not in listed and not any(f in listed for f in folders[:-1]):
            missing.append(rel.as_posix())
    assert not missing, f"modules the README's library table does not list: {missing}"


def test_the_package_table_of_contents_lists_every_module():
    import ladeda_lib

    listed = set(re.findall(r"``(\w+)``", ladeda_lib.__doc__))
    modules = {p.stem for p in (ROOT / "ladeda_lib").glob("*.py")} - {"__init__", "__main__"}
    packages = {p.parent.name for p in (ROOT / "ladeda_lib").glob("*/__init__.py")}
    missing = sorted((modules | packages) - listed)
    assert not missing, f"ladeda_lib's docstring does not list: {missing}"
