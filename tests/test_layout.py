"""The project's structure: the top level holds only the programs a user runs, the library is one
package (`deepfake_detector`, one module per model family under ``models/``), no import cycles,
entry-point scripts never import one another, no module over 500 lines, no function longer than
80 lines, train.py short. Read from the source with ``ast`` (nothing but the family registry is
imported), so a change that breaks the layout fails here."""

import ast

import pytest

from conftest import REPO

PACKAGE = "deepfake_detector"
ENTRY_POINTS = {"preprocess", "data_loader", "train", "evaluate", "predict", "serve"}
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500
MAX_TRAIN_LINES = 450


def module_name(path):
    """``train`` for a top-level script, ``deepfake_detector.models.lcnn`` for a package module
    (``deepfake_detector.models`` for its ``__init__.py``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules():
    """The entry points and the package's modules: name -> path."""
    paths = [*REPO.glob("*.py"), *(REPO / PACKAGE).rglob("*.py")]
    return {module_name(p): p for p in sorted(paths)}


def resolve(node, current, is_package):
    """The absolute module names an import statement refers to (relative ones resolved against
    ``current``); ``from pkg import name`` yields both ``pkg`` and ``pkg.name``."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    base = node.module or ""
    if node.level:
        parts = current.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([base] if base else []))
    return {base} | {f"{base}.{a.name}" for a in node.names}


def imported_modules(path, names):
    """Project modules that ``path`` imports anywhere (top level or inside functions)."""
    current, found = module_name(path), set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= resolve(node, current, is_package)
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


def test_imports_are_resolved():
    graph = import_graph()
    assert f"{PACKAGE}.models.common" in graph["deepfake_detector.models.lcnn"]
    assert f"{PACKAGE}.datasets" in graph["train"] and f"{PACKAGE}.augment" in graph[
        f"{PACKAGE}.datasets"]


def test_no_import_cycle():
    graph = import_graph()
    assert ENTRY_POINTS <= set(graph) and f"{PACKAGE}.models" in graph
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("script", sorted(ENTRY_POINTS))
def test_entry_points_import_modules_not_other_scripts(script):
    others = import_graph()[script] & (ENTRY_POINTS - {script})
    assert not others, f"{script}.py imports the entry point(s) {sorted(others)}"


def project_files():
    return [*REPO.glob("*.py"), *(REPO / PACKAGE).rglob("*.py"), *REPO.glob("scripts/*.py"),
            *REPO.glob("benchmarks/*.py")]


def test_top_level_holds_only_the_programs_a_user_runs():
    scripts = {p.stem for p in REPO.glob("*.py")}
    assert scripts == ENTRY_POINTS, f"not an entry point at the top level: {scripts - ENTRY_POINTS}"


def test_no_module_over_500_lines():
    long = [f"{p.relative_to(REPO)} ({n} lines)" for p in project_files()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, "modules over 500 lines: " + ", ".join(long)


def test_models_folder_holds_one_module_per_family():
    from deepfake_detector import models

    files = {p.stem for p in (REPO / PACKAGE / "models").glob("*.py")} - {"__init__", "common"}
    registered = {m.__name__.rsplit(".", 1)[1] for m in models.MODULES.values()}
    assert files == registered, f"models/ files {sorted(files)} vs registry {sorted(registered)}"
    assert set(models.FAMILIES) == set(models.MODULES)


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
