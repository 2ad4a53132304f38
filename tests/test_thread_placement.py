"""Numba's worker threads pinned to a CPU each (kernels/thread_placement.py, kernels/affinity.py).

Who decides and the CPU masks are worked by hand; a new process with SHALLOWCNN_PIN_THREADS=1
shows what the operating system reports afterwards: each worker thread may run on exactly
one CPU, the w-th of the process's, and a parallel loop's task w runs there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba")

from shallowcnn.kernels import autotune_cache, thread_placement  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, expected", [("", None), ("1", True), ("0", False), (" 1 ", True)])
def test_the_users_variable(monkeypatch, value, expected):
    monkeypatch.setenv(thread_placement.ENV, value)
    assert thread_placement.user_choice() is expected


def test_a_bad_value_names_the_variable(monkeypatch, capsys):
    from shallowcnn.cli import main
    monkeypatch.setenv(thread_placement.ENV, "yes")
    with pytest.raises(ValueError, match="SHALLOWCNN_PIN_THREADS='yes'"):
        thread_placement.user_choice()
    assert main(["tune", "--show"]) == 2                 # the command line says so before any work
    err = capsys.readouterr().err
    assert "shallowcnn tune: error: SHALLOWCNN_PIN_THREADS='yes': use 1" in err and "Traceback" not in err


def test_masks_set_one_bit_per_thread(monkeypatch):
    """Thread w gets the w-th CPU of the process: bit cpu % 64 of word cpu // 64."""
    monkeypatch.setattr(thread_placement, "cpus", lambda: [0, 3, 70])
    m = thread_placement.masks(3)
    assert m.dtype == np.uint64 and m.shape == (3, 2)
    assert m.tolist() == [[1, 0], [8, 0], [0, 64]]


def test_when_pinning_is_possible(monkeypatch):
    monkeypatch.setattr(thread_placement, "cpus", lambda: [0, 1])
    monkeypatch.setattr(thread_placement.sys, "platform", "linux")
    assert thread_placement.possible("workqueue", 2) is None
    assert "workqueue" in thread_placement.possible("omp", 2)
    assert "3 Numba threads but 2 CPUs" in thread_placement.possible("workqueue", 3)
    monkeypatch.setattr(thread_placement.sys, "platform", "darwin")
    assert "Linux" in thread_placement.possible("workqueue", 2)


def test_who_decides(tune_cache_file, monkeypatch):
    monkeypatch.delenv(thread_placement.ENV, raising=False)
    assert thread_placement.choose() == {"pinned": False,
                                         "how": "the default (not measured on this machine: `shallowcnn tune`)"}
    autotune_cache.save_threading_layer({"layer": "workqueue", "pinned": True, "wall_ms": {}})
    assert thread_placement.choose() == {"pinned": True, "how": "measured by `shallowcnn tune`"}
    autotune_cache.save_threading_layer({"layer": "omp", "wall_ms": {}})           # an older record: not pinned
    assert thread_placement.choose()["pinned"] is False
    monkeypatch.setenv(thread_placement.ENV, "1")
    assert thread_placement.choose() == {"pinned": True, "how": "set by SHALLOWCNN_PIN_THREADS"}


PROBE = """
import json, numpy as np
from shallowcnn.kernels import cpu, thread_placement
from shallowcnn.kernels.affinity import task_cpus
where = np.zeros(2, np.int32)
task_cpus(where)
allowed = {}
import os
for tid in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{tid}/status") as f:
        allowed[tid] = [line.split(":", 1)[1].strip() for line in f if line.startswith("Cpus_allowed_list")][0]
print(json.dumps({"placement": cpu.PLACEMENT, "tasks": where.tolist(), "allowed": sorted(allowed.values()),
                  "cpus": thread_placement.cpus()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(thread_placement.cpus()) < 2,
                    reason="pinning needs Linux and two CPUs")
@pytest.mark.parametrize("pin", ["1", "0"])
def test_a_new_process_pins_its_threads_when_asked(tmp_path, pin):
    env = {**os.environ, thread_placement.ENV: pin, "NUMBA_NUM_THREADS": "2", "NUMBA_THREADING_LAYER": "workqueue",
           "NUMBA_CACHE_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    first_two = [str(c) for c in out["cpus"][:2]]
    if pin == "1":
        assert out["placement"]["pinned"] is True and out["placement"]["cpus"] == out["cpus"][:2]
        assert out["tasks"] == out["cpus"][:2]                 # task w ran on the w-th CPU, as pinned
        assert sorted(a for a in out["allowed"] if a in first_two) == sorted(first_two)   # one thread on each
    else:
        assert out["placement"]["pinned"] is False
        assert not any(a in first_two for a in out["allowed"])  # no thread limited to one CPU


def test_a_refusal_leaves_the_threads_free(monkeypatch):
    """If the OS refuses (a container may), apply() says why and the process goes on unpinned."""
    monkeypatch.setenv(thread_placement.ENV, "1")
    monkeypatch.setattr(thread_placement, "possible", lambda layer, threads: None)

    def refuse(threads):
        raise OSError("sched_setaffinity refused to pin Numba's threads (status [-1, -1])")

    monkeypatch.setattr(thread_placement, "pin", refuse)
    monkeypatch.setattr(thread_placement, "applied", None)
    got = thread_placement.apply()
    assert got["pinned"] is False and "refused" in got["how"] and thread_placement.applied == got
