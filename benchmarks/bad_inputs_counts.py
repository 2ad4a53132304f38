"""Count the issue-25 bad-input cases that pass, by class, on a checkout (before/after).

    python benchmarks/bad_inputs_counts.py ROOT [--tests TESTS_DIR] [--timeout S]

runs the issue-25 test files of TESTS_DIR (default: this checkout's tests/) against the
package in ROOT (PYTHONPATH=ROOT; the files are copied into ROOT/tests first when
ROOT is another checkout, e.g. ``git archive <commit> | tar -x -C /tmp/base``), with a
per-test time limit (a hang counts as a failure), and prints passed/total per class.
Numba's CUDA simulator runs the cuda race test in a process of its own.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

FILES = ["test_bad_inputs_web.py", "test_bad_inputs_keras.py", "test_bad_inputs_dask.py",
         "test_bad_inputs_search.py", "test_bad_inputs_runs.py"]
SHARED = ["bad_inputs_common.py"]
CUDA = "cuda_sim/test_cuda_kernels_sim.py"

PLUGIN = '''
import signal, pytest
LIMIT = int(__import__("os").environ.get("COUNT_TIMEOUT", "90"))
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    def alarm(signum, frame):
        pytest.fail(f"hung for {LIMIT} s", pytrace=False)
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
'''


def classify(file: str, name: str) -> str:
    if "cuda" in file:
        return "1 cuda reduction race"
    if "web" in file:
        return "2 web server"
    if "keras" in file:
        return "3 import-keras"
    if "dask" in file:
        return "4 --scheduler / Dask options"
    if "search" in file:
        return "5 search"
    if "ctrl_c" in name:
        return "6 Ctrl-C in evaluate"
    if "cache" in name:
        return "7 tune cache"
    if "resume" in name or "kill" in name:
        return "8 resume"
    return "9 names, disk full"


def run(root: Path, tests: Path, timeout: int) -> Counter:
    target = root / "tests"
    if target.resolve() != tests.resolve():
        for name in FILES + SHARED:
            shutil.copy(tests / name, target / name)
        shutil.copy(tests / CUDA, target / CUDA)
    passed, total, failed = Counter(), Counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "count_timeout.py").write_text(PLUGIN)
        for files, extra_env in ((FILES, {}), ([CUDA], {"NUMBA_ENABLE_CUDASIM": "1"})):
            xml = Path(tmp) / "junit.xml"
            env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{tmp}", "COUNT_TIMEOUT": str(timeout),
                   "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "2"), **extra_env}
            args = [sys.executable, "-m", "pytest", "-q", "-p", "count_timeout", "-p", "no:cacheprovider",
                    f"--junitxml={xml}", *[f"tests/{f}" for f in files]]
            if files == [CUDA]:
                args += ["-k", "thread_timing"]
            subprocess.run(args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for case in ET.parse(xml).getroot().iter("testcase"):
                if case.find("skipped") is not None:
                    continue
                label = classify(case.get("classname", ""), case.get("name", ""))
                total[label] += 1
                if case.find("failure") is None and case.find("error") is None:
                    passed[label] += 1
                else:
                    failed.append(f"{case.get('classname')}::{case.get('name')}")
    return Counter({k: (passed[k], total[k]) for k in total}), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--tests", type=Path, default=Path(__file__).resolve().parents[1] / "tests")
    parser.add_argument("--timeout", type=int, default=90)
    args = parser.parse_args()
    counts, failed = run(args.root.resolve(), args.tests.resolve(), args.timeout)
    for label in sorted(counts):
        ok, n = counts[label]
        print(f"{label:32s} {ok:3d} / {n:3d} pass")
    print(f"{'all':32s} {sum(v[0] for v in counts.values()):3d} / {sum(v[1] for v in counts.values()):3d} pass")
    for name in failed:
        print(f"failed: {name}")


if __name__ == "__main__":
    main()
