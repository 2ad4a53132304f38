"""The tutorials run top to bottom, and every check cell asserts.

Each notebook in ``tutorials/`` is executed with nbclient in a fresh kernel, in a
temporary folder, with ``SHALLOWCNN_TUTORIAL_QUICK=1`` (small sizes, few epochs; the
PyTorch/Keras comparison of notebook 8 stays off). A failing ``assert`` in any cell
fails the test. The stored notebooks must also match their sources in
``tutorials/src/`` (rebuild with ``python tutorials/build_notebooks.py --execute``).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
TIME_LIMIT_S = 120          # per notebook, quick mode, on a 2-core machine

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("nbclient", "nbformat", "ipykernel")),
    reason="the tutorial tests need nbclient, nbformat and ipykernel (pip install '.[test]')")


def _builder():
    sys.path.insert(0, str(TUTORIALS))
    try:
        import build_notebooks
    finally:
        sys.path.pop(0)
    return build_notebooks


def test_every_source_has_a_stored_notebook():
    b = _builder()
    assert [b.target(s).name for s in b.sources()] == [n.name for n in NOTEBOOKS]
    assert len(NOTEBOOKS) == 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_matches_its_source_and_has_outputs(path):
    import nbformat

    b = _builder()
    built = b.build(b.SRC / f"{path.stem}.py")
    stored = nbformat.read(path, as_version=4)
    assert [c.source for c in stored.cells] == [c.source for c in built.cells], \
        f"{path.name} is out of date: run python tutorials/build_notebooks.py --execute {path.stem[:2]}"
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{path.name} is stored unexecuted"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    checks = [c for c in code if "check" in c.metadata.get("tags", [])]
    assert len(checks) >= 3 and all("assert" in c.source for c in checks)
    assert any("Exercises" in c.source for c in stored.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_its_checks_pass(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("SHALLOWCNN_TUTORIAL_QUICK", "1")
    monkeypatch.delenv("SHALLOWCNN_TUTORIAL_PEERS", raising=False)
    monkeypatch.delenv("SHALLOWCNN_TUTORIAL_MODEL", raising=False)
    monkeypatch.setenv("MPLBACKEND", "agg")
    # the kernel must import this checkout's package even when it is not installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    print(f"{path.stem}: {seconds:.1f} s")
    assert seconds < TIME_LIMIT_S * (2 if os.environ.get("CI") else 1.5), f"{path.name} took {seconds:.0f} s"
