"""Every bad input gets a clear message; one bad file never costs the good ones.

Each row of the tables below makes one bad input on the fly (from the tiny phantom, a
tiny model or a tiny store), runs the command line in-process and checks:

* the exit status;
* that the message names the bad file or option;
* that no traceback reaches stderr;
* for folder runs, that every good image of the same run is still used.
"""
from __future__ import annotations

import json
import os
import plistlib
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config

from shallowcnn.cli import main
from shallowcnn.data import dicom, inbreast
from shallowcnn.data.patches import load_patches
from shallowcnn.model import ShallowCNN
from shallowcnn.storage import METADATA_KEY, load_npz, save_npz


def run_cli(capsys, argv) -> tuple:
    """``(status, stdout, stderr)`` of ``shallowcnn ARGV`` run in-process; argparse's exit
    (status 2 for a bad option) counts as a status. Fails on any traceback."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    return status, out, err


# ---------------------------------------------------------------------------------------
# Folder runs: one bad DICOM / XML / CSV / entry among good images (`patches`)
# ---------------------------------------------------------------------------------------


def edit_dicom(path: Path, **attributes) -> None:
    """Set header attributes of a DICOM, writing values pydicom would refuse to write."""
    ds = pydicom.dcmread(path)
    mode = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        for key, value in attributes.items():
            setattr(ds, key, value)
        ds.save_as(path)
    finally:
        pydicom_config.settings.writing_validation_mode = mode


def deflate_dicom(path: Path) -> None:
    """Re-write a DICOM with the deflated transfer syntax (the data set zlib-compressed)."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def deep_binary_plist(depth: int) -> bytes:
    """A binary property list of ``depth`` arrays, each holding the next (plistlib reads it
    by recursion). Format: "bplist00", the objects, the offset table, a 32-byte trailer."""
    ref_size = offset_size = 4
    objects, offsets = bytearray(b"bplist00"), []
    for k in range(depth):
        offsets.append(len(objects))
        objects += b"\xa1" + (k + 1).to_bytes(ref_size, "big")     # array of one reference
    offsets.append(len(objects))
    objects += b"\xa0"                                               # the innermost: empty array
    table_at = len(objects)
    for offset in offsets:
        objects += offset.to_bytes(offset_size, "big")
    objects += struct.pack(">6xBBQQQ", offset_size, ref_size, len(offsets), 0, table_at)
    return bytes(objects)


def xml_with(entries) -> bytes:
    return plistlib.dumps({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(entries), "ROIs": entries}]})


def roi(name="Calcification", points=("(100.5, 100.5)",), **extra):
    return {"Name": name, "Type": 19, "Point_px": list(points), "IndexInImage": 0, **extra}


def damage_dicom(**attributes):
    def damage(folder, image):
        edit_dicom(folder / "AllDICOMs" / image.dicom_path.name, **attributes)
        return image.dicom_path.name
    return damage


def damage_xml(content):
    def damage(folder, image):
        path = folder / "AllXML" / f"{image.file_name}.xml"
        path.write_bytes(content() if callable(content) else content)
        return path.name
    return damage


def _bomb(folder, image):
    path = folder / "AllDICOMs" / image.dicom_path.name
    deflate_dicom(path)
    return path.name


