"""The project's structure: no import cycles, entry-point scripts never import one another, no
function longer than 80 lines, train.py short. Read from the source with ``ast`` (nothing is
imported), so a change that breaks the layout fails here."""

import ast

import pytest

from conftest import REPO

ENTRY_POINTS = {"preprocess", "train", "evaluate", "predict", "serve"}
MAX_FUNCTION_LINES = 80
MAX_TRAIN_LINES = 450


def project_modules():
    """Top-level modules of the project: name -> path."""
    return {p.stem: p for p in sorted(REPO.glob("*.py"))}


def imported_modules(path, names):
    """Project modules that ``path`` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & names


def import_graph():
    modules = project_modules()
    return {name: imported_modules(path, set(modules)) - {name}
            for name, path in modules.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None (depth-first search)."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, stack + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph = import_graph()
    assert ENTRY_POINTS <= set(graph) and "data_loader" in graph
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("script", sorted(ENTRY_POINTS))
def test_entry_points_import_modules_not_other_scripts(script):
    others = import_graph()[script] & (ENTRY_POINTS - {script})
    assert not others, f"{script}.py imports the entry point(s) {sorted(others)}"


def project_files():
    return [*REPO.glob("*.py"), *REPO.glob("scripts/*.py"), *REPO.glob("benchmarks/*.py")]


def test_no_function_longer_than_80_lines():
    long = []
    for path in project_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 80 lines: " + ", ".join(long)


def test_train_py_is_short():
    n = len((REPO / "train.py").read_text().splitlines())
    assert n < MAX_TRAIN_LINES, f"train.py has {n} lines"
