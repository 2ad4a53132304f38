"""Where a detection lies: the network's own evidence (shallowcnn/evidence.py, scan.locate_detections).

Independent references: a naive loop for the first maximum of conv2 maps computed whole by
the numpy reference backend; hand-set networks whose maxima are known pixel by pixel
(ties included); the phantom's own calcifications; the geometry of the windows.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from shallowcnn.constants import PATCH_SIZE, pixels_to_input
from shallowcnn.data.clusters import Cluster
from shallowcnn.data.images import ScanImage, as_scan_image, load_image
from shallowcnn.evidence import strongest, to_original, window_evidence, window_maxima
from shallowcnn.froc import froc_curve, localization_summary, score_image, write_froc
from shallowcnn.kernels import get_backend, reference
from shallowcnn.model import ShallowCNN
from shallowcnn.scan import SAME_FINDING_PX, find_peaks, locate_detections, scan_image, with_nms
from shallowcnn.scan_files import write_scan_outputs

try:
    get_backend("numba")
    BACKENDS = ["numpy", "numba"]
except Exception:  # pragma: no cover - the numba kernels are optional
    BACKENDS = ["numpy"]
FAST = BACKENDS[-1]


def random_model(backend, seed=3):
    """Glorot weights, random biases and dense weights of both signs."""
    model = ShallowCNN(backend=backend, seed=seed)
    rng = np.random.default_rng(seed)
    model.params["conv1.b"][:] = rng.normal(0, 0.1, 6)
    model.params["conv2.b"][:] = rng.normal(0, 0.1, 16)
    model.params["dense.W"][:, 0] = rng.normal(0, 1.0, 16)
    model.params["dense.b"][:] = 0.3
    return model


def spotty_image(height=300, width=340, seed=0):
    """Smooth noise with a few bright 2-px spots: (H, W) uint8."""
    rng = np.random.default_rng(seed)
    image = rng.normal(90, 12, (height, width))
    yy, xx = np.mgrid[0:height, 0:width]
    for r, c in rng.uniform(20, [height - 20, width - 20], (6, 2)):
        image += 120 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 2.0 ** 2))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def naive_first_argmax(z):
    """(H, W) -> (i, j) of the first maximum in row-major order, by a plain loop."""
    best, where = -np.inf, None
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            if z[i, j] > best:                      # strictly greater: the first one stays
                best, where = z[i, j], (i, j)
    return where


# ------------------------------------------------------------------ against the reference maps

@pytest.mark.parametrize("backend", BACKENDS)
def test_evidence_is_the_first_argmax_of_the_reference_conv2_maps(backend):
    model = random_model(backend)
    image = spotty_image()
    corners = [(0, 0), (37, 101), (156, 196)]                 # the last one touches both far edges
    scale = 1.7                                                # original pixels per scanned pixel
    evidence = window_evidence(model, image, corners, scale)
    P = model.params
    weights = P["dense.W"][:, 0].astype(np.float64)
    for (top, left), ev in zip(corners, evidence):
        x = pixels_to_input(image[None, None, top:top + PATCH_SIZE, left:left + PATCH_SIZE])
        h1 = np.maximum(reference.conv2d_forward(x, P["conv1.W"], P["conv1.b"]), 0)
        z = reference.conv2d_forward(h1, P["conv2.W"], P["conv2.b"])[0]          # (16, 128, 128) whole
        assert [e.filter for e in ev] == list(range(16))
        for f, e in enumerate(ev):
            i, j = naive_first_argmax(z[f])
            # the centre of the 17 x 17 field of conv2 position (i, j): window pixel (i + 8, j + 8)
            assert e.row == pytest.approx((top + i + 8 + 0.5) * scale - 0.5)
            assert e.col == pytest.approx((left + j + 8 + 0.5) * scale - 0.5)
            assert e.activation == pytest.approx(max(z[f, i, j], 0), abs=1e-5)
            assert e.contribution == pytest.approx(weights[f] * max(z[f, i, j], 0), abs=1e-5)
        contributions = [weights[f] * max(z[f].max(), 0) for f in range(16)]
        assert strongest(ev).filter == int(np.argmax(contributions))


def hand_set_model(backend):
    """conv1 filter 0 copies its pixel (centre tap 1); conv2 filter 0 copies conv1's centre,
    filter 1 conv1's top-left tap: so conv2[0][i, j] = x[i + 8, j + 8] and
    conv2[1][i, j] = x[i + 4, j + 4]. Both have dense weight 1: equal contributions."""
    model = ShallowCNN(backend=backend)
    for value in model.params.values():
        value[...] = 0
    model.params["conv1.W"][0, 0, 4, 4] = 1
    model.params["conv2.W"][0, 0, 4, 4] = 1
    model.params["conv2.W"][1, 0, 0, 0] = 1
    model.params["dense.W"][:2, 0] = 1
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_first_maximum_in_row_major_order_then_the_lower_filter(backend):
    model = hand_set_model(backend)
    image = np.zeros((200, 200), dtype=np.uint8)
    top, left = 30, 40
    # two equal spots in the window: (60, 130) comes first in row-major order, (100, 60) later
    image[top + 60, left + 130] = image[top + 100, left + 60] = 200
    ev, = window_evidence(model, image, [(top, left)])
    assert (ev[0].row, ev[0].col) == (top + 60, left + 130)          # filter 0 points at the spot itself
    assert (ev[1].row, ev[1].col) == (top + 60 + 4, left + 130 + 4)  # filter 1's field is offset by 4
    assert ev[0].contribution == ev[1].contribution == pytest.approx(200 / 255)
    assert strongest(ev).filter == 0                                 # equal contributions: lower filter
    same_row = np.zeros((200, 200), dtype=np.uint8)
    same_row[top + 70, left + 100] = same_row[top + 70, left + 20] = 200
    ev, = window_evidence(model, same_row, [(top, left)])
    assert (ev[0].row, ev[0].col) == (top + 70, left + 20)           # the left one: first in its row
    # a flat window: every position ties; the first is (0, 0), field centre (8, 8)
    ev, = window_evidence(model, np.full((200, 200), 7, np.uint8), [(top, left)])
    assert (ev[0].row, ev[0].col) == (top + 8, left + 8)


def test_a_window_outside_the_image_is_a_clear_error():
    with pytest.raises(ValueError, match="sticks out of the 200 x 150 image"):
        window_evidence(random_model("numpy"), np.zeros((150, 200), np.uint8), [(0, 0), (10, 60)])


def test_window_maxima_agree_between_backends():
    if len(BACKENDS) < 2:
        pytest.skip("numba is not available")
    windows = np.stack([spotty_image(144, 144, seed=s) for s in range(3)])
    p_ref, r_ref, c_ref = window_maxima(random_model("numpy"), windows)
    p_fast, r_fast, c_fast = window_maxima(random_model("numba"), windows)
    np.testing.assert_allclose(p_fast, p_ref, atol=1e-5)
    np.testing.assert_array_equal(r_fast, r_ref)
    np.testing.assert_array_equal(c_fast, c_ref)


# ------------------------------------------------------------------ detections from a scan

def test_every_detection_and_its_evidence_lie_inside_its_own_window():
    model = random_model(FAST, seed=5)
    image = spotty_image(520, 560, seed=2)
    for pixel_mm in (0.07, 0.1, 0.05):                 # scale 1, 0.7 (upsampled), 1.4 (downsampled)
        scan = as_scan_image(image, mask=None, pixel_size_mm=pixel_mm)
        scan = ScanImage(pixels=scan.pixels, mask=np.ones_like(scan.mask), scale=scan.scale,
                         spacing_mm=scan.spacing_mm)
        result = scan_image(model, scan, stride=16)
        assert len(result.candidates) >= 3
        s = scan.scale
        for det in result.candidates:
            top, left = det.window
            low_r, high_r = top * s - 0.5, (top + PATCH_SIZE) * s - 0.5      # the window's outer edges
            low_c, high_c = left * s - 0.5, (left + PATCH_SIZE) * s - 0.5
            for point in [det, *det.evidence]:
                assert low_r <= point.row <= high_r and low_c <= point.col <= high_c
            # the evidence is that of its own window alone, nothing else
            alone, = window_evidence(model, scan.pixels, [det.window], s)
            assert [(e.row, e.col) for e in alone] == [(e.row, e.col) for e in det.evidence]
            # and it adds up to the window's logit as the scan computed it
            total = sum(e.contribution for e in det.evidence) + float(model.params["dense.b"][0])
            assert total == pytest.approx(det.logit, abs=1e-4)


def spot_model(backend):
    """Fires on small bright spots (tests/test_scan.py's hand-set network, one filter)."""
    model = ShallowCNN(backend=backend)
    for value in model.params.values():
        value[...] = 0
    top_hat = np.full((9, 9), -1 / 81.0)
    top_hat[4, 4] += 1
    model.params["conv1.W"][0, 0] = top_hat
    model.params["conv1.b"][0] = -0.25
    model.params["conv2.W"][0, 0, 4, 4] = 1.0          # a copy of the top-hat response: sharp maxima
    model.params["dense.W"][0, 0] = 40
    model.params["dense.b"][0] = -4
    return model


def test_detections_sit_exactly_on_the_spots_the_network_fires_on():
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(80, 4, (320, 360)), 0, 255).astype(np.uint8)
    spots = {(150, 170): 250, (140, 190): 200, (165, 160): 180, (60, 300): 230}   # (row, col): value
    for (r, c), value in spots.items():
        image[r, c] = value
    result = scan_image(spot_model(FAST), image, mask=np.ones(image.shape, bool), stride=16)
    found = [(d.row, d.col) for d in result.detections]
    assert found[0] == (150, 170)                  # the strongest window points at the brightest spot
    assert (60, 300) in found                      # the lone spot is found on itself
    assert set(found) <= set(spots)                # and nothing is placed between spots


