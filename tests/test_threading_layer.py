"""Numba's threading layer for the CPU kernels (kernels/threading_layer.py, `shallowcnn tune`'s measurement).

The rule is worked by hand; the record's round trip and validation go through a temporary
file of choices; the measurement's plumbing runs with fake timings; and one new process
shows that a saved choice is the layer Numba actually runs (and that the user's variable wins).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

from shallowcnn.commands import tune  # noqa: E402
from shallowcnn.kernels import autotune, autotune_cache, thread_placement, threading_layer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HAS_OMP = threading_layer.available("omp")


@pytest.fixture
def fresh(tune_cache_file, monkeypatch):
    """An empty file of choices in tmp_path (conftest.py), and no threading layer asked for."""
    for name in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"):
        monkeypatch.delenv(name, raising=False)
    return tune_cache_file


WQ, PINNED, OMP = {"layer": "workqueue", "pinned": False}, {"layer": "workqueue", "pinned": True}, \
    {"layer": "omp", "pinned": False}


def test_omp_only_where_it_wins_clearly_and_loses_nowhere():
    """Speed-ups per piece (workqueue's ms / omp's): geometric mean >= 1.05, none below 1 / 1.05."""
    wq = {"infer 144": 48.0, "infer 60": 12.0}
    assert threading_layer.decide({"workqueue": wq, "omp": {"infer 144": 46.0, "infer 60": 8.0}}) == OMP
    # faster at 60, but 52.2 > 1.05 x 48 at 144: the machine of benchmarks/README.md's fifth round, warm
    assert threading_layer.decide({"workqueue": {"infer 144": 48.0, "infer 60": 8.7},
                                   "omp": {"infer 144": 52.2, "infer 60": 8.3}}) == WQ
    # speed-ups 1.032 and 1.026: not clear
    assert threading_layer.decide({"workqueue": wq, "omp": {"infer 144": 46.5, "infer 60": 11.7}}) == WQ
    # 1.0526 both
    assert threading_layer.decide({"workqueue": wq, "omp": {"infer 144": 45.6, "infer 60": 11.4}}) == OMP
    assert threading_layer.decide({"workqueue": wq, "omp": wq}) == WQ


def test_pinned_threads_by_the_same_rule_and_the_fastest_clear_winner_wins():
    wq = {"infer 144": 48.0, "infer 60": 12.0}
    pinned = {"infer 144": 47.0, "infer 60": 9.0}                     # speed-ups 1.02, 1.33: geometric mean 1.17
    omp = {"infer 144": 46.0, "infer 60": 8.0}                        # 1.04, 1.5: 1.25
    assert threading_layer.decide({"workqueue": wq, "workqueue pinned": pinned}) == PINNED
    assert threading_layer.decide({"workqueue": wq, "workqueue pinned": pinned, "omp": omp}) == OMP
    assert threading_layer.decide({"workqueue": wq, "workqueue pinned": omp, "omp": pinned}) == PINNED
    # the fastest, but 12.8 > 1.05 x 12 at 60: only the other one qualifies
    assert threading_layer.decide({"workqueue": wq, "workqueue pinned": {"infer 144": 40.0, "infer 60": 12.8},
                                   "omp": omp}) == OMP
    assert threading_layer.decide({"workqueue": wq, "workqueue pinned": wq, "omp": wq}) == WQ
    # each piece counts alike, whatever its milliseconds: 60 x 60 10% faster, 144 x 144 the same
    # (geometric mean 1.049 < 1.05), then 12% faster (1.058)
    assert threading_layer.decide({"workqueue": wq, "workqueue pinned": {"infer 144": 48.0, "infer 60": 10.91}}) == WQ
    faster = {"infer 144": 48.0, "infer 60": 10.71}
    assert threading_layer.decide({"workqueue": wq, "workqueue pinned": faster}) == PINNED


def test_the_geometric_mean():
    assert threading_layer.geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
    assert threading_layer.geometric_mean([1.5]) == pytest.approx(1.5)


def test_the_layer_round_trips_beside_the_width_and_the_choices(fresh):
    layer = {"layer": "omp", "wall_ms": {"workqueue": {"infer 60": 12.0}, "omp": {"infer 60": 8.0}}}
    width = {"bits": 256, "cpu_ms": {"256": {"infer 60": 3.0}, "512": {"infer 60": 3.1}}}
    autotune_cache.save_vector_width(width)
    autotune_cache.save_threading_layer(layer)
    autotune_cache.save_choice("s", {"variant": "f4r1", "cpu_ms": {"f4r1": 1.0}})    # keeps both
    autotune_cache.forget()
    assert autotune_cache.read_threading_layer() == layer and autotune_cache.read_vector_width() == width
    saved = json.loads(fresh.read_text())
    assert saved["threading_layer"] == layer and set(saved["choices"]) == {"s"}


@pytest.mark.parametrize("layer", [{"layer": "tbb"}, {"layer": None}, "omp", {"wall_ms": {}},
                                   {"layer": "workqueue", "pinned": "yes"}])
def test_a_malformed_layer_is_no_cache_with_a_warning(fresh, capsys, layer):
    fresh.write_text(json.dumps({"identity": autotune.identity(), "choices": {}, "threading_layer": layer}))
    assert autotune_cache.read_threading_layer() is None
    err = capsys.readouterr().err
    assert str(fresh) in err and '"threading_layer" is not {"layer": "workqueue" or "omp", "pinned"' in err


def test_who_decides(fresh, monkeypatch):
    assert threading_layer.choose() == {"layer": "workqueue",
                                        "how": "the default (not measured on this machine: `shallowcnn tune`)"}
    autotune_cache.save_threading_layer({"layer": "omp", "wall_ms": {}})
    monkeypatch.setattr(threading_layer, "available", lambda layer: True)
    assert threading_layer.choose() == {"layer": "omp", "how": "measured by `shallowcnn tune`"}
    monkeypatch.setattr(threading_layer, "available", lambda layer: layer != "omp")
    assert threading_layer.choose()["layer"] == "workqueue"                # measured here, but does not load
    monkeypatch.setenv("NUMBA_THREADING_LAYER", "tbb")
    assert threading_layer.choose() == {"layer": None, "how": "set by NUMBA_THREADING_LAYER"}


def test_tune_measures_every_configuration_saves_and_prints_the_choice(fresh, monkeypatch, capsys):
    """The measurement's plumbing, with fake timings for the processes: the mean of the rounds counts."""
    monkeypatch.setattr(threading_layer, "available", lambda layer: True)
    monkeypatch.setattr(thread_placement, "possible", lambda layer, threads: None)
    monkeypatch.setattr(tune, "LAYER_ROUNDS", 2)
    fake = {"workqueue": {"infer 144": 48.0, "infer 60": 12.0},
            "workqueue pinned": {"infer 144": 47.5, "infer 60": 9.0}, "omp": {"infer 144": 47.0, "infer 60": 8.0}}
    asked = []

    def time_in_child(config):                # omp's second process is 1.5x slower: its mean is 1.25x
        asked.append(config)
        return {k: v * (1.5 if config == "omp" and len(asked) > 3 else 1) for k, v in fake[config].items()}

    rec = tune.measure_threading_layer(time_in_child, threads=2)
    assert asked == ["workqueue", "workqueue pinned", "omp"] * 2
    # omp: 58.75 > 1.05 x 48 at 144, out; pinned: speed-ups 48 / 47.5 and 12 / 9, geometric mean 1.16
    omp_mean = {"infer 144": 58.75, "infer 60": 10.0}
    assert rec == {"layer": "workqueue", "pinned": True,
                   "wall_ms": {"workqueue": fake["workqueue"], "workqueue pinned": fake["workqueue pinned"],
                               "omp": omp_mean}}
    assert autotune_cache.read_threading_layer() == rec
    out = capsys.readouterr().out
    assert "infer 60" in out and "(1.33x)" in out and "(0.82x)" in out and "(1.16x)" in out
    assert "-> workqueue pinned for" in out


