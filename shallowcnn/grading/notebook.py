"""Grading whole student notebooks (what ``shallowcnn grade`` runs).

A notebook is never run as a whole: its check cells may have been deleted or edited, and its
other cells may train for minutes. Instead, for each exercise:

1. :func:`definitions` takes from the notebook's code cells only the top-level imports, function
   and class definitions and UPPER_CASE constants (no check cell, nothing that computes), in
   notebook order, so that a later definition replaces an earlier one as it would in Jupyter;
2. a fresh Python process executes them (for the capstone, notebook 10, after the functions of
   notebooks 02-06 found beside it: :func:`student_functions`) and calls the exercise's check
   from this package on the student's functions;
3. the process is killed after ``timeout`` seconds.

A stub (``NotImplementedError``), an exception, a wrong answer or a timeout is a failed exercise
with its message, never a failure of the grader.
"""
from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .exercises import EXERCISES, Exercise, for_notebook

DEFAULT_TIMEOUT_S = 120
CAPSTONE = "10"
CAPSTONE_SOURCES = ("02", "03", "04", "05", "06")      # the notebooks whose functions the capstone uses
CAPSTONE_PIECES = ("conv2d_shifts", "conv_relu_maxpool_backward_sparse", "dense_backward", "bce_with_logits",
                   "adam_step", "inverted_dropout")
CSV_COLUMNS = ("notebook", "exercise", "passed", "points", "max_points", "message")


class NotebookError(ValueError):
    """A file that cannot be graded (not a notebook, unreadable, no known exercises); names the file."""


@dataclass
class Grade:
    notebook: str
    exercise: Exercise
    passed: bool
    message: str
    seconds: float = 0.0

    @property
    def points(self) -> int:
        return self.exercise.points if self.passed else 0


def read_notebook(path) -> dict:
    """The notebook's JSON (nbformat 4), or :class:`NotebookError` naming the file."""
    path = Path(path)
    if path.suffix != ".ipynb":
        raise NotebookError(f"{path}: not a Jupyter notebook (expected a .ipynb file)")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise NotebookError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotebookError(f"{path}: not a readable notebook (invalid JSON: {e})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{path}: not a Jupyter notebook (no list of cells)")
    return nb


def notebook_number(path, nb: dict) -> str:
    """"03" for ``03_backward.ipynb`` (also "01" for a tutorial notebook without exercises, whose
    metadata says so); else from the exercise ids in its metadata."""
    m = re.match(r"(\d\d)_", Path(path).name)
    listed = nb.get("metadata", {}).get("shallowcnn", {}).get("exercises")
    if m and (for_notebook(m.group(1)) or listed == []):    # a tutorial notebook, with or without exercises
        return m.group(1)
    listed = listed or []
    numbers = {f"{int(str(e.get('id', '0.0')).split('.')[0]):02d}" for e in listed if isinstance(e, dict)}
    numbers = {n for n in numbers if for_notebook(n)}
    if len(numbers) == 1:
        return numbers.pop()
    raise NotebookError(f"{path}: no graded exercises known for this notebook (name it NN_..., as the "
                        "student set does; notebooks " + ", ".join(sorted({e.notebook for e in EXERCISES})) + ")")


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


_CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]*[A-Z][A-Z0-9_]*$")     # QUICK, ROOT_DIR; not W2
_MODULES = {"os", "np", "math", "Path", "sys"}


def definitions(nb: dict) -> tuple[list, list]:
    """The top-level imports, defs, classes and UPPER_CASE constants (computed from modules and
    earlier constants only) of the code cells, in order, as (label, source) pairs; and the
    problems met (a cell that does not parse)."""
    parts, problems, constants = [], [], set()
    for number, cell in enumerate(nb.get("cells", []), start=1):
        if cell.get("cell_type") != "code":
            continue
        text = _source(cell)
        # IPython's magics and shell lines are not Python
        text = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in text.splitlines())
        try:
            tree = ast.parse(text)
        except SyntaxError as e:
            problems.append(f"cell {number} does not parse ({e.msg}, line {e.lineno}); it was skipped")
            continue
        for node in tree.body:
            keep = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(node, ast.Assign):      # a constant: QUICK = os.environ.get(...) == "1"
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                used = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
                keep = (bool(names) and len(names) == len(node.targets) and all(_CONSTANT.match(n) for n in names)
                        and used <= constants | _MODULES)
                if keep:
                    constants |= set(names)
            if keep:
                parts.append((f"cell {number}, line {node.lineno}", ast.get_source_segment(text, node)))
    return parts, problems


def execute_definitions(parts, namespace: dict, label: str) -> list:
    """Execute the definitions one by one into ``namespace``; one that fails (a default argument
    that needs a variable of the notebook, a missing module) is skipped and reported."""
    problems = []
    for where, source in parts:
        try:
            exec(compile(source, f"{label} ({where})", "exec"), namespace)  # noqa: S102  (the point: run the student's code)
        except Exception as e:  # noqa: BLE001  (whatever the student's cell raises is reported, not fatal)
            problems.append(f"{where} was skipped: {type(e).__name__}: {e}")
    return problems