FOLDER_CASES = {
    # DICOM header values (class 4, 5, 6, 10)
    "slope-nan": damage_dicom(RescaleSlope="NaN"),
    "slope-inf": damage_dicom(RescaleSlope="inf"),
    "slope-1e30": damage_dicom(RescaleSlope="1e30"),
    "slope-overflows-int32": damage_dicom(RescaleSlope="1e9"),
    "intercept-nan": damage_dicom(RescaleIntercept="NaN"),
    "intercept-1e30": damage_dicom(RescaleIntercept="-1e30"),
    "spacing-nan": damage_dicom(PixelSpacing=["nan", "0.07"]),
    "spacing-inf": damage_dicom(PixelSpacing=["inf", "inf"]),
    "spacing-zero": damage_dicom(PixelSpacing=["0", "0"]),
    "spacing-100mm": damage_dicom(PixelSpacing=["100", "100"]),
    "spacing-one-number": damage_dicom(PixelSpacing=["0.07"]),
    "rows-20000": damage_dicom(Rows=20000, Columns=20000),
    "rows-zero": damage_dicom(Rows=0),
    "three-frames": damage_dicom(NumberOfFrames=3),
    "bits-stored-40": damage_dicom(BitsStored=40),
    "photometric-rgb": damage_dicom(PhotometricInterpretation="RGB"),
    "deflated-beyond-limit": _bomb,       # with the limits lowered by the test
    # XML (class 4, 10)
    "index-abc": damage_xml(xml_with([roi(IndexInImage="abc")])),
    "index-dict": damage_xml(xml_with([roi(IndexInImage={"a": 1})])),
    "index-nan": damage_xml(xml_with([roi(IndexInImage=float("nan"))])),
    "type-inf": damage_xml(xml_with([roi(Type=float("inf"))])),
    "point-1e999": damage_xml(xml_with([roi(points=["(1e999, 5)"])])),
    "point-309-digits": damage_xml(xml_with([roi(points=[f"({'9' * 309}.0, 5)"])])),
    "point-text": damage_xml(xml_with([roi(points=["(abc, 5)"])])),
    "points-not-array": damage_xml(xml_with([roi(points="(1, 2)")])),
    "point-number": damage_xml(xml_with([{**roi(), "Point_px": [5]}])),
    "deep-binary-plist": damage_xml(lambda: deep_binary_plist(100_000)),
    "too-many-rois": damage_xml(lambda: xml_with([roi()] * (inbreast.MAX_ROIS + 1))),
    "not-utf8": damage_xml(b"<?xml version='1.0'?><plist><dict><key>\xff\xfe</key></dict></plist>"),
}


@pytest.fixture(scope="module")
def phantom_copy(tiny_phantom, tmp_path_factory):
    """A function giving a fresh copy of the tiny phantom folder."""
    source, images = tiny_phantom
    base = tmp_path_factory.mktemp("bad_folders")

    def copy(name):
        target = base / name
        shutil.copytree(source, target)
        return target
    return copy, images


def patches_run(capsys, folder, tmp_path, *extra):
    out = tmp_path / "store.npz"
    status, stdout, stderr = run_cli(capsys, ["patches", folder, "-o", out, "--no-figures",
                                              "--no-augment", *extra])
    return status, stdout + stderr, out


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_one_bad_file_skips_only_that_image(case, phantom_copy, tmp_path, capsys, monkeypatch):
    copy, images = phantom_copy
    folder = copy(case)
    with_xml = [im for im in images if im.xml_path is not None]
    if case == "deflated-beyond-limit":   # a real 20000 x 20000 bomb is too big for a test:
        # lower what a deflated file may inflate to (100 KB; the image holds 540 KB)
        monkeypatch.setattr(dicom, "DEFLATE_SLACK_BYTES", 100_000 - 4 * dicom.MAX_IMAGE_PIXELS)
    bad_name = FOLDER_CASES[case](folder, with_xml[0])
    status, text, out = patches_run(capsys, folder, tmp_path)
    assert status == 0, text
    assert bad_name in text and "skipped 1 case" in text
    store = load_patches(out)
    assert store.metadata["images"] == len(images) - 1            # every good image was used
    assert [Path(p).name for p, _ in store.metadata["skipped"]] == [bad_name]


