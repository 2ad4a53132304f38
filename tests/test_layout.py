"""The layout rules of docs/design.md that a change could break without noticing."""
import ast
from pathlib import Path

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