def test_one_detection_per_finding_the_weaker_near_a_stronger_one_is_dropped():
    """Spots 20-30 px apart sit in windows 144 px apart after window NMS (corners), so
    several windows point at one group of spots; the scan keeps only the strongest of
    detections closer than 5 mm. Checked against every located peak, pair by pair."""
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(80, 4, (320, 360)), 0, 255).astype(np.uint8)
    for (r, c), value in {(150, 170): 250, (140, 190): 200, (165, 160): 180, (60, 300): 230}.items():
        image[r, c] = value
    model = spot_model(FAST)
    result = scan_image(model, image, mask=np.ones(image.shape, bool), stride=16, threshold=0.0)
    peaks = find_peaks(result.logit_map, result.window_rows, result.window_cols, threshold=0.0)
    located = locate_detections(model, result.image, peaks)          # before the merge, strongest first
    kept = result.candidates
    assert len(located) > len(kept) >= 2                              # some peaks were one finding
    for i, a in enumerate(kept):                                       # kept: pairwise >= 5 mm apart
        for b in kept[i + 1:]:
            assert np.hypot(a.row - b.row, a.col - b.col) >= SAME_FINDING_PX
    for d in located:                                                  # dropped: near a stronger kept one
        if not any(d is k for k in kept):
            assert any(k.logit >= d.logit and np.hypot(d.row - k.row, d.col - k.col) < SAME_FINDING_PX
                       for k in kept)


