"""Layering: every module imports in a fresh interpreter, and the parts of the library import in no circle.

Parts are the top-level modules (``predictors``, ``inference``, ``viz`` …) and packages (``models``, ``data``,
``distill``, ``export``, ``graphs``, ``pipeline``). Imports inside functions count too: a lazy import in a circle
is still a circle. Besides: the runtime layer imports downwards only, no private name (``_x``) is imported from
another module, and no module is longer than 500 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ladeda_lib

ROOT = Path(ladeda_lib.__file__).parent


def modules() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def part_of(module: str) -> str:
    """``ladeda_lib.export.verify`` → ``export``; ``ladeda_lib.predictors`` → ``predictors``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "ladeda_lib"


def imported_modules(path: Path, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ladeda_lib")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ladeda_lib"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def part_graph() -> dict[str, set[str]]:
    known = set(modules())
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        source = part_of(module)
        for target in imported_modules(path, known):
            if part_of(target) not in (source, "ladeda_lib"):
                graph.setdefault(source, set()).add(part_of(target))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_between_parts() -> None:
    graph = part_graph()
    assert "predictors" in graph and "inference" in graph  # the scan sees the modules it is meant to check
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_known_former_cycles_stay_broken() -> None:
    graph = part_graph()
    for a, b in (("inference", "viz"), ("inference", "export"), ("evaluation", "distill")):
        assert not (b in graph.get(a, set()) and a in graph.get(b, set())), f"{a} <-> {b}"


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    names = [m for m in modules() if m != "ladeda_lib.__main__"]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('ok')"
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


#: The runtime layer, bottom to top: each part may import only the parts listed before it (and models, data,
#: geometry, checkpoints, paths). The deployment graphs never import a runner or the export, the predictors never
#: the export or evaluation, the scoring loop never evaluation.
RUNTIME_LAYERS = ("timing", "jsonio", "contract", "graphs", "predictors", "runner")
BELOW_RUNTIME = {"models", "data", "geometry", "checkpoints", "paths", "registry", "distributed"}


def test_the_runtime_layer_imports_downwards_only() -> None:
    graph = part_graph()
    for i, part in enumerate(RUNTIME_LAYERS):
        assert part in {*graph, *(t for targets in graph.values() for t in targets)}, f"{part} not scanned"
        allowed = set(RUNTIME_LAYERS[:i]) | BELOW_RUNTIME
        assert graph.get(part, set()) <= allowed, f"{part} imports {sorted(graph[part] - allowed)}"


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ladeda_lib"):
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names if a.name[0] == "_"]
    assert not [f for f in found if not f.endswith(".__version__")], found


def test_no_module_is_longer_than_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
