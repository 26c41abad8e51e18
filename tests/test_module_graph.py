"""The package's shape: no import cycle among raykit's framework-neutral modules (tests/test_import.py
imports each module alone), and shared code never asks which framework it runs (the backends answer that)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "raykit"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def neutral_modules() -> dict[str, Path]:
    """raykit/*.py, raykit/spec/ and raykit/data/: the code every backend and the driver share."""
    files = [*PACKAGE.glob("*.py"), *(PACKAGE / "spec").rglob("*.py"), *(PACKAGE / "data").rglob("*.py")]
    return {module_name(path): path for path in sorted(files)}


def all_modules() -> list[str]:
    return sorted(module_name(path) for path in PACKAGE.rglob("*.py"))


def imports_of(path: Path, known: set[str], here: str = "") -> set[str]:
    """Modules of ``known`` that ``path`` (module ``here``) imports anywhere: at module level, in functions,
    under TYPE_CHECKING. ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``."""
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found & known - {here}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as ``[a, b, ..., a]``, or [] when the graph is acyclic."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, [*path, nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return []


def test_the_framework_neutral_modules_import_each_other_without_a_cycle():
    modules = neutral_modules()
    assert {"raykit.spec", "raykit.spec.rules", "raykit.tuning", "raykit.data"} <= set(modules)
    graph = {name: imports_of(path, set(modules)) for name, path in modules.items()}
    assert "raykit.spec.rules" in graph["raykit.spec.loading"]  # the graph sees real edges
    assert find_cycle(graph) == []


def test_the_whole_package_imports_without_a_cycle():
    """Backends and raykit/ray/ too (their imports of a framework by a computed name are not edges)."""
    modules = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    graph = {name: imports_of(path, set(modules)) for name, path in modules.items()}
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_function_level_cycles(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    late = tmp_path / "late.py"
    late.write_text("def f():\n    from raykit.tuning import trial_spec\n")
    assert imports_of(late, {"raykit.tuning", "raykit.spec"}, here="raykit.late") == {"raykit.tuning"}
    relative = tmp_path / "relative.py"
    relative.write_text("from . import rules\nfrom .schema import RunSpec\n")
    known = {"raykit.spec.rules", "raykit.spec.schema", "raykit.spec"}
    assert imports_of(relative, known, here="raykit.spec.loading") == {"raykit.spec.rules", "raykit.spec.schema"}


def framework_comparisons(source: str) -> list[int]:
    """Lines comparing something called ``framework`` with a string (``==``, ``!=``, ``is``, or ``in`` a
    literal of strings)."""

    def named_framework(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id == "framework") or (
            isinstance(node, ast.Attribute) and node.attr == "framework")

    def strings(node: ast.AST) -> bool:
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return bool(node.elts) and all(strings(element) for element in node.elts)
        return isinstance(node, ast.Constant) and isinstance(node.value, str)

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for left, right in zip(operands, operands[1:]):
                if (named_framework(left) and strings(right)) or (named_framework(right) and strings(left)):
                    lines.append(node.lineno)
    return lines


def test_no_shared_code_compares_the_framework_with_a_name():
    """Outside raykit/backends/, code asks the backend registry (raykit.backends.backend_info / load_backend)
    instead of branching on ``framework == "tf"``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] != "backends":
            found += [f"{path.relative_to(REPO)}:{line}" for line in framework_comparisons(path.read_text())]
    assert found == []


def test_the_framework_comparison_scan_catches_each_form():
    caught = ['spec.framework == "tf"', '"torch" != framework', 'framework in ("torch", "tf")',
              'x.spec.framework is "tf"', 'a < framework == "tf"']
    assert all(framework_comparisons(source) for source in caught)
    allowed = ['"framework" not in spec.tune.search_space', "spec.framework == other.framework",
               'framework_name == "tf"', "info.name == spec.framework"]
    assert not any(framework_comparisons(source) for source in allowed)
