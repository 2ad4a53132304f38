"""Interrupted and damaged runs (issue 25): Ctrl-C in ``evaluate``, a malformed tune
cache, ``train --resume`` on other pixels or after a kill between two writes, output
names that could collide, and a full disk during ``scan``. Each runs the real command."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bad_inputs_common import run_cli

from shallowcnn import storage
from shallowcnn.data.patches import PatchStore
from shallowcnn.kernels import autotune
from shallowcnn.model import ShallowCNN

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------
# Ctrl-C in evaluate
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_store_file(small_store, tmp_path_factory):
    """The small store's patches repeated to 3,000 (evaluate takes seconds on it)."""
    _, store = small_store
    repeat = -(-3000 // len(store))
    arrays = {k: np.concatenate([getattr(store, k)] * repeat)[:3000] for k in PatchStore.ARRAY_NAMES}
    return PatchStore(**arrays, metadata=store.metadata).save(tmp_path_factory.mktemp("big") / "big.npz")


def test_ctrl_c_in_evaluate_exits_130_every_time(big_store_file, tmp_path):
    model = tmp_path / "model.npz"
    ShallowCNN(seed=0).save(model)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "2"}
    statuses = []
    for delay in (2.5, 3.5, 4.5):
        process = subprocess.Popen([sys.executable, "-m", "shallowcnn", "evaluate", str(model), str(big_store_file),
                                    "--split", "all", "-o", str(tmp_path / "out")], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
        assert "Traceback" not in output and process.returncode in (0, 130), (process.returncode, output[-2000:])
        statuses.append(process.returncode)
    assert 130 in statuses, "no interrupt landed while evaluating; use a larger store"


def test_ctrl_c_two_causes_down_is_recognised(monkeypatch, capsys):
    """The chain of a Ctrl-C inside a Numba dispatcher: KeyboardInterrupt -> SystemError ->
    SystemError (as evaluate showed it)."""
    from shallowcnn.commands import evaluate

    def interrupted(args):
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as e:
                raise SystemError("<function _numba_unpickle> returned a result with an exception set") from e
        except SystemError as e:
            raise SystemError("CPUDispatcher(<function _wino_max_kernel>) returned a result with an "
                              "exception set") from e

    monkeypatch.setattr(evaluate, "run_command", interrupted)
    status, _, err = run_cli(capsys, ["evaluate", "m.npz", "p.npz"])
    assert status == 130 and "interrupted" in err


# ---------------------------------------------------------------------------------------
# The tune cache
# ---------------------------------------------------------------------------------------

CACHE_CASES = {
    "choices-a-number": lambda ident: {"identity": ident, "choices": 5},
    "choices-a-list": lambda ident: {"identity": ident, "choices": [1, 2]},
    "record-a-string": lambda ident: {"identity": ident, "choices": {"conv 1x1": "f4r1"}},
    "record-without-variant": lambda ident: {"identity": ident, "choices": {"conv 1x1": {"cpu_ms": {"a": 1}}}},
    "unknown-variant": lambda ident: {"identity": ident,
                                      "choices": {"conv 1x1": {"variant": "zz9", "cpu_ms": {"zz9": 1.0}}}},
    "times-not-numbers": lambda ident: {"identity": ident,
                                        "choices": {"conv 1x1": {"variant": "f4r1", "cpu_ms": {"f4r1": "x"}}}},
    "a-list": lambda ident: [1, 2, 3],
    "not-json": None,
    "a-folder": "folder",
}


@pytest.fixture
def cache_file(tune_cache_file):
    """The tune cache moved to a temporary file, this process's memory of it cleared (conftest.py)."""
    return tune_cache_file


def write_cache(path, case):
    make = CACHE_CASES[case]
    if make == "folder":
        path.mkdir()
    elif make is None:
        path.write_text("{not json")
    else:
        path.write_text(json.dumps(make(autotune.identity())))


@pytest.mark.parametrize("case", sorted(CACHE_CASES))
def test_a_malformed_tune_cache_is_no_cache_with_a_warning(case, cache_file, capsys):
    write_cache(cache_file, case)
    status, out, err = run_cli(capsys, ["tune", "--show"])
    assert status == 0 and "no saved choices" in out
    assert str(cache_file) in err and "warning" in err, err


@pytest.mark.parametrize("case", sorted(set(CACHE_CASES) - {"a-folder"}))
def test_timing_again_rewrites_a_malformed_cache(case, cache_file, capsys, monkeypatch):
    """What `tune` (and a first use on a new machine) does: time the variants, then save."""
    monkeypatch.delenv(autotune.ENV, raising=False)
    write_cache(cache_file, case)
    ran = []
    variant = autotune.choose("tile", "conv test", lambda name: ran.append(name))
    assert variant in autotune.FAMILIES["tile"] and set(ran) == set(autotune.FAMILIES["tile"])
    saved = json.loads(cache_file.read_text())
    assert saved["choices"]["conv test"]["variant"] == variant
    assert str(cache_file) in capsys.readouterr().err


def test_a_folder_in_the_cache_place_is_named_when_saving(cache_file, capsys, monkeypatch):
    monkeypatch.delenv(autotune.ENV, raising=False)
    write_cache(cache_file, "a-folder")
    autotune.choose("tile", "conv test", lambda name: None)
    err = capsys.readouterr().err
    assert str(cache_file) in err and "folder" in err


# ---------------------------------------------------------------------------------------
# train --resume
# ---------------------------------------------------------------------------------------

TRAIN = ["--batch-size", "16", "--backend", "numba", "--quiet", "--epochs", "2"]


@pytest.fixture(scope="module")
def two_epoch_run(small_store, tmp_path_factory):
    from shallowcnn.cli import main
    run = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", str(small_store[0]), "-o", str(run), *TRAIN]) == 0
    return run


@pytest.mark.parametrize("change", ["inverted", "noise"])
def test_resume_on_other_pixels_is_refused(change, two_epoch_run, small_store, tmp_path, capsys):
    _, store = small_store
    patches = 255 - store.patches if change == "inverted" else \
        np.random.default_rng(0).integers(0, 256, store.patches.shape, dtype=np.uint8)
    arrays = {k: getattr(store, k) for k in PatchStore.ARRAY_NAMES}
    other = PatchStore(**{**arrays, "patches": patches}, metadata=store.metadata).save(tmp_path / "other.npz")
    run = tmp_path / "run"
    shutil.copytree(two_epoch_run, run)
    status, _, err = run_cli(capsys, ["train", other, "-o", run, "--resume", *TRAIN[:-1], "3"])
    assert status == 2 and str(run / "checkpoint.npz") in err and "other pixels" in err, err


def test_a_kill_between_the_last_writes_is_repaired_by_resume(two_epoch_run, small_store, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(two_epoch_run, run)
    whole = (run / "history.csv").read_text()
    (run / "history.csv").write_text("".join(whole.splitlines(keepends=True)[:2]))   # the last epoch lost
    (run / ".history.csv.k1ll3d.tmp").write_bytes(b"")                              # a killed write's file
    status, _, err = run_cli(capsys, ["train", small_store[0], "-o", run, "--resume", *TRAIN])
    assert status == 0, err
    assert (run / "history.csv").read_text() == whole
    assert not list(run.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------
# scan: names that could collide, a full disk
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("paper_model") / "model.npz"
    ShallowCNN(seed=0).save(path)
    return path


def test_inputs_whose_names_could_collide_get_distinct_outputs(tiny_phantom, paper_model_file, tmp_path, capsys):
    from PIL import Image

    from shallowcnn.data.dicom import read_dicom
    _, images = tiny_phantom
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images[0].dicom_path, folder / "img.dcm")
    shutil.copy(images[1].dicom_path, folder / "coll2_img-2.dcm")
    pixels = read_dicom(images[2].dicom_path)
    pixels = getattr(pixels, "pixels", pixels)
    Image.fromarray((np.asarray(pixels, float) / np.max(pixels) * 255).astype(np.uint8)).save(folder / "img.png")
    status, _, err = run_cli(capsys, ["scan", paper_model_file, folder, "-o", tmp_path / "out", "--stride", "32",
                                      "--backend", "numba", "--quiet"])
    assert status == 0, err
    summary = json.loads((tmp_path / "out" / "scan_summary.json").read_text())
    files = [s["files"]["detections"] for s in summary["images"]]
    assert len(files) == 3 and len({f.lower() for f in files}) == 3, files
    assert all((tmp_path / "out" / f).exists() for f in files)


def test_a_full_disk_during_scan_names_the_file_and_scans_the_others(tiny_phantom, paper_model_file, tmp_path,
                                                                     capsys, monkeypatch):
    from shallowcnn import scan_files
    _, images = tiny_phantom
    real_save = scan_files.save_npy
    full = []

    def save_npy(path, array):              # the disk is full for the first image's heatmap
        if not full:
            full.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(path, array)

    monkeypatch.setattr(scan_files, "save_npy", save_npy)
    inputs = [images[0].dicom_path, images[1].dicom_path]
    status, out, err = run_cli(capsys, ["scan", paper_model_file, *inputs, "-o", tmp_path / "out", "--stride", "32",
                                        "--backend", "numba", "--quiet"])
    assert status == 1 and str(full[0]) in out + err and "No space left" in out + err
    summary = json.loads((tmp_path / "out" / "scan_summary.json").read_text())
    assert [Path(s["image"]).name for s in summary["images"]] == [Path(inputs[1]).name]


def test_a_failed_atomic_write_names_its_file(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))    # as write()/fsync() raise it: no file name
    monkeypatch.setattr(storage.os, "fsync", fsync)
    target = tmp_path / "trials.json"
    with pytest.raises(OSError) as caught:
        storage.atomic_write_text(target, "{}")
    assert caught.value.errno == errno.ENOSPC and str(target) in str(caught.value)
    assert not target.exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_file_named_like_a_formula_is_scanned(tiny_phantom, paper_model_file, tmp_path, capsys):
    """matplotlib would read IMG$1_$ in the overlay's title as mathtext and fail."""
    _, images = tiny_phantom
    source = tmp_path / "IMG$1_$.dcm"
    shutil.copy(images[0].dicom_path, source)
    status, _, err = run_cli(capsys, ["scan", paper_model_file, source, "-o", tmp_path / "out", "--stride", "32",
                                      "--backend", "numba", "--quiet"])
    assert status == 0, err
    assert (tmp_path / "out" / "IMG$1_$.overlay.png").stat().st_size > 1000
