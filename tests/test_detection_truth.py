"""The truth a whole-image detector is scored against: annotation points on the border,
positive windows for every cluster, and the FROC hit rule (issue 23)."""
from __future__ import annotations

import plistlib
import shutil
import warnings

import numpy as np
import pytest

from shallowcnn.cli import main
from shallowcnn.data.clusters import Cluster, find_clusters
from shallowcnn.data.inbreast import AnnotationClipped, list_cases, load_case, make_roi, read_rois
from shallowcnn.data.patches import POSITIVE_STRIDE, clusters_without_positives, make_patches, positive_windows
from shallowcnn.data.problems import Problems
from shallowcnn.froc import DEFAULT_HULL_MARGIN, convex_hull, distance_to_hull, match_detections


def _xml(path, rois):
    """A hand-written INbreast property list: rois = [(name, type, ["(x, y)", ...]), ...]."""
    entries = [{"Name": name, "Type": kind, "Point_px": points, "IndexInImage": i}
               for i, (name, kind, points) in enumerate(rois)]
    path.write_bytes(plistlib.dumps({"Images": [{"ROIs": entries}]}, fmt=plistlib.FMT_XML))
    return path


# --------------------------------------------------------------------------- the border


def test_point_up_to_the_width_lies_in_the_last_column(tmp_path):
    path = _xml(tmp_path / "a.xml", [("Mass", 15, ["(3327.74, 10.0)", "(3000.0, 4083.9)", "(3100.5, 20.0)"])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # sub-pixel up to W is no warning
        rois = read_rois(path, image_shape=(4084, 3328), image_name="img.dcm")
    np.testing.assert_array_equal(rois[0].points, [[3327.0, 10.0], [3000.0, 4083.0], [3100.5, 20.0]])


def test_point_truly_outside_is_clipped_with_a_warning_naming_image_file_and_roi(tmp_path):
    path = _xml(tmp_path / "b.xml", [("Calcification", 19, ["(50, 60)"]),
                                     ("Cluster", 9, ["(10, 10)", "(400.0, 12)", "(-3.5, 90)"]),
                                     ("Calcification", 19, ["(70, 80)"])])
    with pytest.warns(AnnotationClipped) as caught:
        rois = read_rois(path, image_shape=(100, 200), image_name="20586908_x_MG_R_CC_ANON.dcm")
    message = str(caught[0].message)
    assert "20586908_x_MG_R_CC_ANON.dcm" in message and str(path) in message and "ROI 1 ('Cluster')" in message
    assert "x=400" in message and "2 point(s)" in message
    assert len(rois) == 3                                            # the rest of the file is kept
    np.testing.assert_array_equal(rois[1].points, [[10, 10], [199, 12], [0, 90]])
    np.testing.assert_array_equal(rois[2].points, [[70, 80]])
    problems = Problems()                                            # or recorded for the summary
    read_rois(path, image_shape=(100, 200), image_name="img.dcm", problems=problems)
    assert any("img.dcm" in note and "ROI 1" in note for note in problems.notes)


def test_patches_keep_an_image_whose_xml_has_a_point_outside(tiny_phantom, tmp_path, capsys):
    folder, images = tiny_phantom
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    case = next(c for c in list_cases(copy).cases if c.xml_path is not None)
    text = case.xml_path.read_text()
    first = text.index("<string>(", text.index("Point_px"))
    end = text.index(")</string>", first)
    case.xml_path.write_text(text[:first] + "<string>(99999.000000, 5.000000" + text[end:])
    _, rois = load_case(case, Problems())
    assert len(rois) == len(read_rois(case.xml_path))                # no ROI lost
    status = main(["patches", str(copy), "-o", str(tmp_path / "p.npz"), "--no-figures"])
    out = capsys.readouterr().out
    assert status == 0 and "skipped 0 case(s)" in out
    assert case.dicom_path.name in out and "clipped" in out
    # scan reads the same truth: the clipped point is a warning line naming the XML, not a library source line
    status = main(["scan", _tiny_model(tmp_path), str(case.dicom_path),
                   "-o", str(tmp_path / "scan"), "--quiet", "--backend", "numpy"])
    err = capsys.readouterr().err
    assert status == 0 and f"shallowcnn scan: warning: {case.xml_path}: ROI " in err
    assert "clipped to the border" in err and case.dicom_path.name in err and "inbreast.py" not in err


def _tiny_model(tmp_path) -> str:
    from shallowcnn.model import ShallowCNN

    return str(ShallowCNN(backend="numpy", seed=0).save(tmp_path / "m.npz"))


# ------------------------------------------------------------------- positive windows


def _spread_cluster(width_px: float):
    """Calcifications along a row, ``width_px`` wide, 20 px apart: one cluster."""
    cols = np.arange(300.0, 300.0 + width_px + 1, 20.0)
    members = np.stack([np.full(len(cols), 400.3), cols], axis=1)
    return Cluster(centre=members.mean(axis=0), members=members)


def test_a_cluster_wider_than_a_window_gets_positives_on_the_scan_grid():
    cluster = _spread_cluster(300.0)                                 # 300 px > 138 px
    r0, c0, r1, c1 = cluster.bbox
    assert c1 - c0 > 138
    tops = positive_windows([cluster], (1024, 832), np.random.default_rng(0), per_cluster=1000)
    assert len(tops) > 0 and np.all(tops % POSITIVE_STRIDE == 0)
    # independent check: every grid window, counted by a plain loop
    expected = []
    for r in range(0, 1024 - 144 + 1, 16):
        for c in range(0, 832 - 144 + 1, 16):
            inside = sum(r + 3 <= y <= r + 140 and c + 3 <= x <= c + 140 for y, x in cluster.members)
            if inside >= 3:
                expected.append((r, c))
    assert sorted(map(tuple, tops.tolist())) == expected
    assert clusters_without_positives([cluster], (1024, 832)) == []


def test_clusters_without_positives_are_counted_and_named(tmp_path, tiny_phantom, capsys):
    # three calcifications in one 144 px window, but in the image's last 2 rows: the last grid
    # window (rows 880..1023) holds a centre only up to row 1020 (3 px from its edge)
    loner = Cluster(centre=np.array([1022.5, 50.0]), members=np.array([[1022.0, 40.0], [1023.0, 50.0], [1022.5, 60.0]]))
    ordinary = _spread_cluster(60.0)
    unused = clusters_without_positives([loner, ordinary], (1024, 832))
    assert len(unused) == 1 and unused[0] is loner
    # in a store: the summary counts and names them
    folder, _ = tiny_phantom
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    case = next(c for c in list_cases(copy).cases if c.xml_path is not None)
    image, _ = load_case(case)
    height, width = image.pixels.shape
    _xml(case.xml_path, [("Calcification", 19, [f"({x}, {height - 1.2})"]) for x in (40, 50, 60)])
    store = make_patches(copy, None, verbose=True)
    out = capsys.readouterr().out
    assert any(case.file_name in name for name in store.metadata["clusters_without_positives"])
    assert "1 cluster(s) gave no positive window" in out and case.file_name in out


# ---------------------------------------------------------------------------- hit rule


def test_convex_hull_and_distance_against_hand_geometry():
    hull = convex_hull(np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5], [3, 7]]))
    assert sorted(map(tuple, hull.tolist())) == [(0, 0), (0, 10), (10, 0), (10, 10)]
    d = distance_to_hull(np.array([[5, 5], [13, 5], [13, 14], [-1, 0], [10, 10]]), hull)
    np.testing.assert_allclose(d, [0, 3, 5, 1, 0])
    segment = convex_hull(np.array([[0, 0], [10, 0], [5, 0]]))       # collinear: two end points
    np.testing.assert_allclose(distance_to_hull(np.array([[5, 3], [14, 0]]), segment), [3, 4])


