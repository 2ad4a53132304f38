"""Random hyperparameter search: the space, one trial, and whole searches on Dask.

The searches use the path of ``store_path`` (conftest.py: 48 training, 16 validation
patches), a space of tiny networks and the numpy backend (no JIT compilation in every new worker process).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from shallowcnn.cli import main
from shallowcnn.model import ShallowCNN
from shallowcnn.search.space import (DEFAULT_SPACE, PARAMETERS, SearchSpace, SpaceError, draw, load_space,
                                     parameter_count)
from shallowcnn.search.trial import run_trial, train_val_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store_path(small_store):
    return small_store[0]
TINY_SPACE = {"conv1_filters": {"int": [2, 3]}, "conv2_filters": {"int": [2, 3]},
              "kernel_size": {"odd": [3, 5]}, "batch_size": 8}


# ------------------------------------------------------------------ space
def test_parameter_count_matches_the_model():
    assert parameter_count(6, 16, 9) == 8301                               # the paper's Table 2
    for c1, c2, k in ((2, 3, 3), (5, 7, 11), (32, 2, 13)):
        assert parameter_count(c1, c2, k) == ShallowCNN(channels=(c1, c2), kernel_size=k).n_params()


def test_sampling_is_seeded_per_trial_and_inside_the_space():
    space = SearchSpace()
    a = [space.sample(7, i) for i in range(50)]
    assert a == [space.sample(7, i) for i in range(50)]                   # same seed, same trials
    assert space.sample(7, 3) == a[3]                                       # independent of how many
    assert a != [space.sample(8, i) for i in range(50)]
    for t in a:
        assert 2 <= t["conv1_filters"] <= 32 and 2 <= t["conv2_filters"] <= 32
        assert t["kernel_size"] in (3, 5, 7, 9, 11, 13)
        assert 1e-4 <= t["lr"] <= 1e-2 and t["batch_size"] in (16, 32, 64, 128) and 0 <= t["p_drop"] <= 0.5


def test_draw_follows_each_distribution():
    rng = np.random.default_rng(0)
    lrs = np.array([draw({"log_uniform": [1e-4, 1e-2]}, rng) for _ in range(4000)])
    assert abs(np.mean(lrs < 1e-3) - 0.5) < 0.03                            # half of the draws per decade
    odd = {draw({"odd": [3, 13]}, rng) for _ in range(500)}
    assert odd == {3, 5, 7, 9, 11, 13}
    assert {draw({"int": [2, 4]}, rng) for _ in range(200)} == {2, 3, 4}
    assert {draw({"choice": [16, 64]}, rng) for _ in range(100)} == {16, 64}
    assert draw(0.25, rng) == 0.25


def test_space_files_json_and_toml(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"kernel_size": 9, "lr": {"log_uniform": [1e-3, 1e-2]}}))
    (tmp_path / "s.toml").write_text("kernel_size = 9\nlr = { log_uniform = [1e-3, 1e-2] }\n")
    a, b = load_space(tmp_path / "s.json"), load_space(tmp_path / "s.toml")
    assert a.to_dict() == b.to_dict()
    assert a.rules["kernel_size"] == 9 and a.rules["conv1_filters"] == DEFAULT_SPACE["conv1_filters"]
    assert all(a.sample(0, i)["kernel_size"] == 9 for i in range(5))


def test_an_older_space_file_with_keep_is_read_as_the_dropout_probability(tmp_path):
    """keep (probability of keeping a unit) was the search's name for 1 - p_drop."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"keep": {"uniform": [0.5, 0.9]}}))
    assert load_space(path).rules["p_drop"] == {"uniform": [0.1, 0.5]}
    assert SearchSpace({"keep": 0.8}).rules["p_drop"] == 0.2
    assert SearchSpace({"keep": {"choice": [1.0, 0.75]}}).rules["p_drop"] == {"choice": [0.0, 0.25]}


