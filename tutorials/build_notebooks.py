r"""Build the tutorial notebooks from their sources in ``tutorials/src/``.

Each source is a Python file in the "percent" format (the one jupytext reads)::

    # %% [markdown]
    # Prose with $\LaTeX$, every line behind "# ".
    # %%
    x = 1 + 1                      # a code cell
    # %% check
    assert x == 2                  # a check cell (tagged "check": it must assert)

so the notebooks can be read, diffed and reviewed as plain text. An exercise is a
solution block inside a code cell::

    def relu_backward(dout, z):
        # BEGIN SOLUTION 3.3 | easy | 5 min | the slope is 1 where z > 0 and 0 elsewhere
        return dout * (z > 0)
        # END SOLUTION

(id, difficulty easy/medium/hard, minutes, a one-line hint). This script writes two sets:

* ``tutorials/NN_name.ipynb``, the full version (the instructors' key): the marker lines
  are dropped and the solution stays; with ``--execute`` it is run top to bottom
  (nbclient) and stored with its outputs, figures and provenance (package version, git
  commit, full or quick mode, CPU) in its metadata. Output on stderr (warnings, framework
  log lines) is printed here and not stored; a traceback fails the build.
* ``tutorials/exercises/NN_name.ipynb``, the student version: every solution block
  becomes ``raise NotImplementedError("Exercise 3.3: <hint>")``, outputs are empty.

::

    python tutorials/build_notebooks.py                  # write both sets, unexecuted
    python tutorials/build_notebooks.py --students       # only the student set (the stored key stays)
    python tutorials/build_notebooks.py --execute        # and execute the full set (full sizes)
    python tutorials/build_notebooks.py --execute 07     # only the notebooks matching "07"
    python tutorials/build_notebooks.py --execute --quick   # SHALLOWCNN_TUTORIAL_QUICK=1

The tests (``tests/test_tutorials.py``) execute the notebooks in quick mode.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = HERE / "src"
EXERCISES = HERE / "exercises"
KERNEL = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
_MARKER = re.compile(r"^# %%(.*)$")
_BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION (?P<id>\d\d?\.\d+) \| (?P<level>easy|medium|hard) "
                    r"\| (?P<minutes>\d+) min \| (?P<hint>\S.*)$")
_END = re.compile(r"^\s*# END SOLUTION\s*$")


def sources() -> list[Path]:
    """The notebook sources, in order (``src/NN_name.py``)."""
    return sorted(SRC.glob("[0-9][0-9]_*.py"))


def parse(text: str) -> list[nbformat.NotebookNode]:
    """Split a percent-format source into notebook cells."""
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines)
            cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines))
            if tags:
                cell.metadata["tags"] = list(tags)
            cells.append(cell)

    for line in text.splitlines():
        m = _MARKER.match(line)
        if m:
            flush()
            spec = m.group(1).strip()
            kind = "markdown" if spec.startswith("[markdown]") else "code"
            tags = ["check"] if spec == "check" else []
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def exercises_in(text: str) -> list[dict]:
    """The solution blocks of a source: id, level, minutes, hint, indent, and the solution lines."""
    found, current = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        begin = _BEGIN.match(line)
        if "BEGIN SOLUTION" in line and not begin:
            raise ValueError(f"line {number}: write '# BEGIN SOLUTION <id> | easy|medium|hard | <n> min | <hint>'")
        if begin:
            if current is not None:
                raise ValueError(f"line {number}: solution {begin['id']} starts inside solution {current['id']}")
            current = {**begin.groupdict(), "minutes": int(begin["minutes"]), "line": number, "solution": []}
        elif _END.match(line):
            if current is None:
                raise ValueError(f"line {number}: END SOLUTION without a BEGIN")
            found.append(current)
            current = None
        elif current is not None:
            current["solution"].append(line)
    if current is not None:
        raise ValueError(f"solution {current['id']} (line {current['line']}) has no END SOLUTION")
    return found


def _stub(ex: dict) -> list[str]:
    pad = ex["indent"]
    return [f"{pad}# Exercise {ex['id']} ({ex['level']}, about {ex['minutes']} min): write this part, "
            "then run the check cell below.",
            f"{pad}raise NotImplementedError({('Exercise ' + ex['id'] + ': ' + ex['hint'])!r})"]


def student_text(text: str) -> str:
    """The source with every solution block replaced by its stub."""
    out, inside = [], False
    for line in text.splitlines():
        begin = _BEGIN.match(line)
        if begin:
            out += _stub({**begin.groupdict()})
            inside = True
        elif _END.match(line):
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out) + "\n"


def key_text(text: str) -> str:
    """The source with the solution markers dropped (the full version)."""
    return "\n".join(l for l in text.splitlines() if not (_BEGIN.match(l) or _END.match(l))) + "\n"


def _check_labels(src: Path, cells, exercises: list[dict]):
    """Every exercise is announced in the text with its difficulty and minutes, and graded after it."""
    prefix = str(int(src.stem[:2]))
    markdown = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    ids = [ex["id"] for ex in exercises]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{src.name}: exercise ids repeat: {ids}")
    for ex in exercises:
        if ex["id"].split(".")[0] != prefix:
            raise ValueError(f"{src.name}: exercise {ex['id']} must be numbered {prefix}.k")
        label = f"Exercise {ex['id']}"
        blurb = next((m.group(0) for m in re.finditer(rf"\*\*{re.escape(label)}\*\*[^\n]*", markdown)), None)
        if blurb is None or ex["level"] not in blurb or f"{ex['minutes']} min" not in blurb:
            raise ValueError(f"{src.name}: announce '**{label}** ({ex['level']}, {ex['minutes']} min) ...' "
                             "in the text before it")


def build(src: Path, student: bool = False) -> nbformat.NotebookNode:
    """The notebook of ``src``: the full version, or with ``student`` the exercise version."""
    text = src.read_text(encoding="utf-8")
    exercises = exercises_in(text)
    nb = nbformat.v4.new_notebook()
    nb.cells = parse(student_text(text) if student else key_text(text))
    if exercises:
        _check_labels(src, nb.cells, exercises)
    if student:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(
            "*Student version.* Each exercise is a function whose body raises `NotImplementedError`: "
            "write it, run its cell, then run the **check** cell after it, which grades your answer "
            "and says what is wrong. Your instructor grades the notebook with `shallowcnn grade`, which "
            "runs the same checks on your functions (editing or deleting a check cell changes nothing)."))
    # Stable cell ids, so that rebuilding does not rewrite every cell.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{src.stem[:2]}-{i:03d}"
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["shallowcnn"] = {"version": "student" if student else "full",
                                 "exercises": [{k: ex[k] for k in ("id", "level", "minutes", "hint")}
                                               for ex in exercises]}
    return nb


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(quick: bool) -> dict:
    """What produced the stored outputs: package, commit, mode, machine."""
    sys.path.insert(0, str(ROOT))
    try:
        import numba
        import numpy
        import shallowcnn
    finally:
        sys.path.pop(0)
    changed = _git("status", "--porcelain", "--", "shallowcnn", "tutorials/src")
    return {"package_version": shallowcnn.__version__,
            "git_commit": _git("rev-parse", "HEAD") + ("+uncommitted changes" if changed else ""),
            "mode": "quick" if quick else "full",
            "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": numpy.__version__, "numba": numba.__version__,
            "executed_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")}


def clean_outputs(nb, name: str) -> list[str]:
    """Drop stderr streams (printed here instead); return the problems that must fail the build."""
    problems = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                print(f"{name} [{cell.get('id')}] stderr, not stored:\n{out.get('text', '')[-1500:]}", file=sys.stderr)
                continue
            text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
            if out.get("output_type") == "error" or "Traceback (most recent call last)" in text:
                problems.append(f"{name} [{cell.get('id')}]: a traceback in the output")
            kept.append(out)
        cell.outputs = kept
    return problems


def execute(nb, quick: bool, timeout: int = 1200):
    """Run ``nb`` in place in a fresh kernel, in a temporary working folder."""
    from nbclient import NotebookClient

    settings = {"SHALLOWCNN_TUTORIAL_QUICK": "1" if quick else "0",
                "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                "TF_CPP_MIN_LOG_LEVEL": "3",           # TensorFlow's start-up chatter (notebook 8's peers)
                # notebook 10 reads the functions of notebooks 02-06 beside it: here, the key's
                "SHALLOWCNN_NOTEBOOK_DIR": str(HERE),
                # the kernel imports this checkout's package even when it is not installed
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="shallowcnn-tutorial-") as work:
            client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": work}})
            client.execute()
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def target(src: Path, student: bool = False) -> Path:
    return (EXERCISES if student else HERE) / f"{src.stem}.ipynb"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="build only the sources whose name contains one of these")
    ap.add_argument("--execute", action="store_true", help="execute and store outputs")
    ap.add_argument("--quick", action="store_true", help="execute with SHALLOWCNN_TUTORIAL_QUICK=1")
    ap.add_argument("--students", action="store_true",
                    help="write only tutorials/exercises/ (after a change to hints or text around an "
                         "exercise; the executed key stays as stored)")
    args = ap.parse_args(argv)
    chosen = [s for s in sources() if not args.only or any(o in s.name for o in args.only)]
    if not chosen:
        print("no notebook source matches", args.only, file=sys.stderr)
        return 2
    failed = []
    start = time.perf_counter()
    EXERCISES.mkdir(exist_ok=True)
    for src in chosen:
        student = build(src, student=True)
        nbformat.validate(student)
        nbformat.write(student, target(src, student=True))
        if args.students:
            print(f"wrote {target(src, True).relative_to(ROOT)}")
            continue
        nb = build(src)
        if args.execute:
            from nbclient.exceptions import CellExecutionError

            t0 = time.perf_counter()
            nb.metadata["shallowcnn"]["provenance"] = provenance(args.quick)
            try:
                execute(nb, args.quick)
            except CellExecutionError as e:
                failed.append(src.stem)
                print(f"{src.stem}: FAILED\n{str(e)[-3000:]}", file=sys.stderr)
            problems = clean_outputs(nb, src.stem)
            if problems and src.stem not in failed:
                failed.append(src.stem)
                print("\n".join(problems), file=sys.stderr)
            print(f"{src.stem}: executed in {time.perf_counter() - t0:.1f} s"
                  f"{' (quick)' if args.quick else ''}", flush=True)
        nbformat.validate(nb)
        nbformat.write(nb, target(src))
        print(f"wrote {target(src).relative_to(ROOT)} and {target(src, True).relative_to(ROOT)}"
              f"{' (with the error)' if src.stem in failed else ''}")
    if args.execute:
        print(f"all done in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