def test_hit_rule_outline_hull_with_margin_and_five_mm_radius():
    # a spread-out cluster without outline: calcifications on a 100 x 300 px rectangle (rows x cols)
    members = np.array([[100, 100], [100, 400], [200, 100], [200, 400], [150, 250]], dtype=float)
    spread = Cluster(centre=members.mean(axis=0), members=members)      # centre (150, 250)
    # an outline-only cluster: a thin strip x 600..900, y 740..760, centre (750, 750)
    strip = np.array([[600, 740], [900, 740], [900, 760], [600, 760]], dtype=float)   # (x, y)
    outlined = Cluster(centre=np.array([750.0, 750.0]), members=np.zeros((0, 2)), outline=strip)
    det = np.array([
        [150, 380],     # inside the hull, 130 px from the centre: hit (old rule: miss)
        [86, 380],      # 14 px above the hull (< 1 mm = 14.29 px), 145 px from the centre: hit
        [85, 380],      # 15 px above the hull, 145 px from the centre: miss
        [150, 322],     # inside the hull and exactly 72 px from the centre: hit under both rules
        [250, 250],     # 50 px below the hull, 100 px from the centre: miss
        [750, 880],     # inside the strip, 130 px from its centre: hit
        [800, 750],     # outside the strip, 50 px from its centre: hit
        [823, 750],     # outside, 73 px: miss
        [821, 750],     # outside, 71 px: hit
    ], dtype=float)
    assert DEFAULT_HULL_MARGIN == pytest.approx(1.0 / 0.07)
    hits = match_detections(det, [spread, outlined], hit_radius=72.0)
    np.testing.assert_array_equal(hits[:, 0], [1, 1, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(hits[:, 1], [0, 0, 0, 0, 0, 1, 1, 0, 1])
    old = match_detections(det, [spread, outlined], hit_radius=72.0, hull_margin=-1.0)   # no hull
    np.testing.assert_array_equal(old[:, 0], [0, 0, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(old[:, 1], hits[:, 1])


def test_find_clusters_feeds_the_hull(tiny_phantom):
    folder, images = tiny_phantom
    image = next(im for im in images if len(find_clusters(im.rois)))
    cluster = find_clusters(image.rois)[0]
    members = cluster.members
    # every calcification of the cluster is hit by the rule (it lies on its own hull)
    assert match_detections(members, [cluster], hit_radius=0.0).all()
    assert make_roi("Calcification", 19, [(1.0, 2.0)]).kind == "calcification"
