"""Options refused when the command line is read, before any work (issue 14).
"""
from __future__ import annotations

import pytest
from bad_inputs_common import run_cli



# ---------------------------------------------------------------------------------------
# Options, refused when the command line is read (classes 6, 8)
# ---------------------------------------------------------------------------------------

OPTION_CASES = [
    ("train", "--eps", "0"), ("train", "--eps", "nan"), ("train", "--beta1", "2"), ("train", "--beta2", "-0.1"),
    ("train", "--lr", "inf"), ("train", "--lr", "-1"), ("train", "--epochs", "0"), ("train", "--batch-size", "-3"),
    ("train", "--seed", "-1"), ("train", "--p-drop", "1"), ("train", "--backend", "gpu"),
    ("patches", "--fractions", "nan 0.5 0.5"), ("patches", "--fractions", "0.5 0.5 0.5"),
    ("patches", "--negatives-per-image", "-5"), ("patches", "--per-cluster", "-1"), ("patches", "--seed", "-1"),
    ("scan", "--nms", "-5"), ("scan", "--threshold", "nan"), ("scan", "--threshold", "2"), ("scan", "--stride", "0"),
    ("scan", "--pixel-size", "inf"), ("scan", "--pixel-size", "-0.07"), ("scan", "--min-breast", "2"),
    ("scan", "--tile", "0"), ("scan", "--hit-radius", "-1"), ("scan", "--backend", "gpu"),
    ("evaluate", "--threshold", "nan"), ("evaluate", "--threshold", "-1"),
    ("phantom", "--size", "60000x60000"), ("phantom", "--size", "abc"), ("phantom", "--cases", "0"),
    ("phantom", "--seed", "-1"), ("demo", "--epochs", "0"), ("demo", "--size", "60000x60000"),
    ("demo", "--backend", "gpu"), ("demo", "--cases", "-2"), ("gradcheck", "--seed", "-1"),
    ("gradcheck", "--size", "5"),
    ("gradcheck", "--entries", "-1"), ("gradcheck", "--backend", "gpu"),
]


@pytest.mark.parametrize("command,option,value", OPTION_CASES)
def test_bad_option_is_refused_naming_it(command, option, value, small_store_file, tiny_model_file, tiny_phantom,
                                         tmp_path, capsys):
    folder, images = tiny_phantom
    out = tmp_path / "out"
    argv = {"train": ["train", small_store_file, "-o", out],
            "patches": ["patches", folder, "-o", out / "store.npz"],
            "scan": ["scan", tiny_model_file, images[0].dicom_path, "-o", out],
            "evaluate": ["evaluate", tiny_model_file, small_store_file, "-o", out],
            "phantom": ["phantom", out], "demo": ["demo", "-o", out], "gradcheck": ["gradcheck"]}[command]
    status, _, err = run_cli(capsys, argv + [option] + value.split())
    assert status == 2 and option in err, err
    assert not out.exists()      # refused before any work


@pytest.mark.parametrize("command", ["evaluate", "scan", "patches-into-a-folder"])
def test_output_that_is_not_a_folder_is_refused_before_work(command, small_store_file, tiny_model_file, tiny_phantom,
                                                           tmp_path, capsys):
    folder, images = tiny_phantom
    existing = tmp_path / "existing"
    if command == "patches-into-a-folder":
        existing.mkdir()
        argv = ["patches", folder, "-o", existing]
    else:
        existing.write_text("a file, not a folder")
        argv = {"evaluate": ["evaluate", tiny_model_file, small_store_file, "-o", existing],
                "scan": ["scan", tiny_model_file, images[0].dicom_path, "-o", existing]}[command]
    status, _, err = run_cli(capsys, argv)
    assert status == 2 and str(existing) in err, err


def test_unwritable_output_is_refused_before_training(small_store_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    status, _, err = run_cli(capsys, ["train", small_store_file, "-o", blocker / "run", "--epochs", "1",
                                      "--backend", "numpy", "--quiet"])
    assert status == 2 and str(blocker) in err


@pytest.mark.parametrize("command", ["train", "scan", "gradcheck"])
def test_cuda_without_a_gpu_is_a_message(command, small_store_file, tiny_model_file, tiny_phantom, tmp_path, capsys):
    from shallowcnn.kernels import cuda_usable
    if cuda_usable():
        pytest.skip("a GPU (or the simulator) is present")
    _, images = tiny_phantom
    argv = {"train": ["train", small_store_file, "-o", tmp_path / "run", "--epochs", "1", "--quiet"],
            "scan": ["scan", tiny_model_file, images[0].dicom_path, "-o", tmp_path / "out"],
            "gradcheck": ["gradcheck"]}[command]
    status, _, err = run_cli(capsys, argv + ["--backend", "cuda"])
    assert status == 2 and "cuda" in err.lower()
