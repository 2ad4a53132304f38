"""Scanning: a bad image among good ones, huge PNGs, same-named inputs (issue 14).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bad_inputs_common import edit_dicom, png_claiming, run_cli

from shallowcnn.model import ShallowCNN


# ---------------------------------------------------------------------------------------
# Scanning: a bad image among good ones, huge PNGs, same-named inputs (classes 4, 5, 9)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("paper_model") / "model.npz"
    ShallowCNN(seed=0).save(path)
    return path


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
