"""Property-based tests (Hypothesis) of the XML point parser, the ROI reader and the DICOM
header check: whatever a file holds, the answer is a valid value or a named refusal."""
from __future__ import annotations

import math
import plistlib

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (pip install -e .[test])")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from shallowcnn.data.dicom import (MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_PIXEL_VALUE, PIXEL_MM_RANGE,  # noqa: E402
                                   DicomHeader, check_dicom_header)
from shallowcnn.data.inbreast import InbreastError, parse_point, read_rois  # noqa: E402

finite = st.floats(allow_nan=False, allow_infinity=False)
anything_numeric = st.one_of(st.floats(), st.integers(min_value=-10 ** 30, max_value=10 ** 30),
                             st.text(max_size=12), st.none(), st.booleans(),
                             st.lists(st.floats(), max_size=3))


@given(finite, finite)
def test_parse_point_reads_back_what_was_written(x, y):
    assert parse_point(f"({x!r}, {y!r})") == (x, y)
    assert parse_point(f" ( {x!r} ,{y!r}, 0.0 ) ") == (x, y)     # OsiriX's optional z


@given(st.one_of(st.text(max_size=60), st.from_regex(r"\(\s*[-+0-9.eEna]{0,12}\s*,\s*[-+0-9.eEinf]{0,12}\s*\)"),
                 st.integers(), st.floats(), st.none(), st.lists(st.text(max_size=3), max_size=2)))
def test_parse_point_gives_finite_numbers_or_a_short_value_error(text):
    try:
        x, y = parse_point(text)
    except ValueError as e:
        assert len(str(e)) < 120
    else:
        assert math.isfinite(x) and math.isfinite(y)


# plistlib cannot write control characters or lone surrogates, so texts avoid them
plist_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)
plist_values = st.recursive(
    st.one_of(plist_text, st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1), st.floats(),
              st.booleans(), st.just("(10.5, 20.5)"), st.just("(1e999, 2)")),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(plist_text, children, max_size=4)),
    max_leaves=12)

roi_entries = st.fixed_dictionaries(
    {"Name": st.one_of(st.sampled_from(["Calcification", "Cluster", "Mass", "odd"]), plist_values),
     "Type": st.one_of(st.sampled_from([19, 15, 9]), plist_values),
     "Point_px": st.one_of(st.lists(st.one_of(st.builds("({:.3f}, {:.3f})".format, finite, finite),
                                              plist_values), max_size=4), plist_values)},
    optional={"IndexInImage": plist_values})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(roi_entries, max_size=4))
def test_read_rois_returns_checked_rois_or_names_the_file(tmp_path, entries):
    path = tmp_path / "x.xml"
    path.write_bytes(plistlib.dumps({"Images": [{"ROIs": entries}]}))
    try:
        rois = read_rois(path, image_shape=(400, 300))
    except InbreastError as e:
        assert str(e).startswith(str(path)) and len(str(e)) < 400
        return
    for roi in rois:
        assert roi.points.ndim == 2 and roi.points.shape[1] == 2 and len(roi.points)
        assert np.all(np.isfinite(roi.points))
        assert np.all((roi.points >= 0) & (roi.points <= [299, 399]))
        assert isinstance(roi.index, int) and isinstance(roi.type, int)


header_values = st.fixed_dictionaries({}, optional={
    "Rows": anything_numeric, "Columns": anything_numeric, "BitsAllocated": anything_numeric,
    "BitsStored": anything_numeric, "PixelRepresentation": anything_numeric,
    "RescaleSlope": anything_numeric, "RescaleIntercept": anything_numeric, "NumberOfFrames": anything_numeric,
    "SamplesPerPixel": anything_numeric, "PixelSpacing": anything_numeric,
    "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "", "monochrome2 "])})


@settings(max_examples=400, deadline=None)
@given(header_values)
def test_dicom_header_check_accepts_only_what_can_be_read(header):
    try:
        found = check_dicom_header(header, "x.dcm")
    except InbreastError as e:
        assert str(e).startswith("x.dcm: ") and len(str(e)) < 300
        return
    assert isinstance(found, DicomHeader)
    assert 1 <= found.rows <= MAX_IMAGE_SIDE and 1 <= found.columns <= MAX_IMAGE_SIDE
    assert found.rows * found.columns <= MAX_IMAGE_PIXELS
    assert all(PIXEL_MM_RANGE[0] <= s <= PIXEL_MM_RANGE[1] for s in found.spacing_mm)
    assert math.isfinite(found.slope) and math.isfinite(found.intercept) and found.slope != 0
    top = (1 << found.bits_stored) - 1
    assert abs(found.slope * top + found.intercept) <= MAX_PIXEL_VALUE
    assert found.bits_allocated in (8, 16, 32) and 1 <= found.bits_stored <= found.bits_allocated


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 4096), columns=st.integers(1, 4096), bits=st.sampled_from([(16, 14), (16, 12), (8, 8)]),
       slope=st.sampled_from([1, 2, 0.5, "1.0", "1"]), intercept=st.integers(-1024, 1024),
       spacing=st.floats(0.05, 0.1), monochrome=st.sampled_from(["MONOCHROME1", "MONOCHROME2"]))
def test_dicom_header_check_accepts_every_ordinary_mammogram(rows, columns, bits, slope, intercept, spacing,
                                                            monochrome):
    header = {"Rows": rows, "Columns": columns, "BitsAllocated": bits[0], "BitsStored": bits[1],
              "RescaleSlope": slope, "RescaleIntercept": intercept, "PixelSpacing": [spacing, spacing],
              "PhotometricInterpretation": monochrome}
    found = check_dicom_header(header, "x.dcm")
    assert (found.rows, found.columns, found.bits_stored) == (rows, columns, bits[1])
    assert found.spacing_mm == (spacing, spacing) and found.slope == float(slope)