def test_many_calcifications_in_one_square_cm_finish(phantom_copy, tmp_path, capsys):
    """1,000 calcifications in 1 cm^2 used to hang `patches` for minutes (class 3)."""
    copy, images = phantom_copy
    folder = copy("crowded")
    rng = np.random.default_rng(0)
    points = [f"({x:.2f}, {y:.2f})" for x, y in rng.uniform(200, 344, size=(1000, 2))]
    image = [im for im in images if im.xml_path is not None][0]
    (folder / "AllXML" / f"{image.file_name}.xml").write_bytes(
        xml_with([roi(points=[p], IndexInImage=k) for k, p in enumerate(points)]))
    status, text, out = patches_run(capsys, folder, tmp_path)
    assert status == 0, text
    assert load_patches(out).metadata["images"] == len(images)


def test_many_unknown_roi_names_are_summarised(phantom_copy, tmp_path, capsys):
    copy, images = phantom_copy
    folder = copy("names")
    image = [im for im in images if im.xml_path is not None][0]
    (folder / "AllXML" / f"{image.file_name}.xml").write_bytes(
        xml_with([roi(name=f"odd name {k}") for k in range(500)]))
    status, text, _ = patches_run(capsys, folder, tmp_path)
    assert status == 0
    assert sum("unknown name" in line for line in text.splitlines()) <= 20
    assert "more kinds of note" in text


@pytest.mark.parametrize("case", ["huge-field", "unterminated-quote", "not-utf8-header"])
def test_bad_csv_is_ignored_with_a_note(case, phantom_copy, tmp_path, capsys):
    copy, images = phantom_copy
    folder = copy(f"csv-{case}")
    path = folder / "INbreast.csv"
    text = path.read_text()
    if case == "huge-field":
        text += "x;" + "y" * 200_000 + "\n"
    elif case == "unterminated-quote":
        text += 'removed;"never closed;R;CC\n'
    else:
        path.write_bytes(b"\xff\xfe" + path.read_bytes()[:10])
    if case != "not-utf8-header":
        path.write_text(text)
    status, out, _ = patches_run(capsys, folder, tmp_path)
    assert status == 0 and "INbreast.csv" in out
    assert load_patches(tmp_path / "store.npz").metadata["images"] == len(images)


@pytest.mark.parametrize("case", ["folder", "fifo", "dangling-link"])
def test_odd_entries_in_alldicoms_are_named(case, phantom_copy, tmp_path, capsys):
    copy, images = phantom_copy
    folder = copy(f"entry-{case}")
    odd = folder / "AllDICOMs" / "odd_entry.dcm"
    if case == "folder":
        odd.mkdir()
    elif case == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to(folder / "nowhere.dcm")
    status, out, store_path = patches_run(capsys, folder, tmp_path)
    assert status == 0 and "odd_entry.dcm" in out and "not a regular file" in out
    assert load_patches(store_path).metadata["images"] == len(images)


def test_empty_class_folder_is_noted(tmp_path, capsys):
    from PIL import Image
    (tmp_path / "png" / "0").mkdir(parents=True)
    (tmp_path / "png" / "1").mkdir()
    for k in range(4):
        Image.fromarray(np.full((144, 144), 40 * k, np.uint8)).save(tmp_path / "png" / "0" / f"p{k}_a.png")
    status, out, _ = patches_run(capsys, tmp_path / "png", tmp_path)
    assert status == 0 and "1/" in out and "empty" in out


@pytest.mark.parametrize("case", ["bomb-header", "truncated", "fifo"])
def test_one_bad_png_patch_skips_only_that_file(case, tmp_path, capsys):
    from PIL import Image
    for label in (0, 1):
        (tmp_path / "png" / str(label)).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((144, 144), 50 * k + label, np.uint8)).save(
                tmp_path / "png" / str(label) / f"p{k}_a.png")
    bad = tmp_path / "png" / "1" / "bad.png"
    if case == "bomb-header":
        bad.write_bytes(png_claiming(20000, 20000))
    elif case == "truncated":
        bad.write_bytes(png_claiming(300, 300)[:40])
    else:
        os.mkfifo(bad)
    status, out, store_path = patches_run(capsys, tmp_path / "png", tmp_path)
    assert status == 0 and "bad.png" in out
    assert len(load_patches(store_path)) == 6


