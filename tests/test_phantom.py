"""The phantom: INbreast formats, determinism, and mammogram-like content."""
from __future__ import annotations

import plistlib

import numpy as np
import pydicom
import pytest

from shallowcnn.cli import main
from shallowcnn.data.breast import breast_mask
from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.inbreast import ROI_KEYS, read_dicom
from shallowcnn.data.phantom import generate_phantom, parse_size
from shallowcnn.data.phantom_render import power_law_textures


def test_same_seed_same_files(tmp_path):
    a = generate_phantom(tmp_path / "a", cases=1, seed=7, size=(320, 400), verbose=False)
    b = generate_phantom(tmp_path / "b", cases=1, seed=7, size=(320, 400), verbose=False)
    for x, y in zip(a, b):
        assert x.dicom_path.name == y.dicom_path.name
        assert x.dicom_path.read_bytes() == y.dicom_path.read_bytes()
        if x.xml_path:
            assert x.xml_path.read_bytes() == y.xml_path.read_bytes()
    assert (tmp_path / "a" / "INbreast.csv").read_text() == (tmp_path / "b" / "INbreast.csv").read_text()
    c = generate_phantom(tmp_path / "c", cases=1, seed=8, size=(320, 400), verbose=False)
    assert c[0].dicom_path.read_bytes() != a[0].dicom_path.read_bytes()


def test_dicom_header_like_inbreast(tiny_phantom):
    _, images = tiny_phantom
    ds = pydicom.dcmread(images[0].dicom_path)
    assert ds.BitsStored == 14 and ds.BitsAllocated == 16 and ds.PhotometricInterpretation == "MONOCHROME2"
    assert [float(v) for v in ds.PixelSpacing] == [0.07, 0.07]
    assert ds.Modality == "MG" and "ImageLaterality" not in ds  # anonymised: from the file name


def test_xml_layout_like_inbreast(tiny_phantom):
    _, images = tiny_phantom
    xml_path = next(im.xml_path for im in images if im.xml_path is not None)
    text = xml_path.read_text()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist')
    assert "\r" not in text and "\n\t<key>Images</key>\n" in text
    for line in text.splitlines():  # each key and each value on its own line
        assert line.count("<key>") <= 1 and not ("</key>" in line and "<" in line.split("</key>")[1])
    roi = plistlib.loads(xml_path.read_bytes())["Images"][0]["ROIs"][0]
    assert tuple(sorted(roi)) == ROI_KEYS
    assert roi["Point_mm"][0] == "(0.000000, 0.000000, 0.000000)"
    assert roi["NumberOfPoints"] == len(roi["Point_px"])


def test_roi_kinds_and_types(tiny_phantom):
    _, images = tiny_phantom
    rois = [roi for im in images for roi in im.rois]
    types = {(roi.label, roi.type) for roi in rois}
    assert ("calcification", 19) in types and ("calcification", 15) in types
    outlines = [roi for roi in rois if roi.kind == "cluster"]
    assert outlines and all(roi.type == 9 and len(roi.points) == 200 for roi in outlines)
    assert any(roi.kind == "other" for roi in rois)
    # several images per patient, both views
    patients = {im.patient for im in images}
    assert all(sum(im.patient == p for im in images) in (2, 4) for p in patients)
    assert {im.view for im in images} == {"CC", "MLO"}


def test_clusters_have_3_to_30_calcifications_within_1cm(tiny_phantom):
    _, images = tiny_phantom
    for im in images:
        for cluster in find_clusters(im.rois):
            if cluster.source == "outline":
                continue
            assert 3 <= len(cluster.members) <= 30
            span = cluster.members.max(axis=0) - cluster.members.min(axis=0)
            assert (span < 144).all()


def test_calcifications_are_brighter_than_their_surroundings(tiny_phantom):
    _, images = tiny_phantom
    contrasts = []
    for im in images:
        pixels = read_dicom(im.dicom_path).pixels.astype(float)
        for roi in im.rois:
            if roi.kind != "calcification":
                continue
            c, r = np.rint(roi.centre_xy).astype(int)
            centre = pixels[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].max()
            ring = np.median(pixels[max(r - 15, 0):r + 16, max(c - 15, 0):c + 16])
            contrasts.append(centre - ring)
    contrasts = np.array(contrasts)
    assert np.median(contrasts) > 100          # most are visible
    assert np.quantile(contrasts, 0.1) < 150   # some are hard to see


def test_breast_on_dark_background_with_skin_falloff(tiny_phantom):
    _, images = tiny_phantom
    pixels = read_dicom(images[0].dicom_path).pixels.astype(float)
    mask = breast_mask(pixels)
    assert 0.2 < mask.mean() < 0.9
    assert np.median(pixels[~mask]) < 0.2 * np.median(pixels[mask])


def test_texture_has_power_law_spectrum_beta_3():
    texture, _ = power_law_textures(np.random.default_rng(0), 512, 512, beta=3.0, largest_px=1e9)
    power = np.abs(np.fft.fft2(texture)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(512), np.fft.fftfreq(512), indexing="ij"))
    band = (f > 0.01) & (f < 0.3)
    slope = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert abs(slope + 3.0) < 0.15


def test_parse_size():
    assert parse_size("full") == (3328, 4084)
    assert parse_size("640x800") == (640, 800)
    with pytest.raises(ValueError):
        parse_size("big")
    with pytest.raises(ValueError):
        parse_size("100x100")


def test_cli_refuses_existing_folder_without_traceback(tiny_phantom, capsys):
    folder, _ = tiny_phantom
    status = main(["phantom", str(folder), "--cases", "1", "--quiet"])
    captured = capsys.readouterr()
    assert status == 2 and "already holds AllDICOMs" in captured.err and "Traceback" not in captured.err
