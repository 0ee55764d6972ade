"""The project's structure: the top level holds only the programs a user runs, the library is one
package (`deepfake_detector`) whose folders name its stages (one module per model family under
``models/``) and whose imports go down its layers, no import cycles, entry-point scripts never
import one another, no module over 500 lines, no function longer than 80 lines, train.py short.
Read from the source with ``ast`` (nothing but the family registry and the old names are
imported), so a change that breaks the layout fails here."""

import ast

import pytest

from conftest import REPO

PACKAGE = "deepfake_detector"
ENTRY_POINTS = {"preprocess", "data_loader", "train", "evaluate", "predict", "serve"}
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500
MAX_TRAIN_LINES = 450

# The package, as its docstring (deepfake_detector/__init__.py) and README's "Layout" say.
CORE = {"atomic", "cli", "audio", "logmel", "features", "protocols", "aggregate", "display"}
# modules at the root above the stages: tf.data pipelines, and what reads runs
RUN_LEVEL = {"datasets", "sampling", "runs", "familiarity", "inference"}
FOLDERS = {"models": "one module per model family; saving and loading",
           "augment": "what perturbs training data (SpecAugment, waveforms, RawBoost, channel)",
           "evaluation": "metrics, calibration, tables, plots, and the report of a run",
           "weights": "readers of published weights, and the official AASIST checkpoints",
           "training": "what only training needs, and the linear probe recipe"}
# bottom to top: a module imports modules of its own layer and of the layers below, never above.
# A name is a root module, a folder (all its modules) or one module of a folder (it overrides
# its folder's layer).
LAYERS = [("the core", CORE),
          ("stages on the core", {"models", "augment", "evaluation", "weights"}),
          ("data and runs", RUN_LEVEL),
          ("on top, reading runs", {"training", "evaluation.report", "weights.checkpoints"})]


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


def layer_of(module):
    """The index in `LAYERS` of a package module (its most specific name there), or None for
    the package itself."""
    name = module[len(PACKAGE) + 1:]
    if not name:
        return None
    best = None
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            if (name == n or name.startswith(n + ".")) and (best is None or len(n) > best[1]):
                best = (i, len(n))
    return None if best is None else best[0]


def layer_violations(graph):
    """``"a (layer) imports b (a layer above)"`` for every import up the layers, and every package
    module no layer holds."""
    found = []
    for module, imported in sorted(graph.items()):
        if not module.startswith(PACKAGE + "."):
            continue
        mine = layer_of(module)
        if mine is None:
            found.append(f"{module} is in no layer of LAYERS")
            continue
        for other in sorted(imported):
            theirs = layer_of(other)
            if theirs is not None and theirs > mine:
                found.append(f"{module} ({LAYERS[mine][0]}) imports {other} ({LAYERS[theirs][0]})")
    return found


def test_layer_check_can_fail():
    graph = {f"{PACKAGE}.atomic": {f"{PACKAGE}.runs"}, f"{PACKAGE}.runs": {f"{PACKAGE}.atomic"},
             f"{PACKAGE}.evaluation.report": {f"{PACKAGE}.training.config"},
             f"{PACKAGE}.evaluation.metrics": {f"{PACKAGE}.evaluation.report"},
             f"{PACKAGE}.stray": set()}
    assert layer_violations(graph) == [
        f"{PACKAGE}.atomic (the core) imports {PACKAGE}.runs (data and runs)",
        f"{PACKAGE}.evaluation.metrics (stages on the core) imports "
        f"{PACKAGE}.evaluation.report (on top, reading runs)",
        f"{PACKAGE}.stray is in no layer of LAYERS"]


def test_imports_go_down_the_layers():
    graph = import_graph()
    assert f"{PACKAGE}.evaluation.metrics" in graph[f"{PACKAGE}.runs"]  # the graph is resolved
    assert not layer_violations(graph), "imports up the layers:\n" + "\n".join(
        layer_violations(graph))


def test_package_root_holds_the_core_and_the_run_level():
    root = {p.stem for p in (REPO / PACKAGE).glob("*.py")} - {"__init__"}
    new = sorted(root - CORE - RUN_LEVEL)
    folders = ", ".join(f"{f}/" for f in FOLDERS)
    assert not new, (f"{', '.join(f'{PACKAGE}/{n}.py' for n in new)}: a new module at the package "
                     f"root; put it in the folder of its stage ({folders}), or add it to CORE or "
                     "RUN_LEVEL here (and to the package docstring) if every stage needs it")
    assert root == CORE | RUN_LEVEL, f"listed but gone: {sorted(CORE | RUN_LEVEL - root)}"


def test_folders_are_the_stages_and_say_what_they_hold():
    folders = {p.parent.name for p in (REPO / PACKAGE).glob("*/__init__.py")}
    assert folders == set(FOLDERS), f"folders {sorted(folders)} vs FOLDERS {sorted(FOLDERS)}"
    doc = ast.get_docstring(ast.parse((REPO / PACKAGE / "__init__.py").read_text()))
    for folder in FOLDERS:
        assert ast.get_docstring(ast.parse((REPO / PACKAGE / folder / "__init__.py").read_text()))
        assert f"``{folder}/``" in doc, f"the package docstring does not say what {folder}/ holds"
    for module in CORE | RUN_LEVEL:
        assert f"``{module}``" in doc, f"the package docstring does not name {module}"


def test_old_module_names_import_the_moved_modules():
    import importlib

    import deepfake_detector

    for old, new in deepfake_detector.MOVED.items():
        assert (REPO / PACKAGE / (new.replace(".", "/") + ".py")).is_file()
        assert not (REPO / PACKAGE / f"{old}.py").exists()
        moved = importlib.import_module(f"{PACKAGE}.{new}")
        assert importlib.import_module(f"{PACKAGE}.{old}") is moved
        assert moved.__name__ == moved.__spec__.name == f"{PACKAGE}.{new}"
    from deepfake_detector import report  # noqa: F401 - the from-import form
    from deepfake_detector.metrics import compute_eer

    assert compute_eer is importlib.import_module(f"{PACKAGE}.evaluation.metrics").compute_eer