def test_bundled_model_points_at_the_phantoms_calcifications(tiny_phantom):
    """On the phantom's own truth: a detection that hits a cluster points at one of its
    calcifications (the network fires on one calcification, not on the cluster's centre)."""
    from shallowcnn.froc import image_truth
    from shallowcnn.web.bundled import BUNDLED_MODEL_PATH

    _, images = tiny_phantom
    model = ShallowCNN.load(BUNDLED_MODEL_PATH, backend=FAST)
    to_calcification, errors = [], []
    for im in images:
        image = load_image(im.dicom_path)
        result = scan_image(model, image)
        truth = image_truth(result)
        for det, k, error in zip(result.detections, truth.detection_cluster, truth.detection_error_mm):
            if k is None:
                continue
            members = truth.clusters[k].members
            assert error == pytest.approx(np.hypot(*(truth.clusters[k].centre - (det.row, det.col))) * 0.07)
            errors.append(error)
            if len(members):
                to_calcification.append(np.hypot(*(members - (det.row, det.col)).T).min() * 0.07)
    assert len(to_calcification) >= 5
    assert np.median(to_calcification) <= 0.5          # mm: on a calcification (measured 0.16)
    assert np.median(errors) <= 2.5                     # mm from the centre: within the cluster


def test_candidates_found_again_at_another_nms_distance_match_a_scan_at_it():
    """with_nms reuses the windows' scores: the same candidates (positions, probabilities,
    windows) and detections as scanning afresh at that distance."""
    model = random_model(FAST, seed=5)
    image, mask = spotty_image(300, 340, seed=6), np.ones((300, 340), bool)
    first = scan_image(model, image, mask=mask, threshold=0.4)
    for nms in (144.0, 96.0, 40.0):
        again, fresh = with_nms(first, model, nms), scan_image(model, image, mask=mask, threshold=0.4, nms_px=nms)
        assert again.nms_px == nms
        for mine, theirs in ((again.candidates, fresh.candidates), (again.detections, fresh.detections)):
            assert [(d.row, d.col, d.window) for d in mine] == [(d.row, d.col, d.window) for d in theirs]
            assert [d.probability for d in mine] == pytest.approx([d.probability for d in theirs], abs=1e-7)
    assert len(with_nms(first, model, 40.0).candidates) > len(first.candidates)   # the test sees a difference


