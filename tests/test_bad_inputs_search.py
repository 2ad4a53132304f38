"""``shallowcnn search`` against bad space files, options and damaged folders, and Ctrl-C
with Dask workers (issue 25). Each case runs the real command and checks the exit status,
a message naming the file or option, and no traceback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bad_inputs_common import run_cli

pytest.importorskip("distributed", reason="needs the [dask] extra")

SPACE_CASES = {   # file name -> (content, what the message must name)
    "log-uniform-overflow.json": ('{"lr": {"log_uniform": [1e-3, 1e400]}}', "lr"),
    "log-uniform-overflow.toml": ("lr = { log_uniform = [1e-3, 1e400] }", "lr"),
    "keep-nan.json": ('{"keep": NaN}', "keep"),
    "keep-nan.toml": ("keep = nan", "keep"),
    "lr-infinity.json": ('{"lr": Infinity}', "lr"),
    "lr-tiny.json": ('{"lr": 1e-300}', "lr"),
    "lr-log-uniform-negative.json": ('{"lr": {"log_uniform": [-1, 0.01]}}', "lr"),
    "keep-choice-nan.toml": ("keep = { choice = [0.5, nan] }", "keep"),
    "batch-huge.json": ('{"batch_size": {"choice": [64, 1000000000]}}', "batch_size"),
    "deep.json": ('{"lr": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests"),
    "deep-in-rule.json": ('{"lr": {"choice": ' + "[" * 500 + "]" * 500 + "}}", "lr"),
    "deep.toml": ("lr = " + "[" * 100_000 + "]" * 100_000, "deep"),
    "not-utf8.json": (b'{"lr": "\xff\xfe"}', "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_a_bad_space_file_is_named(case, small_store, tmp_path, capsys):
    content, word = SPACE_CASES[case]
    space = tmp_path / case
    space.write_bytes(content if isinstance(content, bytes) else content.encode())
    status, out, err = run_cli(capsys, ["search", small_store[0], "-o", tmp_path / "out", "--trials", "2",
                                        "--space", space, "--quiet"])
    assert status == 2 and str(space) in err and word in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option,value", [("--trials", "100000000"), ("--trials", "0"), ("--seed", "-1"),
                                          ("--epochs", "0"), ("--workers", "-1"), ("--numba-threads", "-4")])
def test_bad_search_options_are_refused_when_read(option, value, small_store, tmp_path, capsys):
    start = time.monotonic()
    argv = ["search", small_store[0], "-o", tmp_path / "out", "--quiet", option, value]
    if option != "--trials":
        argv += ["--trials", "2"]
    status, _, err = run_cli(capsys, argv)
    assert status == 2 and option in err and time.monotonic() - start < 5
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_named(small_store, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    status, _, err = run_cli(capsys, ["search", small_store[0], "-o", target, "--trials", "1", "--quiet"])
    assert status == 2 and str(target) in err and target.read_text() == "keep me"


SEARCH = ["--trials", "2", "--epochs", "1", "--workers", "1", "--numba-threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def finished_search(small_store, tmp_path_factory):
    """A finished two-trial search folder (copied by each test that damages it)."""
    from shallowcnn.cli import main
    out = tmp_path_factory.mktemp("search") / "out"
    assert main(["search", str(small_store[0]), "-o", str(out), *SEARCH]) in (0, 1)
    return out


def test_resuming_with_a_row_missing_a_field_is_named(finished_search, small_store, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished_search, out)
    trials = json.loads((out / "trials.json").read_text())
    ok = [r for r in trials["trials"] if r["row"]["status"] == "ok"]
    assert ok, "the fixture's search needs a finished trial"
    del ok[0]["row"]["val_accuracy"]
    (out / "trials.json").write_text(json.dumps(trials))
    status, _, err = run_cli(capsys, ["search", small_store[0], "-o", out, *SEARCH])
    assert status == 2 and str(out / "trials.json") in err and "val_accuracy" in err, err


def test_a_damaged_best_model_is_never_copied_and_its_trial_runs_again(finished_search, small_store, tmp_path,
                                                                        capsys):
    from shallowcnn.model import ShallowCNN
    from shallowcnn.search.results import model_path, ranking, read_trials
    out = tmp_path / "out"
    shutil.copytree(finished_search, out)
    best = ranking(read_trials(out))[0]
    damaged = model_path(out, best["trial"])
    damaged.write_bytes(damaged.read_bytes()[:200])
    (out / "best" / "model.npz").unlink()
    status, _, err = run_cli(capsys, ["search", small_store[0], "-o", out, *SEARCH])
    assert status == 0 and str(damaged) in err and "runs again" in err, err
    reloaded = ShallowCNN.load(out / "best" / "model.npz")          # a whole model again
    assert reloaded.n_params() == best["n_params"]


def test_ctrl_c_with_dask_workers_exits_130_without_worker_tracebacks(small_store, tmp_path):
    """A real SIGINT to the whole process group, as a terminal sends it, mid-trial."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "NUMBA_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "shallowcnn", "search", str(small_store[0]), "-o", str(out),
                                "--trials", "4", "--epochs", "500", "--workers", "2", "--numba-threads", "1"],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                               start_new_session=True,   # its own group, as a terminal's foreground job
                               # a test run in the background inherits SIGINT ignored; a terminal's job does not
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("running on" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any("running on" in line for line in lines), "".join(lines)
        time.sleep(2)                                               # the trials are training
        os.killpg(process.pid, signal.SIGINT)
        status = process.wait(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    reader.join(10)
    err = "".join(lines)
    assert status == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "run the same command again to resume" in err