# ---------------------------------------------------------------------------------------
# Models, checkpoints and patch stores (classes 5, 6, 7, 10)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """A small model (2 and 3 filters of 5x5) that evaluates in milliseconds."""
    path = tmp_path_factory.mktemp("model") / "model.npz"
    ShallowCNN(seed=0, channels=(2, 3), kernel_size=5).save(path)
    return path


@pytest.fixture(scope="module")
def small_store_file(small_store):
    return small_store[0]


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


# ---------------------------------------------------------------------------------------
# Scanning: a bad image among good ones, huge PNGs, same-named inputs (classes 4, 5, 9)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("paper_model") / "model.npz"
    ShallowCNN(seed=0).save(path)
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height 8-bit grey pixels; its data are a few bytes
    (a decompression bomb's header; Pillow reads only the header on open)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


SCAN_CASES = {
    "png-20000x20000": lambda d: (d / "bomb.png").write_bytes(png_claiming(20000, 20000)) and d / "bomb.png",
    "png-truncated": lambda d: (d / "cut.png").write_bytes(png_claiming(300, 300)[:40]) and d / "cut.png",
    "dicom-slope-nan": "slope",
    "dicom-spacing-100mm": "spacing",
}


@pytest.mark.parametrize("case", sorted(SCAN_CASES))
def test_scan_skips_a_bad_image_and_scans_the_good_one(case, tiny_phantom, paper_model_file, tmp_path, capsys):
    _, images = tiny_phantom
    good = tmp_path / "good.dcm"
    shutil.copy(images[0].dicom_path, good)
    make = SCAN_CASES[case]
    if callable(make):
        bad = make(tmp_path)
    else:
        bad = tmp_path / "bad.dcm"
        shutil.copy(images[1].dicom_path, bad)
        edit_dicom(bad, **({"RescaleSlope": "NaN"} if make == "slope" else {"PixelSpacing": ["100", "100"]}))
    status, out, err = run_cli(capsys, ["scan", paper_model_file, bad, good, "-o", tmp_path / "out",
                                        "--stride", "32", "--backend", "numba", "--quiet"])
    assert status == 1 and str(bad) in out + err
    summary = json.loads((tmp_path / "out" / "scan_summary.json").read_text())
    assert [Path(s["image"]).name for s in summary["images"]] == ["good.dcm"]
    assert [Path(f["image"]).name for f in summary["failed"]] == [bad.name]


@pytest.mark.parametrize("pixel_size", ["1000", "inf", "0"])
def test_scan_pixel_size_out_of_range_is_refused(pixel_size, tiny_phantom, paper_model_file, tmp_path, capsys):
    _, images = tiny_phantom
    status, out, err = run_cli(capsys, ["scan", paper_model_file, images[0].dicom_path, "-o", tmp_path / "out",
                                        "--pixel-size", pixel_size, "--quiet"])
    assert status in (1, 2) and ("pixel size" in out + err or "--pixel-size" in err)


def test_same_named_inputs_get_distinct_outputs(tiny_phantom, paper_model_file, tmp_path, capsys):
    _, images = tiny_phantom
    for folder, image in (("a", images[0]), ("b", images[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(image.dicom_path, tmp_path / folder / "img.dcm")
    status, _, _ = run_cli(capsys, ["scan", paper_model_file, tmp_path / "a" / "img.dcm", tmp_path / "b" / "img.dcm",
                                    "-o", tmp_path / "out", "--stride", "32", "--backend", "numba", "--quiet"])
    assert status == 0
    summary = json.loads((tmp_path / "out" / "scan_summary.json").read_text())
    files = [s["files"]["detections"] for s in summary["images"]]
    assert files == ["a_img.detections.json", "b_img.detections.json"]
    assert all((tmp_path / "out" / f).exists() for f in files)
