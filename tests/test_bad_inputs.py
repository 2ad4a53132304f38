"""Every bad input gets a clear message; one bad file never costs the good ones (issue 14): folder runs.

The other surfaces are in tests/test_bad_inputs_*.py (one file each); helpers shared
by them in tests/bad_inputs_common.py.

Each row of the tables below makes one bad input on the fly (from the tiny phantom, a
tiny model or a tiny store), runs the command line in-process and checks:

* the exit status;
* that the message names the bad file or option;
* that no traceback reaches stderr;
* for folder runs, that every good image of the same run is still used.
"""
from __future__ import annotations

import os
import plistlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from bad_inputs_common import edit_dicom, png_claiming, run_cli

from shallowcnn.data import dicom, inbreast
from shallowcnn.data.patches import load_patches

# ---------------------------------------------------------------------------------------
# Folder runs: one bad DICOM / XML / CSV / entry among good images (`patches`)
# ---------------------------------------------------------------------------------------


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
