"""The layout rules of docs/design.md that a change could break without noticing."""
import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shallowcnn"
FAST_KERNELS = {"kernels/cpu.py", "kernels/cuda.py"}      # at most 800 lines; the rest 600


def test_every_module_fits_its_line_budget():
    too_long = {}
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > (800 if name in FAST_KERNELS else 600):
            too_long[name] = lines
    assert not too_long, f"over the line budget: {too_long}"


def test_nothing_in_data_draws():
    """Figures go through plots.py; data/ is below it and never imports it."""
    offenders = []
    for path in (PACKAGE / "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "plots":
                offenders.append(path.name)
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [node.module or ""] if isinstance(node, ast.ImportFrom) \
                    else [a.name for a in node.names]
                if any(n.split(".")[0] == "matplotlib" for n in names):
                    offenders.append(path.name)
    assert not offenders, f"data/ modules that draw: {sorted(set(offenders))}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _own_imports(path: Path) -> set:
    """The package's own modules that ``path`` imports, at the top or inside a function.

    ``from . import x`` counts as an import of the submodule ``x`` when there is one,
    else of the package; ``from .a import b`` as an import of ``a`` (or of ``a.b`` when
    ``b`` is a submodule).
    """
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:     # shallowcnn.x.y -> the module that defines it
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] == "shallowcnn" and target != this:
                found.add(target)
    return found


def import_graph() -> dict:
    """module -> the package's own modules it imports (anywhere in the file)."""
    return {_module_name(p): _own_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def find_cycle(graph: dict):
    """One import circle of ``graph`` as a list of modules, or None (depth-first search).

    A package's ``__init__`` importing its own submodules is no circle of concern when the
    submodule imports only its siblings, so package -> its own submodule edges are left out.
    """
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state:
                cycle = visit(t)
                if cycle:
                    return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_circle():
    """The checker itself: a circle of three is found, a chain is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "shallowcnn.model" in graph["shallowcnn.train"] or "shallowcnn.model" in str(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle: {' -> '.join(cycle)}"


# The layers of docs/design.md ("Layers of the package"), lowest first: a module may import
# its own layer and those below, never one above. A name is a module or a package prefix.
LAYERS = (
    ("base", ("shallowcnn.constants", "shallowcnn.recipe", "shallowcnn.messages", "shallowcnn.storage")),
    ("kernels", ("shallowcnn.kernels",)),
    ("network", ("shallowcnn.layers", "shallowcnn.losses", "shallowcnn.optim", "shallowcnn.model")),
    ("data", ("shallowcnn.data", "shallowcnn.metrics", "shallowcnn.plots", "shallowcnn.overlay",
              "shallowcnn.froc_figure")),
    ("work", ("shallowcnn.checkpoint", "shallowcnn.train", "shallowcnn.evaluate", "shallowcnn.scan",
              "shallowcnn.scan_files", "shallowcnn.evidence",
              "shallowcnn.scan_dask", "shallowcnn.dask_cluster", "shallowcnn.froc", "shallowcnn.gradcheck",
              "shallowcnn.grading", "shallowcnn.operating_point", "shallowcnn.mining", "shallowcnn.detection_report")),
    ("applications", ("shallowcnn.search", "shallowcnn.web", "shallowcnn.interop")),
    ("demo", ("shallowcnn.demo",)),
    ("commands", ("shallowcnn.commands",)),
    ("cli", ("shallowcnn.cli", "shallowcnn.__main__")),
)


def layer_of(module: str):
    """The index in LAYERS of the longest name that ``module`` is or lies under (None: the root)."""
    if module == "shallowcnn":
        return None
    matches = [(len(name), k) for k, (_, names) in enumerate(LAYERS) for name in names
               if module == name or module.startswith(name + ".")]
    assert matches, f"{module} is in no layer of tests/test_layout.py: add it (and to docs/design.md)"
    return max(matches)[1]


def test_no_import_runs_up_the_layers():
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            if layer_of(module) is not None and layer_of(target) is not None and layer_of(target) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


def test_only_the_command_layer_knows_the_command_line():
    """argparse, add_command and run_command live in cli.py and commands/ only."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        if name == "cli.py" or name.startswith("commands/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "argparse" for a in node.names):
                offenders.append(f"{name} imports argparse")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "argparse":
                offenders.append(f"{name} imports from argparse")
            elif isinstance(node, ast.FunctionDef) and node.name in ("add_command", "run_command", "main"):
                offenders.append(f"{name} defines {node.name}")
    assert not offenders, "command-line code outside shallowcnn/commands/: " + "; ".join(sorted(offenders))


def test_every_command_module_is_listed_and_complete():
    from shallowcnn.cli import COMMANDS
    modules = {f"shallowcnn.commands.{p.stem}" for p in (PACKAGE / "commands").glob("*.py")}
    listed = {module for module, _ in COMMANDS.values()}
    assert modules - {"shallowcnn.commands.__init__", "shallowcnn.commands.common"} == listed
    for path in (PACKAGE / "commands").glob("*.py"):
        if path.stem not in ("__init__", "common"):
            defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
            assert {"add_command", "run_command"} <= defined, path.name


def test_ruff_passes():
    """The project's lint rules ([tool.ruff] in pyproject.toml) hold on the whole checkout."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it comes with the [test] extra)")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=PACKAGE.parent,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