def test_tune_leaves_out_what_cannot_run_here(fresh, monkeypatch, capsys):
    """No OpenMP: workqueue free against pinned; pinning impossible: workqueue against omp."""
    fake = {"workqueue": {"infer 60": 12.0}, "workqueue pinned": {"infer 60": 9.0}, "omp": {"infer 60": 11.9}}
    asked = []
    monkeypatch.setattr(threading_layer, "available", lambda layer: layer == "workqueue")
    monkeypatch.setattr(thread_placement, "possible", lambda layer, threads: None)
    rec = tune.measure_threading_layer(lambda c: asked.append(c) or fake[c], threads=2)
    assert set(asked) == {"workqueue", "workqueue pinned"} and rec["layer"] == "workqueue" and rec["pinned"]
    assert "-> workqueue pinned for" in capsys.readouterr().out
    asked.clear()
    monkeypatch.setattr(threading_layer, "available", lambda layer: True)
    monkeypatch.setattr(thread_placement, "possible", lambda layer, threads: "4 Numba threads but 2 CPUs")
    rec = tune.measure_threading_layer(lambda c: asked.append(c) or fake[c], threads=2)
    assert set(asked) == {"workqueue", "omp"} and rec == {"layer": "workqueue", "pinned": False,
                                                          "wall_ms": {"workqueue": fake["workqueue"],
                                                                      "omp": fake["omp"]}}


