r"""Build the tutorial notebooks from their sources in ``tutorials/src/``.

Each source is a Python file in the "percent" format (the one jupytext reads)::

    # %% [markdown]
    # Prose with $\LaTeX$, every line behind "# ".
    # %%
    x = 1 + 1                      # a code cell
    # %% check
    assert x == 2                  # a check cell (tagged "check": it must assert)

so the notebooks can be read, diffed and reviewed as plain text. This script turns
them into ``tutorials/NN_name.ipynb`` and, with ``--execute``, runs them top to
bottom (nbclient) and stores them with their outputs and figures::

    python tutorials/build_notebooks.py                  # write the .ipynb, unexecuted
    python tutorials/build_notebooks.py --execute        # write and execute (full sizes)
    python tutorials/build_notebooks.py --execute 07     # only the notebooks matching "07"
    python tutorials/build_notebooks.py --execute --quick   # SHALLOWCNN_TUTORIAL_QUICK=1

The tests (``tests/test_tutorials.py``) execute the notebooks in quick mode.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
KERNEL = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
_MARKER = re.compile(r"^# %%(.*)$")


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


def build(src: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = parse(src.read_text(encoding="utf-8"))
    # Stable cell ids, so that rebuilding does not rewrite every cell.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{src.stem[:2]}-{i:03d}"
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb, quick: bool, timeout: int = 1200):
    """Run ``nb`` in place in a fresh kernel, in a temporary working folder."""
    from nbclient import NotebookClient

    env_before = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK")
    os.environ["SHALLOWCNN_TUTORIAL_QUICK"] = "1" if quick else "0"
    try:
        with tempfile.TemporaryDirectory(prefix="shallowcnn-tutorial-") as work:
            client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": work}})
            client.execute()
    finally:
        if env_before is None:
            os.environ.pop("SHALLOWCNN_TUTORIAL_QUICK", None)
        else:
            os.environ["SHALLOWCNN_TUTORIAL_QUICK"] = env_before
    return nb


def target(src: Path) -> Path:
    return HERE / f"{src.stem}.ipynb"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="build only the sources whose name contains one of these")
    ap.add_argument("--execute", action="store_true", help="execute and store outputs")
    ap.add_argument("--quick", action="store_true", help="execute with SHALLOWCNN_TUTORIAL_QUICK=1")
    args = ap.parse_args(argv)
    chosen = [s for s in sources() if not args.only or any(o in s.name for o in args.only)]
    if not chosen:
        print("no notebook source matches", args.only, file=sys.stderr)
        return 2
    failed = []
    for src in chosen:
        nb = build(src)
        if args.execute:
            from nbclient.exceptions import CellExecutionError

            t0 = time.perf_counter()
            try:
                execute(nb, args.quick)
            except CellExecutionError as e:
                failed.append(src.stem)
                print(f"{src.stem}: FAILED\n{str(e)[-3000:]}", file=sys.stderr)
            print(f"{src.stem}: executed in {time.perf_counter() - t0:.1f} s"
                  f"{' (quick)' if args.quick else ''}", flush=True)
        nbformat.validate(nb)
        nbformat.write(nb, target(src))
        print(f"wrote {target(src).relative_to(HERE.parent)}{' (with the error)' if src.stem in failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