# ------------------------------------------------------------------ localization in the reports

class D:
    """A detection is anything with row, col and probability."""

    def __init__(self, row, col, probability):
        self.row, self.col, self.probability = row, col, probability


def test_localization_errors_by_hand(tmp_path):
    clusters = [Cluster(centre=np.array([100.0, 100.0]), members=np.zeros((0, 2))),
                Cluster(centre=np.array([400.0, 400.0]), members=np.zeros((0, 2)))]
    # hits at 5 px (3-4-5) and 20 px from the first cluster, 0 px from the second; a false positive
    dets = [D(103, 104, 0.9), D(100, 120, 0.8), D(400, 400, 0.7), D(250, 250, 0.6), D(410, 400, 0.3)]
    truth = score_image("a", clusters, dets, threshold=0.5, pixel_mm=0.1)
    assert truth.detection_cluster == [0, 0, 1, None]
    assert truth.detection_error_mm[:3] == pytest.approx([0.5, 2.0, 0.0])
    assert truth.detection_error_mm[3] is None
    curve = froc_curve([truth])
    assert sorted(curve.errors_mm) == pytest.approx([0.0, 0.5, 2.0])      # the 0.3 detection is below 0.5
    assert localization_summary(curve.errors_mm) == {"hits": 3, "median_mm": 0.5, "p90_mm": 1.7}
    assert localization_summary([]) == {"hits": 0, "median_mm": None, "p90_mm": None}
    froc = json.loads(write_froc(curve, tmp_path / "froc.json").read_text())
    assert froc["localization"]["median_mm"] == 0.5 and froc["localization"]["hits"] == 3