@pytest.mark.parametrize("content, problem", [
    ({"filters": 3}, "unknown parameter"),
    ({"kernel_size": 8}, "odd"),
    ({"kernel_size": {"int": [3, 5]}}, "odd"),
    ({"lr": {"log_uniform": [0, 1]}}, "positive"),
    ({"p_drop": {"uniform": [-0.5, 0.5]}}, "values must lie"),
    ({"p_drop": {"uniform": [0.5, 1.0]}}, "must lie in \\[0, 1\\)"),
    ({"keep": {"log_uniform": [0.5, 1.0]}}, "write p_drop instead"),
    ({"batch_size": {"normal": [1, 2]}}, "expected a number or one of"),
    ({"conv1_filters": {"int": [8, 2]}}, "low <= high"),
    ({"conv1_filters": 2.5}, "integer"),
    ({"batch_size": {"uniform": [16, 128]}}, "whole numbers"),
    ({"kernel_size": {"odd": [3, 151]}}, "values must lie"),
    ({"lr": "fast"}, "expected a number"),
])
def test_bad_space_files_are_refused_naming_file_and_parameter(tmp_path, content, problem):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SpaceError, match=problem) as info:
        load_space(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------ one trial
def test_a_trial_that_raises_is_recorded_as_failed(store_path):
    from shallowcnn.data.patches import load_patches
    store = train_val_store(load_patches(store_path))
    assert set(store.split) == {"train", "val"}                            # the test split never travels
    trial = {**SearchSpace(TINY_SPACE).sample(0, 0), "kernel_size": 33}    # more than ShallowCNN takes
    result = run_trial(store, trial, epochs=1, backend="numpy")
    assert result["row"]["status"] == "failed" and "kernel_size 33" in result["row"]["message"]
    assert result["params"] is None


# ------------------------------------------------------------------ searches
def search(store, out, trials=4, space=None, on_result=None, **cluster):
    """A search of ``trials`` one-epoch trials on the numpy backend; ``cluster``: DaskSettings fields."""
    from shallowcnn.dask_cluster import DaskSettings
    from shallowcnn.search import SearchSettings, run_search
    settings = SearchSettings(trials=trials, epochs=1, seed=5, space=space or SearchSpace(TINY_SPACE), backend="numpy")
    return run_search(store, out, settings, DaskSettings(**cluster), verbose=False, on_result=on_result)


def check_folder(out, trials):
    rows = json.loads((out / "trials.json").read_text())["trials"]
    assert [r["row"]["trial"] for r in rows] == list(range(trials))
    header = (out / "trials.csv").read_text().splitlines()[0].split(",")
    assert set(PARAMETERS) | {"n_params", "best_epoch", "val_accuracy", "val_loss", "seconds", "status",
                              "worker"} <= set(header)
    assert len((out / "trials.csv").read_text().splitlines()) == trials + 1
    for name in ("search.png", "report.md", "search.json", "best/model.npz"):
        assert (out / name).exists(), name
    return [r["row"] for r in rows]


@pytest.fixture(scope="module")
def local_search(store_path, tmp_path_factory):
    """A 4-trial search on a LocalCluster of two worker processes started here."""
    pytest.importorskip("distributed", reason="the search needs the [dask] extra")
    out = tmp_path_factory.mktemp("local_search")
    return out, search(store_path, out, workers=2, numba_threads=1)


def test_local_cluster_search_records_every_trial(local_search):
    out, outcome = local_search
    rows = check_folder(out, 4)
    space = SearchSpace(TINY_SPACE)
    for row in rows:
        sampled = space.sample(5, row["trial"])
        assert {k: row[k] for k in sampled} == sampled                    # what was sampled is what ran
        assert row["status"] == "ok" and row["best_epoch"] == 1 and 0 <= row["val_accuracy"] <= 1
        assert row["n_params"] == parameter_count(row["conv1_filters"], row["conv2_filters"], row["kernel_size"])
    best = max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert outcome.best["trial"] == best["trial"]
    model = ShallowCNN.load(out / "best" / "model.npz")
    assert model.channels == (best["conv1_filters"], best["conv2_filters"])
    assert model.metadata["search"]["trial"]["trial"] == best["trial"]
    assert f"| {best['trial']} |" in (out / "report.md").read_text()


def test_interrupted_search_resumes_and_matches_the_uninterrupted_one(local_search, store_path, tmp_path):
    pytest.importorskip("distributed", reason="the search needs the [dask] extra")
    _, uninterrupted = local_search
    seen = []

    def stop_after_first(row):
        seen.append(row["trial"])
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        search(store_path, tmp_path, workers=1, processes=False, on_result=stop_after_first)
    first = json.loads((tmp_path / "trials.json").read_text())["trials"]
    assert [r["row"]["trial"] for r in first] == seen
    resumed = search(store_path, tmp_path, workers=2, processes=False)
    assert sorted(r["trial"] for r in resumed.ran) == sorted(set(range(4)) - set(seen))   # the rest only
    rows = check_folder(tmp_path, 4)
    assert rows[seen[0]] == first[0]["row"]                                # the finished trial kept as it was
    again = {k: rec["row"]["val_accuracy"] for k, rec in uninterrupted.records.items()}
    assert {r["trial"]: r["val_accuracy"] for r in rows} == again          # reproducible, trial by trial
    assert search(store_path, tmp_path, processes=False).ran == []        # nothing left to do
    assert search(store_path, tmp_path, trials=2, processes=False).ran == []
    assert len(check_folder(tmp_path, 4)) == 4                             # a smaller --trials drops nothing


def test_resuming_with_other_settings_is_refused(local_search, store_path):
    from shallowcnn.storage import StoreError
    out, _ = local_search
    with pytest.raises(StoreError, match="seed=5, not 6"):
        from shallowcnn.search import SearchSettings, run_search
        run_search(store_path, out, SearchSettings(trials=4, epochs=1, seed=6, space=SearchSpace(TINY_SPACE),
                                                   backend="numpy"), verbose=False)


def test_a_diverging_trial_is_recorded_not_fatal(store_path, tmp_path):
    pytest.importorskip("distributed", reason="the search needs the [dask] extra")
    space = SearchSpace({**TINY_SPACE, "lr": {"choice": [1e-3, 1e30]}})
    outcome = search(store_path, tmp_path, trials=4, space=space, workers=2, processes=False)
    rows = check_folder(tmp_path, 4)
    assert {r["lr"] for r in rows} == {1e-3, 1e30}, "the seed should draw both learning rates"
    for row in rows:
        assert row["status"] == ("diverged" if row["lr"] == 1e30 else "ok"), row
        assert (tmp_path / "models" / f"{row['trial']:04d}.npz").exists() == (row["status"] == "ok")
    assert "diverged" in (tmp_path / "report.md").read_text()
    assert outcome.best["lr"] == 1e-3


# ------------------------------------------------------------------ a real cluster
@pytest.fixture
def dask_processes(tmp_path):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1 (random ports), always stopped."""
    pytest.importorskip("distributed", reason="the search needs the [dask] extra")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen(dask + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(file)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for name in ("w0", "w1"):
            procs.append(subprocess.Popen(dask + ["worker", "--scheduler-file", str(file), "--name", name,
                                                  "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                          env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        deadline = time.time() + 60
        while not file.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert file.exists(), "the dask scheduler did not start"
        from distributed import Client
        address = json.loads(file.read_text())["address"]
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_search_on_a_running_scheduler_uses_both_workers(dask_processes, store_path, tmp_path):
    outcome = search(store_path, tmp_path, trials=4, scheduler=dask_processes)
    rows = check_folder(tmp_path, 4)
    assert all(r["status"] == "ok" for r in rows)
    assert {r["worker"] for r in rows} == {"w0", "w1"}
    assert len(outcome.ran) == 4


# ------------------------------------------------------------------ command line
def test_cli_without_dask_says_how_to_install(store_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)                  # import distributed -> ImportError
    assert main(["search", str(store_path), "-o", str(tmp_path), "--trials", "1", "--quiet"]) == 3
    assert 'pip install "shallowcnn[dask]"' in capsys.readouterr().err


def test_cli_refuses_a_bad_space_file(store_path, tmp_path, capsys):
    bad = tmp_path / "space.toml"
    bad.write_text("kernel_size = 4\n")
    assert main(["search", str(store_path), "-o", str(tmp_path / "out"), "--trials", "1",
                 "--space", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "space.toml" in err and "kernel_size" in err and "Traceback" not in err