def test_tune_measures_nothing_with_one_thread_without_a_choice_or_under_the_users_layer(fresh, monkeypatch,
                                                                                        capsys):
    never = lambda config: pytest.fail("timed")                          # noqa: E731
    assert tune.measure_threading_layer(never, threads=1) is None
    assert "one thread" in capsys.readouterr().out
    monkeypatch.setattr(threading_layer, "available", lambda layer: layer == "workqueue")
    monkeypatch.setattr(thread_placement, "possible", lambda layer, threads: "not Linux")
    assert tune.measure_threading_layer(never, threads=2) is None
    assert "no OpenMP layer" in capsys.readouterr().out
    monkeypatch.setattr(threading_layer, "available", lambda layer: True)
    monkeypatch.setenv("NUMBA_THREADING_LAYER", "workqueue")
    assert tune.measure_threading_layer(never, threads=2) is None
    assert "NUMBA_THREADING_LAYER is set" in capsys.readouterr().out
    assert not fresh.exists()


PROBE = """
import json, numba, numpy as np
from shallowcnn.kernels import autotune_cache, cpu
x = np.random.default_rng(0).random((2, 1, 20, 20)).astype(np.float32)
W = np.random.default_rng(1).random((6, 1, 9, 9)).astype(np.float32)
cpu.conv2d_forward(x, W, np.zeros(6, np.float32))
print(json.dumps({"running": numba.threading_layer(), "chosen": cpu.THREADING}))
"""


@pytest.fixture(scope="module")
def child_cache(tmp_path_factory):
    """One Numba cache folder for the new processes of this module: the first compiles the
    kernel it runs, the second loads it."""
    return tmp_path_factory.mktemp("numba-cache")


@pytest.mark.skipif(not HAS_OMP, reason="Numba has no OpenMP layer here")
@pytest.mark.parametrize("env, expected", [(None, "omp"), ("workqueue", "workqueue")])
def test_a_new_process_runs_the_saved_layer_unless_the_user_says_otherwise(child_cache, env, expected):
    """A saved omp is what Numba runs; NUMBA_THREADING_LAYER wins over it. The file of choices
    lies where a new process looks for it: beside the kernels' Numba cache, which
    NUMBA_CACHE_DIR moves (autotune_cache.cache_path)."""
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(child_cache), autotune.ENV: "g3",   # no timing in the child
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"):
        environment.pop(name, None)
    find = subprocess.run([sys.executable, "-c", "from shallowcnn.kernels import autotune_cache; "
                           "print(autotune_cache.cache_path())"], env=environment, capture_output=True, text=True)
    assert find.returncode == 0, find.stderr
    path = Path(find.stdout.strip().splitlines()[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"identity": autotune.identity(), "choices": {},
                                "threading_layer": {"layer": "omp", "wall_ms": {}}}))
    if env:
        environment["NUMBA_THREADING_LAYER"] = env
    r = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["running"] == expected
    assert out["chosen"]["layer"] == (None if env else "omp")
