"""The tutorials run top to bottom, every check cell passes, and the student version stops at its stubs.

Each notebook in ``tutorials/`` (the full version, the instructors' key) is executed with
nbclient in a fresh kernel, in a temporary folder, with ``SHALLOWCNN_TUTORIAL_QUICK=1`` (small
sizes, few epochs; the PyTorch/Keras comparison of notebook 8 stays off). A failing check in any
cell fails the test; notebook 7's quick run includes the "overfit one batch" check (the loss on
16 patches must fall below 0.05), so a network that has stopped learning fails here. The stored
notebooks must match their sources in ``tutorials/src/``, carry their provenance and hold no
traceback or stderr output (rebuild with ``python tutorials/build_notebooks.py --execute``);
``tutorials/exercises/`` must hold the student versions, and one of them is executed to check
that it stops at its first stub. The grading itself is tested in ``tests/test_exercises.py``.
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
STUDENT = sorted((TUTORIALS / "exercises").glob("[0-9][0-9]_*.ipynb"))
TIME_LIMIT_S = 120          # per notebook, quick mode, on a 2-core machine

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("nbclient", "nbformat", "ipykernel")),
    reason="the tutorial tests need nbclient, nbformat and ipykernel (pip install '.[test]')")



def _kernel_env(monkeypatch):
    monkeypatch.setenv("SHALLOWCNN_TUTORIAL_QUICK", "1")
    monkeypatch.delenv("SHALLOWCNN_TUTORIAL_PEERS", raising=False)
    monkeypatch.delenv("SHALLOWCNN_TUTORIAL_MODEL", raising=False)
    monkeypatch.setenv("MPLBACKEND", "agg")
    # notebooks 3 and 10 read the student's functions of other notebooks beside them: here, the key's
    monkeypatch.setenv("SHALLOWCNN_NOTEBOOK_DIR", str(TUTORIALS))
    # the kernel must import this checkout's package even when it is not installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_every_source_has_a_stored_notebook_and_a_student_version(tutorial_builder):
    b = tutorial_builder
    assert [b.target(s).name for s in b.sources()] == [n.name for n in NOTEBOOKS]
    assert [n.name for n in STUDENT] == [n.name for n in NOTEBOOKS]
    assert len(NOTEBOOKS) == 10


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_matches_its_source_and_has_clean_outputs(path, tutorial_builder):
    b = tutorial_builder
    import nbformat

    built = b.build(b.SRC / f"{path.stem}.py")
    stored = nbformat.read(path, as_version=4)
    assert [c.source for c in stored.cells] == [c.source for c in built.cells], \
        f"{path.name} is out of date: run python tutorials/build_notebooks.py --execute {path.stem[:2]}"
    code = _code(stored)
    assert all(c.get("execution_count") for c in code), f"{path.name} is stored unexecuted"
    outputs = [o for c in code for o in c.outputs]
    assert not any(o.get("output_type") == "error" for o in outputs)
    assert not any(o.get("name") == "stderr" for o in outputs), f"{path.name} stores stderr (log noise)"
    assert not any("Traceback" in o.get("text", "") for o in outputs)
    prov = stored.metadata["shallowcnn"]["provenance"]
    assert prov["mode"] == "full" and prov["git_commit"] and prov["cpu"] and prov["package_version"]
    checks = [c for c in code if "check" in c.metadata.get("tags", [])]
    assert len(checks) >= 3 and all("assert" in c.source or "grading.check_" in c.source for c in checks)
    markdown = "\n".join(c.source for c in stored.cells if c.cell_type == "markdown")
    assert "Exercises" in markdown or "exercises" in markdown
    assert "**You will learn**" in markdown and "## Takeaways" in markdown


@pytest.mark.parametrize("path", STUDENT, ids=lambda p: p.stem)
def test_student_version_has_stubs_and_no_outputs(path, tutorial_builder):
    b = tutorial_builder
    import nbformat

    src = b.SRC / f"{path.stem}.py"
    stored = nbformat.read(path, as_version=4)
    assert [c.source for c in stored.cells] == [c.source for c in b.build(src, student=True).cells], \
        f"{path.name} is out of date: run python tutorials/build_notebooks.py"
    assert all(not c.outputs and not c.get("execution_count") for c in _code(stored))
    stubs = sum(c.source.count("raise NotImplementedError(") for c in _code(stored))
    exercises = b.exercises_in(src.read_text(encoding="utf-8"))
    assert stubs == len(exercises)
    assert not any("BEGIN SOLUTION" in c.source or "END SOLUTION" in c.source for c in stored.cells)
    for ex in exercises:                                # the solution itself is gone
        body = "\n".join(ex["solution"])
        assert not any(body in c.source for c in _code(stored)), ex["id"]


def test_at_least_sixteen_exercises_in_notebooks_two_to_seven_and_the_capstone(tutorial_builder):
    b = tutorial_builder
    per = {s.stem[:2]: len(b.exercises_in(s.read_text(encoding="utf-8"))) for s in b.sources()}
    assert sum(per.values()) >= 16
    assert all(per[n] >= 1 for n in ("02", "03", "04", "05", "06", "07", "10")), per
    for s in b.sources():
        for ex in b.exercises_in(s.read_text(encoding="utf-8")):
            assert ex["level"] in ("easy", "medium", "hard") and 0 < ex["minutes"] <= 30 and ex["hint"]


def test_a_malformed_solution_block_is_refused(tutorial_builder):
    b = tutorial_builder
    with pytest.raises(ValueError, match="BEGIN SOLUTION"):
        b.exercises_in("    # BEGIN SOLUTION 2.1 easy 5 min\n    pass\n    # END SOLUTION\n")
    with pytest.raises(ValueError, match="no END SOLUTION"):
        b.exercises_in("    # BEGIN SOLUTION 2.1 | easy | 5 min | hint\n    pass\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_its_checks_pass(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    _kernel_env(monkeypatch)
    nb = nbformat.read(path, as_version=4)
    for cell in _code(nb):
        cell.outputs, cell.execution_count = [], None
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    print(f"{path.stem}: {seconds:.1f} s")
    assert seconds < TIME_LIMIT_S * (2 if os.environ.get("CI") else 1.5), f"{path.name} took {seconds:.0f} s"


def _run_until_error(nb, tmp_path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError) as err:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    failed = next(c for c in _code(nb) if any(o.get("output_type") == "error" for o in c.outputs))
    return err.value, failed


def test_student_notebook_stops_at_its_first_stub(tmp_path, monkeypatch):
    import nbformat

    _kernel_env(monkeypatch)
    nb = nbformat.read(TUTORIALS / "exercises" / "02_convolution_forward.ipynb", as_version=4)
    error, failed = _run_until_error(nb, tmp_path)
    assert error.ename == "NotImplementedError" and "Exercise 2.1" in error.evalue
    first_stub = next(c for c in _code(nb) if "raise NotImplementedError" in c.source)
    assert _code(nb).index(failed) > _code(nb).index(first_stub)      # where conv2d_loops is first called


def test_a_planted_wrong_answer_fails_its_check_cell_with_the_cause(tmp_path, monkeypatch):
    import nbformat

    _kernel_env(monkeypatch)
    nb = nbformat.read(TUTORIALS / "exercises" / "02_convolution_forward.ipynb", as_version=4)
    cell = next(c for c in _code(nb) if "def conv2d_loops(" in c.source)
    cell.source = (cell.source.split("    # Exercise 2.1")[0] +
                   "    for n in range(N):\n        for f in range(F):\n"
                   "            for i in range(H - K + 1):\n                for j in range(Wd - K + 1):\n"
                   "                    out[n, f, i, j] = b[f] + "
                   "np.sum(W[f].transpose(0, 2, 1) * x[n, :, i:i + K, j:j + K])\n"
                   "    return out\n")
    error, failed = _run_until_error(nb, tmp_path)
    assert "check" in failed.metadata.get("tags", [])
    assert error.ename == "ExerciseFailed" and "Exercise 2.1" in error.evalue and "transposed" in error.evalue
