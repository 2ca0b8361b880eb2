"""The package's layers hold: imports run one way, no cycles, no library module imports the CLI,
no module grows past 450 lines, and the modules a command needs before TensorFlow never import it."""

import ast
import os
import subprocess
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "oasis_gen")
# Higher layers may import lower or equal ones (equal: inside one package, or training -> evaluation's level).
RANK = {"cli": 7, "benchmarks": 6, "training": 5, "evaluation": 4, "sampling": 3, "models": 2, "data": 1,
        "rundir": 0, "plots": 0, "progress": 0, "config": 0, "fileio": 0, "seeds": 0}
# Function-level imports are kept for dependencies that are optional or costly and needed by one path only.
OPTIONAL = {"torch", "nibabel", "tensorflow_probability", "tensorflow.python.profiler"}
# Imported by the commands before their arguments are checked: they must not load TensorFlow.
BEFORE_TENSORFLOW = ["oasis_gen.config", "oasis_gen.rundir", "oasis_gen.fileio", "oasis_gen.plots", "oasis_gen.progress",
                     "oasis_gen.training.summary",
                     "oasis_gen.data.slices", "oasis_gen.cli.train", "oasis_gen.cli.generate",
                     "oasis_gen.cli.evaluate", "oasis_gen.cli.data", "oasis_gen.cli.figures", "oasis_gen.cli.bench",
                     "oasis_gen.cli.prepare", "oasis_gen.cli.phantom"]


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


def _resolve(name: str, modules: dict) -> str:
    """The oasis_gen module ``name`` lives in (its longest prefix that is a module), or ``name`` itself."""
    probe = name
    while probe not in modules and "." in probe:
        probe = probe.rsplit(".", 1)[0]
    return probe if probe in modules else name


def _imports(path: str, module: str, modules: dict) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function?, line) for every import of ``path``; oasis_gen names are
    resolved to the module that defines them (``from oasis_gen.data import slices`` -> oasis_gen.data.slices)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    in_function = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target == name and name not in modules and isinstance(node, ast.ImportFrom):
                target = node.module  # a third-party name
            found.append((target, id(node) in in_function, node.lineno))
    return found


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def _graph():
    modules = _modules()
    return modules, {m: [(t, f, line) for t, f, line in _imports(p, m, modules) if t in modules and t != m
                         and not m.startswith(t + ".")] for m, p in modules.items()}


def test_imports_run_one_way_and_never_reach_the_cli():
    _, graph = _graph()
    wrong = [f"{m}:{line} imports {t}" for m, edges in graph.items() for t, _, line in edges
             if t != "oasis_gen" and RANK[_layer(t)] > RANK[_layer(m)]]
    assert not wrong, "upward imports:\n" + "\n".join(wrong)
    to_cli = [f"{m} imports {t}" for m, edges in graph.items() for t, _, _ in edges
              if _layer(t) == "cli" and _layer(m) != "cli"]
    assert not to_cli


def test_no_import_cycle():
    _, graph = _graph()
    state, cycles = {}, []

    def visit(module, trail):
        state[module] = "open"
        for target, _, _ in graph[module]:
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


def test_function_level_imports_only_for_optional_dependencies():
    modules = _modules()
    late = [f"{m}:{line} {t}" for m, path in modules.items() if _layer(m) != "cli"
            for t, in_function, line in _imports(path, m, modules)
            if in_function and not any(t == o or t.startswith(o + ".") for o in OPTIONAL)]
    assert not late, "import these at the top of the module:\n" + "\n".join(late)


def test_no_module_over_450_lines():
    long = {m: sum(1 for _ in open(p, encoding="utf-8")) for m, p in _modules().items()}
    assert max(long.values()) <= 450, sorted(long.items(), key=lambda item: -item[1])[:3]


@pytest.mark.parametrize("module", BEFORE_TENSORFLOW)
def test_modules_used_before_arguments_are_checked_do_not_load_tensorflow(module):
    code = f"import sys, {module}; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_checker_catches_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: an injected upward import is found."""
    modules = _modules()
    fake = tmp_path / "quantizer.py"
    fake.write_text("from oasis_gen.training.loop import fit_stage\n")
    edges = [t for t, _, _ in _imports(str(fake), "oasis_gen.models.quantizer", modules)]
    assert edges == ["oasis_gen.training.loop"] and RANK[_layer(edges[0])] > RANK["models"]


def test_no_package_or_test_file_is_ignored_by_git():
    """A ``.gitignore`` pattern such as ``data/`` once hid ``oasis_gen/data/`` from every clone."""
    root = os.path.dirname(PACKAGE)
    if not os.path.isdir(os.path.join(root, ".git")) and not os.path.isfile(os.path.join(root, ".git")):
        pytest.skip("not a git checkout")
    paths = [os.path.relpath(path, root) for path in _modules().values()]
    paths += [os.path.join("tests", name) for name in os.listdir(os.path.join(root, "tests")) if name.endswith(".py")]
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True)
    assert result.stdout.strip() == "", f"ignored by .gitignore: {result.stdout.split()}"