def student_functions(folder, numbers=CAPSTONE_SOURCES) -> dict:
    """The functions the student defined in the notebooks ``NN_*.ipynb`` of ``folder`` (each
    notebook in its own namespace; a later notebook's name wins): name -> function.

    Notebook 10 (the capstone) builds its network from these.
    """
    found = {}
    for number in numbers:
        for path in sorted(Path(folder).glob(f"{number}_*.ipynb")):
            namespace = {"__name__": f"student_{path.stem}"}
            execute_definitions(definitions(read_notebook(path))[0], namespace, path.name)
            found.update({k: v for k, v in namespace.items() if callable(v) and getattr(v, "__module__", "")
                          == namespace["__name__"]})
    return found


def run_exercise(path, exercise_id: str) -> tuple[bool, str]:
    """In this process: build the student's functions from ``path`` and run the check of ``exercise_id``."""
    from . import capstone, checks

    path = Path(path)
    exercise = next(e for e in EXERCISES if e.id == exercise_id)
    parts, problems = definitions(read_notebook(path))
    namespace = {"__name__": "student_notebook"}
    if exercise.notebook == CAPSTONE:
        try:
            namespace.update(student_functions(path.parent))
        except NotebookError as e:
            return False, f"the capstone uses your functions of notebooks {', '.join(CAPSTONE_SOURCES)}: {e}"
        absent = [f for f in CAPSTONE_PIECES if f not in namespace]
        if absent:
            return False, (f"the capstone needs your {', '.join(absent)} from notebooks "
                           f"{', '.join(CAPSTONE_SOURCES)} in the same folder ({path.parent}); not found there")
    problems += execute_definitions(parts, namespace, path.name)
    missing = [f for f in exercise.functions if not callable(namespace.get(f))]
    if missing:
        where = " (the capstone also reads notebooks " + ", ".join(CAPSTONE_SOURCES) + " beside it)" \
            if exercise.notebook == CAPSTONE else ""
        return False, (f"no function {', '.join(missing)} in the notebook{where}"
                       + ("; " + "; ".join(problems[:3]) if problems else ""))
    check = getattr(checks, exercise.check, None) or getattr(capstone, exercise.check)
    try:
        check(*(namespace[f] for f in exercise.functions), exercise=exercise.id)
    except NotImplementedError as e:
        return False, f"not written yet (NotImplementedError: {e})"
    except checks.ExerciseFailed as e:
        return False, str(e).split("\n", 1)[-1]
    except Exception as e:  # noqa: BLE001  (the student's code raised: report it, as the check cell would)
        return False, f"your code raised {type(e).__name__}: {e}"
    return True, ""


def grade_notebook(path, timeout: float = DEFAULT_TIMEOUT_S) -> list:
    """Grade every exercise of the notebook ``path``, each in a fresh process with a time limit."""
    import time

    path = Path(path)
    nb = read_notebook(path)
    number = notebook_number(path, nb)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "MPLBACKEND": "agg", "SHALLOWCNN_TUTORIAL_QUICK": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    grades = []
    for exercise in for_notebook(number):
        start = time.perf_counter()
        try:
            argv = [sys.executable, "-m", "shallowcnn.grading.notebook", str(path.resolve()), exercise.id]
            done = subprocess.run(argv,
                                  capture_output=True, text=True, timeout=timeout, env=env, cwd=path.parent,
                                  check=False)
            last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            try:
                passed, message = json.loads(last)
            except (json.JSONDecodeError, ValueError, TypeError):
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                passed, message = False, f"the grading process ended with status {done.returncode}: {tail}"
        except subprocess.TimeoutExpired:
            passed, message = False, f"timed out after {timeout:g} s (an endless loop, or far too slow?)"
        grades.append(Grade(str(path), exercise, bool(passed), message, time.perf_counter() - start))
    return grades


def format_table(grades) -> str:
    """One notebook's grades as a plain-text table, with its total (the CSV has the full messages)."""
    if not grades:
        return ""
    lines = [grades[0].notebook, f"  {'exercise':<9}{'title':<46}{'result':<8}{'points':>7}  message"]
    for g in grades:               # the likely cause if the check named one, else the message's first line
        said = g.message.splitlines()
        message = next((line for line in said if line.startswith("Likely cause")), said[0] if said else "")
        lines.append(f"  {g.exercise.id:<9}{g.exercise.title[:45]:<46}{'passed' if g.passed else 'FAILED':<8}"
                     f"{g.points:>3}/{g.exercise.points:<3}  {message[:110]}")
    total, best = sum(g.points for g in grades), sum(g.exercise.points for g in grades)
    lines.append(f"  {sum(g.passed for g in grades)} of {len(grades)} exercises passed, {total}/{best} points")
    return "\n".join(lines)


def csv_text(grades) -> str:
    """The grades as CSV, one row per exercise (the full message, newlines and all, quoted)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for g in grades:
        writer.writerow([g.notebook, g.exercise.id, str(g.passed).lower(), g.points, g.exercise.points, g.message])
    return out.getvalue()


if __name__ == "__main__":      # the worker process of grade_notebook: prints [passed, message] as JSON
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):        # the student's prints must not hide the verdict
        result = run_exercise(sys.argv[1], sys.argv[2])
    print(json.dumps(result))
