"""Damaged models, patch stores and checkpoints, and a real Ctrl-C mid-epoch (issue 14).

Each case runs the command in-process (see tests/bad_inputs_common.py) and checks the
exit status, a message naming the file, and no traceback.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from bad_inputs_common import run_cli

from shallowcnn.cli import main
from shallowcnn.storage import METADATA_KEY, load_npz, save_npz


# ---------------------------------------------------------------------------------------
# Models, checkpoints and patch stores (classes 5, 6, 7, 10)
# ---------------------------------------------------------------------------------------


def rewrite_npz(source, target, arrays=None, metadata=None, drop=(), raw_metadata=None):
    """A copy of a shallowcnn .npz with some arrays or metadata replaced or dropped."""
    old_arrays, old_meta = load_npz(source)
    new_arrays = {k: v for k, v in old_arrays.items() if k not in drop}
    new_arrays.update(arrays or {})
    meta = {k: v for k, v in old_meta.items() if k not in drop}
    meta.update(metadata or {})
    if raw_metadata is None:
        save_npz(target, new_arrays, meta)
    else:   # metadata bytes as given (not JSON, not UTF-8)
        np.savez(target, **new_arrays, **{METADATA_KEY: np.frombuffer(raw_metadata, np.uint8)})
    return target


def npz_claiming_huge_array(source, target):
    """A copy whose conv1.W header claims 3 GiB (the data stay tiny): a 3 MB file once held
    such a member and was read at 3.3 GB of memory."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "conv1.W.npy":
                header = {"descr": "<f4", "fortran_order": False, "shape": (3 << 28,)}
                buffer = __import__("io").BytesIO()
                np.lib.format.write_array_header_1_0(buffer, header)
                data = buffer.getvalue() + b"\0" * 4096
            new.writestr(info.filename, data)
    return target


