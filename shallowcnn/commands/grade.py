"""``shallowcnn grade NOTEBOOK... [-o grades.csv]``: grade student notebooks (the logic is in
:mod:`shallowcnn.grading.notebook`; this module only reads the options and prints)."""
from __future__ import annotations

import sys
from pathlib import Path


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "grade", help="grade student notebooks (tutorials/exercises/*.ipynb): a table and a CSV",
        description="Grade each exercise of each student notebook with the package's own checks (the notebook's "
                    "check cells are not used), each in a fresh process with a time limit. Exit status 0 only "
                    "when every exercise passes.")
    p.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="student notebooks, e.g. submissions/*/0*.ipynb")
    p.add_argument("-o", "--output", metavar="CSV", help="write the grades here (notebook, exercise, passed, "
                                                         "points, max_points, message), atomically")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds allowed per exercise (default 120)")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    from ..grading.notebook import (
        DEFAULT_TIMEOUT_S,
        NotebookError,
        csv_text,
        format_table,
        grade_notebook,
    )
    from ..storage import atomic_write_text

    timeout = DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout
    if timeout <= 0:
        print("--timeout must be positive", file=sys.stderr)
        return 2
    all_grades, bad = [], []
    for path in args.notebooks:
        try:
            grades = grade_notebook(Path(path), timeout=timeout)
        except NotebookError as e:
            print(f"error: {e}", file=sys.stderr)
            bad.append(path)
            continue
        print(format_table(grades) if grades else f"{path}: a tutorial notebook without exercises", flush=True)
        all_grades += grades
    if args.output:
        atomic_write_text(args.output, csv_text(all_grades))
        print(f"wrote {args.output} ({len(all_grades)} rows)")
    passed = sum(g.passed for g in all_grades)
    print(f"{passed} of {len(all_grades)} exercises passed"
          + (f"; {len(bad)} file(s) could not be graded: {', '.join(bad)}" if bad else ""))
    return 0 if all_grades and passed == len(all_grades) and not bad else 1
