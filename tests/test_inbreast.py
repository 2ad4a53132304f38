"""The INbreast reader, on phantom files and on deliberately broken ones."""
from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from shallowcnn.cli import main
from shallowcnn.data import inbreast
from shallowcnn.data.inbreast import (InbreastError, list_cases, load_case, make_roi, parse_dicom_name,
                                      read_csv, read_dicom, read_rois)
from shallowcnn.data.patches import make_patches
from shallowcnn.data.phantom_files import dicom_bytes


def test_reader_recovers_exactly_the_rois_the_phantom_wrote(tiny_phantom):
    folder, images = tiny_phantom
    cases = {case.file_name: case for case in list_cases(folder).cases}
    assert set(cases) == {im.file_name for im in images}
    for written in images:
        case = cases[written.file_name]
        assert (case.patient, case.laterality, case.view) == (written.patient, written.laterality, written.view)
        image, rois = load_case(case)
        assert len(rois) == len(written.rois)
        for got, want in zip(rois, written.rois):
            assert (got.name, got.label, got.kind, got.type, got.index) == \
                   (want.name, want.label, want.kind, want.type, want.index)
            np.testing.assert_array_equal(got.points, want.points)
        if written.xml_path is None:
            assert case.xml_path is None and rois == []


def test_dicom_pixels_spacing_and_bits(tiny_phantom):
    folder, images = tiny_phantom
    image = read_dicom(images[0].dicom_path)
    assert image.pixels.dtype == np.int32 and image.pixels.shape == (560, 480)
    assert image.spacing_mm == (0.07, 0.07) and image.bits_stored == 14
    assert 0 <= image.pixels.min() and image.pixels.max() < 2 ** 14


def _tiny_dicom(tmp_path, values, **attributes):
    path = tmp_path / "x.dcm"
    path.write_bytes(dicom_bytes(values.astype(np.uint16), "test:0", "0" * 16))
    ds = pydicom.dcmread(path)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


def test_monochrome1_is_inverted_then_rescaled(tmp_path):
    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    path = _tiny_dicom(tmp_path, values, PhotometricInterpretation="MONOCHROME1",
                       RescaleSlope=2, RescaleIntercept=-5)
    np.testing.assert_array_equal(read_dicom(path).pixels, 2 * (16383 - values.astype(np.int64)) - 5)


def test_bits_above_bits_stored_are_ignored(tmp_path):
    values = np.array([[0x4000 | 5, 7]], dtype=np.uint16)  # bit 14 set: outside 14 stored bits
    path = _tiny_dicom(tmp_path, values)
    np.testing.assert_array_equal(read_dicom(path).pixels, [[5, 7]])


@pytest.mark.parametrize("bits, signed, photometric, slope, intercept", [
    (14, False, "MONOCHROME2", 1, 0), (12, True, "MONOCHROME2", 1, 0), (16, True, "MONOCHROME1", 1, 0),
    (16, False, "MONOCHROME1", 3, -70000), (12, True, "MONOCHROME1", 2, 7), (10, True, "MONOCHROME2", 0.25, -1.5)])
def test_stored_words_become_values_as_the_standard_says(tmp_path, bits, signed, photometric, slope, intercept):
    """Every 16-bit word, worked one by one in Python integers: keep the BitsStored low bits,
    sign-extend, invert MONOCHROME1 over the stored range, rescale (the reader works whole
    arrays, in int32 where that suffices)."""
    words = np.array([[0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x0800], [0x07FF, 0x0FFF, 0x1234, 0xC000, 0x4001, 0x3FFF]],
                     dtype=np.uint16)
    path = _tiny_dicom(tmp_path, words, BitsStored=bits, HighBit=bits - 1, PixelRepresentation=int(signed),
                       PhotometricInterpretation=photometric, RescaleSlope=slope, RescaleIntercept=intercept)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def value(word):
        v = int(word) & ((1 << bits) - 1)
        if signed and v >= 1 << (bits - 1):
            v -= 1 << bits
        if photometric == "MONOCHROME1":
            v = lo + hi - v
        return v * slope + intercept

    pixels = read_dicom(path).pixels
    assert pixels.dtype == (np.float32 if isinstance(slope, float) else np.int32)
    np.testing.assert_array_equal(pixels, [[value(w) for w in row] for row in words])


def test_non_integer_rescale_gives_float(tmp_path):
    path = _tiny_dicom(tmp_path, np.array([[10, 20]]), RescaleSlope=0.5)
    pixels = read_dicom(path).pixels
    assert pixels.dtype == np.float32 and pixels.tolist() == [[5.0, 10.0]]