ARCH = {"name": "ShallowCNN", "channels": [2, 3], "kernel_size": 5, "p_drop": 0.2, "dtype": "float32"}
MODEL_CASES = {
    "empty-file": lambda src, dst: (dst.write_bytes(b""), dst)[1],
    "truncated": lambda src, dst: (dst.write_bytes(src.read_bytes()[:300]), dst)[1],
    "random-bytes": lambda src, dst: (dst.write_bytes(b"PK\x03\x04" + os.urandom(500)), dst)[1],
    "3GiB-member": npz_claiming_huge_array,
    "kernel-2000": lambda src, dst: rewrite_npz(src, dst, metadata={"architecture": {**ARCH, "kernel_size": 2000}}),
    "kernel-0": lambda src, dst: rewrite_npz(src, dst, metadata={"architecture": {**ARCH, "kernel_size": 0}}),
    "channels-text": lambda src, dst: rewrite_npz(src, dst, metadata={"architecture": {**ARCH, "channels": [2, "a"]}}),
    "dtype-object": lambda src, dst: rewrite_npz(src, dst, metadata={"architecture": {**ARCH, "dtype": "object"}}),
    "p-drop-2": lambda src, dst: rewrite_npz(src, dst, metadata={"architecture": {**ARCH, "p_drop": 2}}),
    "no-architecture": lambda src, dst: rewrite_npz(src, dst, drop=("architecture",)),
    "string-weights": lambda src, dst: rewrite_npz(src, dst, arrays={"dense.b": np.array(["x"])}),
    "bias-1e48": lambda src, dst: rewrite_npz(src, dst, arrays={"dense.b": np.array([1e48])}),
    "nan-weight": lambda src, dst: rewrite_npz(src, dst, arrays={"dense.W": np.full((3, 1), np.nan, np.float32)}),
    "missing-weight": lambda src, dst: rewrite_npz(src, dst, drop=("conv2.b",)),
    "wrong-shape": lambda src, dst: rewrite_npz(src, dst, arrays={"conv2.b": np.zeros(7, np.float32)}),
    "metadata-not-json": lambda src, dst: rewrite_npz(src, dst, raw_metadata=b"{kind: model"),
    "metadata-not-utf8": lambda src, dst: rewrite_npz(src, dst, raw_metadata=b"\xff\xfe{}"),
    "a-store-not-a-model": lambda src, dst: rewrite_npz(src, dst, metadata={"kind": "shallowcnn.patches"}),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_damaged_model_is_refused_naming_it(case, tiny_model_file, small_store_file, tmp_path, capsys):
    bad = MODEL_CASES[case](tiny_model_file, tmp_path / f"{case}.npz")
    status, _, err = run_cli(capsys, ["evaluate", bad, small_store_file, "-o", tmp_path / "eval"])
    assert status == 2 and str(bad) in err, err
    if case.startswith("metadata"):
        assert "pickle" not in err
    assert not (tmp_path / "eval" / "metrics.json").exists()


def _labels(values):
    return lambda src, dst: rewrite_npz(src, dst, arrays={"labels": values(load_npz(src)[0]["labels"])})


STORE_CASES = {
    "labels-0-7": _labels(lambda y: np.where(y == 1, 7, 0).astype(np.uint8)),
    "labels-0d": _labels(lambda y: np.array(1, np.uint8)),
    "labels-float-nan": _labels(lambda y: np.full(len(y), np.nan)),
    "float-patches": lambda src, dst: rewrite_npz(src, dst, arrays={
        "patches": load_npz(src)[0]["patches"].astype(np.float32)}),
    "patches-wrong-size": lambda src, dst: rewrite_npz(src, dst, arrays={
        "patches": load_npz(src)[0]["patches"][:, :100, :100].copy()}),
    "split-unknown": lambda src, dst: rewrite_npz(src, dst, arrays={
        "split": np.full(len(load_npz(src)[0]["split"]), "later", "<U5")}),
    "missing-labels": lambda src, dst: rewrite_npz(src, dst, drop=("labels",)),
    "a-model-not-a-store": lambda src, dst: rewrite_npz(src, dst, metadata={"kind": "shallowcnn.model"}),
}


@pytest.mark.parametrize("case", sorted(STORE_CASES))
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_damaged_store_is_refused_naming_it(case, command, small_store_file, tiny_model_file, tmp_path, capsys):
    bad = STORE_CASES[case](small_store_file, tmp_path / f"{case}.npz")
    argv = (["train", bad, "-o", tmp_path / "run", "--epochs", "1", "--backend", "numpy", "--quiet"]
            if command == "train" else ["evaluate", tiny_model_file, bad, "-o", tmp_path / "eval"])
    status, _, err = run_cli(capsys, argv)
    assert status == 2 and str(bad) in err, err
    if case == "labels-0-7":
        assert "labels must be 0 or 1" in err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


CHECKPOINT_CASES = {
    "no-architecture": dict(drop=("architecture",)),
    "no-shuffle-rng": dict(drop=("shuffle_rng",)),
    "garbage-rng": dict(metadata={"shuffle_rng": {"bit_generator": "PCG64", "state": "garbage"}}),
    "history-column-missing": dict(metadata={"history": {"epoch": [1], "loss": [0.5]}}),
    "no-adam-t": dict(drop=("adam.t",)),
    "adam-t-text": dict(arrays={"adam.t": np.array("three")}),
    "nan-weights": dict(arrays={"model.dense.W": np.full((16, 1), np.nan, np.float32)}),
    "nan-best": dict(arrays={"best.conv1.b": np.full(6, np.inf, np.float32)}),
    "wrong-shape": dict(arrays={"model.conv1.W": np.zeros((6, 1, 7, 7), np.float32)}),
    "best-not-object": dict(metadata={"best": [1, 2]}),
}


@pytest.fixture(scope="module")
def one_epoch_run(small_store_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("run1")
    assert main(["train", str(small_store_file), "-o", str(run), "--epochs", "1", "--batch-size", "16",
                 "--backend", "numba", "--quiet"]) == 0
    return run


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_damaged_checkpoint_is_refused_naming_it(case, one_epoch_run, small_store_file, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    rewrite_npz(one_epoch_run / "checkpoint.npz", run / "checkpoint.npz", **CHECKPOINT_CASES[case])
    status, _, err = run_cli(capsys, ["train", small_store_file, "-o", run, "--epochs", "2", "--batch-size", "16",
                                      "--backend", "numba", "--quiet", "--resume"])
    assert status == 2 and str(run / "checkpoint.npz") in err, err
    assert load_npz(run / "checkpoint.npz")[1]["history"] == load_npz(one_epoch_run / "checkpoint.npz")[1]["history"] \
        or case.startswith("history")


def test_resume_with_another_store_is_refused(one_epoch_run, small_store_file, tmp_path, capsys):
    other = rewrite_npz(small_store_file, tmp_path / "other.npz",
                        arrays={"labels": 1 - load_npz(small_store_file)[0]["labels"]})
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    status, _, err = run_cli(capsys, ["train", other, "-o", run, "--epochs", "2", "--batch-size", "16",
                                      "--backend", "numba", "--quiet", "--resume"])
    assert status == 2 and "another patch store" in err and str(run / "checkpoint.npz") in err


# ---------------------------------------------------------------------------------------
# Ctrl-C (class 1): a real SIGINT to a training process, mid-epoch
# ---------------------------------------------------------------------------------------


def test_real_ctrl_c_mid_epoch_prints_the_resume_command_and_exits_130(small_store_file, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    # batch 1: 24 batches per epoch, nearly all time inside Numba kernels, where a
    # KeyboardInterrupt used to surface as SystemError
    argv = [sys.executable, "-u", "-m", "shallowcnn", "train", str(small_store_file), "-o", str(run),
            "--epochs", "500", "--batch-size", "1", "--lr", "0.0005", "--backend", "numba"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        for line in process.stdout:               # wait for the first finished epoch
            if line.startswith("epoch") or time.monotonic() > deadline:
                break
        time.sleep(0.05)                          # into the next epoch
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "SystemError" not in err
    assert "interrupted" in err
    assert f"shallowcnn train {small_store_file} -o {run} --epochs 500 --batch-size 1 --lr 0.0005 " \
           f"--backend numba --resume" in err
    assert (run / "checkpoint.npz").exists()