def test_detections_json_holds_the_evidence(tmp_path):
    model = random_model(FAST, seed=5)
    result = scan_image(model, spotty_image(300, 320, seed=4), mask=np.ones((300, 320), bool), threshold=0.0)
    content = write_scan_outputs(result, tmp_path, name="img")
    stored = json.loads((tmp_path / "img.detections.json").read_text())
    assert stored == json.loads(json.dumps(content))
    det, first = stored["detections"][0], result.detections[0]
    assert len(det["evidence"]) == 16 and det["receptive_field_px"] == 17
    assert det["strongest_filter"] == strongest(first.evidence).filter
    best = det["evidence"][det["strongest_filter"]]
    assert (best["row"], best["col"]) == (det["row"], det["col"])
    assert det["evidence"][3]["contribution"] == pytest.approx(first.evidence[3].contribution, abs=1e-6)
    assert to_original(first.window[0] + 8, 1.0) <= det["row"] <= first.window[0] + PATCH_SIZE - 9


def test_overlay_labels_stay_inside_the_image_near_its_right_edge():
    """Issue 23: a probability label beside a detection at the right edge is neither cut
    off nor hidden under the colour bar (nor is one at the top-left corner)."""
    from shallowcnn.overlay import draw_scan_overlay

    image = np.full((300, 600), 60, np.uint8)
    image[150, 575] = image[40, 8] = 250          # spots near the right and left edges (575: the last
    #                                              field centre a window at stride 16 reaches is 583)
    result = scan_image(spot_model(FAST), image, mask=np.ones(image.shape, bool), stride=16)
    assert {(d.row, d.col) for d in result.detections} == {(150, 575), (40, 8)}
    missed = SimpleNamespace(clusters=[SimpleNamespace(centre=(150.0, 590.0))], hit=[False])   # a red circle
    picture, layout = draw_scan_overlay(result, truth=missed)
    pixels = np.asarray(picture)
    left, top, right, bottom = layout.image
    assert (right - left, bottom - top) == (600, 300)            # shown at full size: nothing to shrink
    assert layout.colour_bar[0] > right                           # the bar lies right of the image,
    assert (pixels[top:bottom, right - 20:right] == (255, 0, 0)).all(axis=-1).any()      # the red circle
    assert (pixels[top:bottom, right:layout.colour_bar[0]] == 255).all()                 # stops at its edge
    assert sorted(text for text, _ in layout.labels) == sorted(f"{d.probability:.2f}" for d in result.detections)
    for text, (x0, y0, x1, y1) in layout.labels:
        assert left <= x0 < x1 <= right and top <= y0 < y1 <= bottom, (text, (x0, y0, x1, y1), layout.image)
        drawn = pixels[y0:y1, x0:x1]
        assert (drawn == 255).all(axis=-1).any() and (drawn == 0).all(axis=-1).any()   # white text, black edge
    # the label of the spot at the right edge went to the left of its circle
    right_label = next(box for text, box in layout.labels
                       if text == f"{next(d for d in result.detections if d.col == 575).probability:.2f}")
    assert right_label[2] <= left + 575.5


def test_overlay_colours_are_matplotlibs_inferno():
    """The overlay needs no matplotlib; its colour map stays within 7/255 of matplotlib's inferno."""
    matplotlib = pytest.importorskip("matplotlib")
    from shallowcnn.overlay import inferno

    x = np.linspace(0, 1, 256)
    want = np.array([matplotlib.colormaps["inferno"](v)[:3] for v in x]) * 255
    assert np.abs(inferno(x).astype(float) - want).max() <= 7
    assert inferno(np.array([np.nan, -1.0, 2.0])).tolist() == [[0, 0, 4], [0, 0, 4], [252, 255, 164]]


def test_scan_figures_need_no_matplotlib():
    import subprocess
    import sys
    code = ("import sys\nimport shallowcnn.scan_files, shallowcnn.detection_report, shallowcnn.web.scanner\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0 and "No module named" in done.stderr:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]