def test_file_names_give_patient_laterality_view():
    parts = parse_dicom_name("20586908_6c613a14b80a8591_MG_R_ML_ANON.dcm")
    assert parts == {"file_name": "20586908", "patient": "6c613a14b80a8591", "laterality": "R", "view": "MLO"}
    with pytest.raises(ValueError):
        parse_dicom_name("20586908_nothex_MG_R_CC_ANON.dcm")


@pytest.mark.parametrize("name,label,kind", [
    ("Calcification", "calcification", "calcification"), ("calcifications ", "calcification", "calcification"),
    ("Cluster", "cluster", "cluster"), ("Spiculated region", "spiculated region", "other"),
    ("Espiculated Region", "spiculated region", "other"), ("Assymetry", "asymmetry", "other"),
    ("", "unnamed", "other"), ("UNNAMED", "unnamed", "other"), ("Point 3", "point", "other")])
def test_roi_names_are_normalised(name, label, kind):
    roi = make_roi(name, 19, [(1.0, 2.0)])
    assert (roi.label, roi.kind, roi.known) == (label, kind, True)
    assert roi.name == name  # verbatim name kept


def test_csv_blank_acr_birads_letters_and_footer(tmp_path):
    path = tmp_path / "INbreast.csv"
    path.write_text("Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\n"
                    "removed;removed;R;CC;200902;20586908;  ;4a\n"
                    "removed;removed;L;FB;200902;20586934;2;1\n"
                    ";;;;;;;\nTotal;;;;;;;\n")
    rows = read_csv(path)
    assert set(rows) == {"20586908", "20586934"}
    assert rows["20586908"].acr is None and rows["20586908"].birads == "4a"
    assert rows["20586934"].view == "FB"


@pytest.fixture()
def broken_folder(tiny_phantom, tmp_path):
    """A copy of the tiny phantom with one of each kind of bad input."""
    folder, images = tiny_phantom
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    with_xml = [im for im in images if im.xml_path is not None]
    names = {}
    # truncated DICOM
    target = broken / "AllDICOMs" / images[0].dicom_path.name
    target.write_bytes(target.read_bytes()[:2000])
    names["truncated"] = target.name
    # not a DICOM at all
    target = broken / "AllDICOMs" / images[1].dicom_path.name
    target.write_bytes(b"this is not a DICOM file\n" * 10)
    names["not_dicom"] = target.name
    # XML that is not a property list
    target = broken / "AllXML" / with_xml[-1].xml_path.name
    target.write_text("<html><body>not a plist</body></html>")
    names["bad_xml"] = target.name
    # an XML without its DICOM partner
    orphan = broken / "AllXML" / "99999999.xml"
    shutil.copy(with_xml[-3].xml_path, orphan)
    names["orphan"] = orphan.name
    return broken, names


def test_every_bad_input_is_named_skipped_and_counted(broken_folder, tmp_path):
    folder, names = broken_folder
    store = make_patches(folder, tmp_path / "p.npz", verbose=False)
    skipped = dict((path.split("/")[-1], reason) for path, reason in store.metadata["skipped"])
    assert set(skipped) == set(names.values())
    assert "truncated" in skipped[names["truncated"]]
    assert "not a DICOM" in skipped[names["not_dicom"]]
    assert "property list" in skipped[names["bad_xml"]]
    assert "left out" in skipped[names["bad_xml"]] and ".dcm" in skipped[names["bad_xml"]]
    assert "without its DICOM" in skipped[names["orphan"]]
    assert len(store) > 0  # the good cases still made patches


def test_cli_prints_summary_without_traceback(broken_folder, tmp_path, capsys):
    folder, names = broken_folder
    status = main(["patches", str(folder), "-o", str(tmp_path / "p.npz"), "--quiet", "--no-figures"])
    assert status == 0
    status = main(["patches", str(folder), "-o", str(tmp_path / "p.npz"), "--no-figures"])
    out = capsys.readouterr()
    assert status == 0 and "Traceback" not in out.out + out.err
    assert "skipped 4 case(s)" in out.out
    for name in names.values():
        assert name in out.out


def test_read_rois_errors_name_the_file(tmp_path):
    path = tmp_path / "1.xml"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InbreastError) as info:
        read_rois(path)
    assert str(path) in str(info.value)
    with pytest.raises(InbreastError, match="no such file"):
        read_dicom(tmp_path / "missing.dcm")


def test_images_without_xml_are_normal_and_counted(tiny_phantom):
    folder, images = tiny_phantom
    cases = list_cases(folder)
    without = sum(im.xml_path is None for im in images)
    assert cases.problems.skipped == []
    assert cases.problems.notes.get("images without XML (no findings)", 0) == without


def test_not_an_inbreast_folder(tmp_path):
    with pytest.raises(InbreastError, match="AllDICOMs"):
        inbreast.list_cases(tmp_path)
