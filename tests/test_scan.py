"""Whole-mammogram scanning (shallowcnn/scan.py, the backends' conv_relu_blockmax, froc.py).

The central check: the fully convolutional scan gives the same probabilities as cutting
every window out and running the patch model on it (float32, within 1e-5), for strides
that divide 128 and strides that do not, with tiles smaller than the image (so tile
seams are crossed), with the numpy and numba block max, and with windows masked out.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from shallowcnn.cli import main
from shallowcnn.data.breast import breast_mask, largest_component, to_uint8, window_fraction
from shallowcnn.data.images import ScanError, ScanImage, load_image
from shallowcnn.data.phantom_render import ImagePlan, render_image
from shallowcnn.data.phantom_files import dicom_bytes, roi_plist_entry, xml_bytes
from shallowcnn.froc import ImageTruth, froc_curve, score_image
from shallowcnn.data.clusters import Cluster
from shallowcnn.kernels import get_backend, reference
from shallowcnn.model import ShallowCNN
from shallowcnn.scan import find_peaks, running_max, scan_image, scan_patchwise, window_features, window_starts
from shallowcnn.storage import atomic_write_bytes

try:
    get_backend("numba")
    HAVE_NUMBA = True
except Exception:  # pragma: no cover - the numba kernels are optional for these tests
    HAVE_NUMBA = False
# The slow reference (patch by patch) and the whole-image tests run on the numba kernels
# when they are there (tests/test_model.py checks them against NumPy); the scans under
# test always include the numpy backend.
FAST = "numba" if HAVE_NUMBA else "numpy"

PLAN = ImagePlan(laterality="L", view="CC", clusters=0, outline=False, isolated=0,
                 other_finding=None, density=0.0)


def phantom_pixels(width=360, height=300, seed=5):
    """A small phantom mammogram without findings: (H, W) 14-bit values and its mask."""
    pixels, _ = render_image(np.random.default_rng(seed), width, height, PLAN)
    pixels = pixels.astype(np.int32)
    return pixels, breast_mask(pixels)


@pytest.fixture(scope="module")
def phantom_u8():
    pixels, mask = phantom_pixels()
    return to_uint8(pixels, mask)[0]


def random_model(backend="numpy", seed=3):
    """Glorot weights plus random biases (zero biases would hide bias bugs)."""
    model = ShallowCNN(backend=backend, seed=seed)
    rng = np.random.default_rng(seed)
    model.params["conv1.b"][:] = rng.normal(0, 0.1, 6)
    model.params["conv2.b"][:] = rng.normal(0, 0.1, 16)
    model.params["dense.b"][:] = 0.3
    return model


def some_windows(shape, count=4, seed=0):
    """A few windows spread over the grid, always including the corners."""
    rng = np.random.default_rng(seed)
    valid = np.zeros(shape, dtype=bool)
    valid.flat[rng.choice(valid.size, size=min(count, valid.size), replace=False)] = True
    valid[0, 0] = valid[-1, -1] = valid[0, -1] = valid[-1, 0] = True
    return valid


# ------------------------------------------------------------------ fully convolutional == patch by patch

@pytest.mark.parametrize("stride, tile, backend", [
    (16, 32, "numpy"),     # many tiles: every window crosses tile seams
    (16, 512, "numpy"),    # one tile
    (8, 48, "numpy"),
    (24, 40, "numpy"),     # 24 does not divide 128: blocks of gcd = 8, 3 blocks per stride
    (16, 64, "numba"),     # the numba block max (kernels/cpu_blockmax.py)
    (5, 64, "numba"),      # blocks of 1 pixel
])
def test_fully_convolutional_equals_patchwise(phantom_u8, stride, tile, backend):
    if backend == "numba" and not HAVE_NUMBA:
        pytest.skip("numba unavailable")
    image = phantom_u8[:184, :216]
    model = random_model(backend)
    result = scan_image(model, image, stride=stride, mask=np.ones_like(image, bool), tile=tile)
    assert result.prob_map.dtype == np.float32
    assert result.prob_map.shape == (len(window_starts(184, stride)), len(window_starts(216, stride)))
    assert np.isfinite(result.prob_map).all()
    valid = some_windows(result.prob_map.shape)
    reference_probs = scan_patchwise(random_model(FAST), image, stride=stride, valid=valid, batch_size=8)
    np.testing.assert_allclose(result.prob_map[valid], reference_probs[valid], rtol=0, atol=1e-5)
    assert np.isnan(reference_probs[~valid]).all()


def test_masked_windows_are_nan_and_the_rest_still_exact(phantom_u8):
    image = phantom_u8[:200, :232]
    model = random_model(seed=7)
    mask = np.zeros_like(image, dtype=bool)
    mask[20:180, 90:] = True                      # a breast on the right
    result = scan_image(model, image, stride=16, mask=mask, tile=32, min_breast_fraction=0.5)
    fraction = window_fraction(mask, 144)[::16, ::16]
    np.testing.assert_allclose(result.breast_fraction, fraction, atol=1e-6)
    inside = fraction >= 0.5
    assert inside.any() and (~inside).any()
    assert np.isnan(result.prob_map[~inside]).all()
    assert np.isfinite(result.prob_map[inside]).all()
    reference_probs = scan_patchwise(random_model(FAST, seed=7), image, stride=16,
                                     valid=inside & some_windows(inside.shape, 6))
    check = np.isfinite(reference_probs)
    np.testing.assert_allclose(result.prob_map[check], reference_probs[check], atol=1e-5)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba kernels unavailable")
def test_numba_backend_equals_numpy_patchwise(phantom_u8):
    image = phantom_u8[:176, :208]
    fast, slow = random_model("numba"), random_model("numpy")
    valid = some_windows((3, 5), 3)
    expected = scan_patchwise(slow, image, 16, valid=valid, batch_size=8)[valid]
    probs = scan_image(fast, image, stride=16, mask=np.ones_like(image, bool), tile=48).prob_map
    np.testing.assert_allclose(probs[valid], expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("g", [1, 3, 16])
def test_blockmax_matches_a_loop_over_blocks(backend, dtype, g):
    if backend == "numba" and not HAVE_NUMBA:
        pytest.skip("numba unavailable")
    rng = np.random.default_rng(g)
    x = rng.standard_normal((2, 6, 9 + 40, 9 + 53)).astype(dtype)
    W = rng.standard_normal((13, 6, 9, 9)).astype(dtype) * 0.05     # 13: not a multiple of 4
    b = rng.standard_normal(13).astype(dtype)
    z = reference.conv2d_forward(x, W, b)
    N, F, Ho, Wo = z.shape
    expected = np.zeros((N, F, Ho // g, Wo // g), dtype)
    for bi in range(Ho // g):
        for bj in range(Wo // g):
            expected[:, :, bi, bj] = np.maximum(z[:, :, bi * g:bi * g + g, bj * g:bj * g + g].max(axis=(2, 3)), 0)
    got = get_backend(backend).conv_relu_blockmax(x, W, b, g)
    assert got.dtype == dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5 if dtype == np.float32 else 1e-12)


def test_running_max_is_a_sliding_window_max():
    rng = np.random.default_rng(0)
    blocks = rng.standard_normal((2, 23, 5))
    step, m = 3, 4
    n_out = (23 - m) // step + 1
    got = running_max(blocks, axis=1, step=step, m=m, n_out=n_out)
    expected = np.stack([blocks[:, k * step:k * step + m].max(axis=1) for k in range(n_out)], axis=1)
    np.testing.assert_array_equal(got, expected)


def test_window_features_is_max_over_conv2_positions(phantom_u8):
    """The definition, straight: feature = max over the 128 x 128 conv2 block of the window."""
    image = phantom_u8[:170, :190]
    model = random_model()
    x = image[None, None].astype(np.float32) / np.float32(255)
    h1 = np.maximum(reference.conv2d_forward(x, model.params["conv1.W"], model.params["conv1.b"]), 0)
    z = np.maximum(reference.conv2d_forward(h1, model.params["conv2.W"], model.params["conv2.b"]), 0)[0]
    feats = window_features(model, image, stride=8, tile=24)
    for k, r in enumerate(window_starts(170, 8)):
        for l, c in enumerate(window_starts(190, 8)):
            np.testing.assert_allclose(feats[k, l], z[:, r:r + 128, c:c + 128].max(axis=(1, 2)), atol=1e-6)


# ------------------------------------------------------------------ helpers

def test_strided_window_fractions_are_the_window_means():
    rng = np.random.default_rng(1)
    mask = rng.random((300, 260)) < 0.6
    rows, cols = window_starts(300, 16), window_starts(260, 16)
    fraction = window_fraction(mask, 144, stride=16)
    assert fraction.shape == (len(rows), len(cols))
    want = np.array([[mask[r:r + 144, c:c + 144].mean() for c in cols] for r in rows])
    np.testing.assert_allclose(fraction, want, atol=1e-12)
    np.testing.assert_array_equal(fraction, window_fraction(mask, 144)[::16, ::16])


def _fraction_by_integral_image(mask, size, stride):
    """The full integral image at every pixel (the earlier window_fraction), then the grid."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    step = (slice(None, None, stride),) * 2
    total = (integral[size:, size:][step] - integral[:-size, size:][step] - integral[size:, :-size][step]
             + integral[:-size, :-size][step])
    return total / float(size * size)


@pytest.mark.parametrize("shape, size, stride", [((300, 260), 144, 16), ((301, 263), 144, 10), ((170, 190), 144, 7),
                                                 ((60, 50), 9, 1), ((40, 33), 12, 5), ((150, 144), 144, 16),
                                                 ((143, 300), 144, 16), ((200, 200), 20, 40)])
def test_window_fractions_by_bands_equal_the_window_means_bit_for_bit(shape, size, stride):
    """The band sums give exactly the naive means and the full integral image's values
    (strides that divide the window, that do not, a stride beyond it, one window, none)."""
    rng = np.random.default_rng(sum(shape) + stride)
    mask = rng.random(shape) < 0.6
    mask[: shape[0] // 3, : shape[1] // 2] = True                 # a solid region as well as noise
    fraction = window_fraction(mask, size, stride)
    rows, cols = np.arange(0, shape[0] - size + 1, stride), np.arange(0, shape[1] - size + 1, stride)
    want = np.array([[mask[r:r + size, c:c + size].sum() / float(size * size) for c in cols] for r in rows])
    assert fraction.shape == (len(rows), len(cols)) and fraction.dtype == np.float64
    np.testing.assert_array_equal(fraction, want.reshape(len(rows), len(cols)))
    np.testing.assert_array_equal(fraction, _fraction_by_integral_image(mask, size, stride))


def test_largest_component_drops_a_label():
    mask = np.zeros((120, 150), dtype=bool)
    mask[10:110, 0:80] = True           # breast
    mask[30:60, 70:72] = False          # a notch: still one region
    mask[5:15, 120:140] = True          # a burnt-in label
    mask[50, 100] = True                # a speck
    kept = largest_component(mask)
    expected = mask.copy()
    expected[5:15, 120:140] = False
    expected[50, 100] = False
    np.testing.assert_array_equal(kept, expected)


# ------------------------------------------------------------------ detections

def spot_model(backend="numpy"):
    """A hand-set network that fires on small bright spots.

    conv1 filter 0 = centre pixel minus the 9 x 9 mean (a top-hat), bias -0.25: only spots
    at least ~38 grey levels above their surroundings pass the ReLU. conv2 filter 0 averages
    that response over 9 x 9; the dense layer turns 0 into p = 0.018 and a spot into p > 0.9.
    All other filters are zero.
    """
    model = ShallowCNN(backend=backend)
    for value in model.params.values():
        value[...] = 0
    top_hat = np.full((9, 9), -1 / 81.0)
    top_hat[4, 4] += 1
    model.params["conv1.W"][0, 0] = top_hat
    model.params["conv1.b"][0] = -0.15
    model.params["conv2.W"][0, 0] = 1 / 81.0
    model.params["dense.W"][0, 0] = 400
    model.params["dense.b"][0] = -4
    return model


CLUSTER_CENTRE = (150.0, 170.0)                         # (row, col), inside the phantom's breast
SPOTS = np.array([(-12, -8), (5, -15), (10, 9), (-6, 14), (3, 0)], dtype=float)  # offsets (row, col)


def with_cluster(pixels):
    """Add five bright 1.5-px Gaussian calcifications around CLUSTER_CENTRE (14-bit units)."""
    yy, xx = np.mgrid[0:pixels.shape[0], 0:pixels.shape[1]]
    out = pixels.astype(np.float64)
    for dr, dc in SPOTS:
        r, c = CLUSTER_CENTRE[0] + dr, CLUSTER_CENTRE[1] + dc
        out += 1500 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.5 ** 2))
    return np.rint(out).astype(np.int32)


def test_detection_finds_the_inserted_cluster_and_nothing_else():
    pixels, mask = phantom_pixels()
    assert mask[int(CLUSTER_CENTRE[0]), int(CLUSTER_CENTRE[1])]
    model = spot_model(FAST)
    positive = ScanImage(pixels=to_uint8(with_cluster(pixels), mask)[0], mask=largest_component(mask))
    result = scan_image(model, positive, stride=16)
    assert len(result.detections) == 1, result.detections
    det = result.detections[0]
    true_centre = np.array(CLUSTER_CENTRE) + SPOTS.mean(axis=0)
    assert np.hypot(det.row - true_centre[0], det.col - true_centre[1]) <= 36
    assert det.probability > 0.9
    # the same image without the spots: nothing
    negative = ScanImage(pixels=to_uint8(pixels, mask)[0], mask=largest_component(mask))
    assert scan_image(model, negative, stride=16).detections == []


def test_nms_keeps_one_peak_per_patch_and_the_first_window_of_a_plateau():
    rows, cols = np.arange(0, 400, 16), np.arange(0, 400, 16)
    logits = np.full((len(rows), len(cols)), -5.0)
    logits[2:7, 3:8] = 4.0        # a plateau: windows with top-left rows 32..96, cols 48..112
    logits[20, 20] = 3.0          # a second peak far away
    logits[8, 9] = 3.5            # within one patch of the plateau: suppressed
    logits[0, 24] = np.nan        # not scanned
    peaks = find_peaks(logits, rows, cols, threshold=0.5)
    # the plateau's first window in row-major order, then the far peak; no averaging
    assert peaks == [(32, 48, 4.0), (320, 320, 3.0)]
    assert find_peaks(logits, rows, cols, threshold=0.99) == []
    # thresholding the peaks found at 0 gives the peaks found at the threshold
    assert [p for p in find_peaks(logits, rows, cols, threshold=0.0) if p[2] >= 0] == peaks


def test_froc_curve_counts():
    clusters = [Cluster(centre=np.array([100.0, 100.0]), members=np.zeros((0, 2))),
                Cluster(centre=np.array([400.0, 400.0]), members=np.zeros((0, 2)))]

    class D:  # a detection is anything with row, col, probability
        def __init__(self, row, col, probability):
            self.row, self.col, self.probability = row, col, probability

    truth_a = score_image("a", clusters, [D(110, 95, 0.9), D(300, 50, 0.8), D(405, 380, 0.4)], 0.5)
    truth_b = score_image("b", [], [D(10, 10, 0.6)], 0.5)
    assert isinstance(truth_a, ImageTruth)
    assert list(truth_a.hit) == [True, False] and truth_a.detection_cluster == [0, None]
    curve = froc_curve([truth_a, truth_b])
    assert curve.n_images == 2 and curve.n_clusters == 2
    assert curve.at_threshold(0.85) == {"threshold": 0.85, "sensitivity": 0.5, "fp_per_image": 0.0}
    assert curve.at_threshold(0.5) == {"threshold": 0.5, "sensitivity": 0.5, "fp_per_image": 1.0}
    assert curve.at_threshold(0.4) == {"threshold": 0.4, "sensitivity": 1.0, "fp_per_image": 1.0}
    assert np.all(np.diff(curve.sensitivity) >= 0) and np.all(np.diff(curve.fp_per_image) >= 0)


# ------------------------------------------------------------------ command line, files, errors

def write_inbreast_folder(root, pixels, spots=True):
    """One annotated DICOM (with its XML) and one normal DICOM, in the INbreast layout."""
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "AllXML").mkdir()
    positive = root / "AllDICOMs" / "20000001_0123456789abcdef_MG_L_CC_ANON.dcm"
    negative = root / "AllDICOMs" / "20000002_0123456789abcdef_MG_L_ML_ANON.dcm"
    pos_pixels = with_cluster(pixels).astype(np.uint16)
    atomic_write_bytes(positive, dicom_bytes(pos_pixels, "test:1", "0123456789abcdef"))
    atomic_write_bytes(negative, dicom_bytes(pixels.astype(np.uint16), "test:2", "0123456789abcdef"))
    entries = [roi_plist_entry("Calcification", 19, np.array([[CLUSTER_CENTRE[1] + dc, CLUSTER_CENTRE[0] + dr]]),
                               i, pos_pixels) for i, (dr, dc) in enumerate(SPOTS)]
    atomic_write_bytes(root / "AllXML" / "20000001.xml", xml_bytes(entries))
    return positive, negative


def test_cli_scan_writes_maps_overlay_detections_and_froc(tmp_path):
    pixels, _ = phantom_pixels()
    positive, negative = write_inbreast_folder(tmp_path / "inbreast", pixels)
    model_path = spot_model().save(tmp_path / "run" / "model.npz")
    out = tmp_path / "scan"
    status = main(["scan", str(model_path), str(positive), str(negative), "-o", str(out),
                   "--backend", FAST, "--quiet"])
    assert status == 0
    report = json.loads((out / f"{positive.stem}.detections.json").read_text())
    assert len(report["detections"]) == 1 and report["detections"][0]["hits_cluster"] == 0
    assert report["clusters_hit"] == 1 and report["false_positives"] == 0
    assert report["true_clusters"][0]["hit"] is True
    prob = np.load(out / f"{positive.stem}.prob.npy", allow_pickle=False)
    assert prob.shape == (len(window_starts(300, 16)), len(window_starts(360, 16)))
    assert np.isnan(prob).any() and np.nanmax(prob) > 0.9
    assert (out / f"{positive.stem}.overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    normal = json.loads((out / f"{negative.stem}.detections.json").read_text())
    assert normal["detections"] == [] and normal["true_clusters"] == []
    froc = json.loads((out / "froc.json").read_text())
    assert froc["n_images"] == 2 and froc["n_clusters"] == 1
    assert froc["operating_point"]["sensitivity"] == 1.0 and froc["operating_point"]["fp_per_image"] == 0.0
    # the hit's localization error: its position (on one of the spots) to the spots' mean, in mm
    det = report["detections"][0]
    centre = np.array(CLUSTER_CENTRE) + SPOTS.mean(axis=0)
    error = np.hypot(det["row"] - centre[0], det["col"] - centre[1]) * 0.07
    assert det["localization_error_mm"] == pytest.approx(error, abs=1e-3)
    assert froc["localization"]["hits"] == 1 and froc["localization"]["median_mm"] == pytest.approx(error, abs=1e-3)
    summary = json.loads((out / "scan_summary.json").read_text())
    assert summary["froc"]["localization"]["median_mm"] == froc["localization"]["median_mm"]
    assert (out / "froc.png").exists()
    # the same scan through the Python API, from the path: identical map
    result = scan_image(spot_model(FAST), positive, stride=16)
    np.testing.assert_array_equal(result.prob_map, prob)


def test_png_input_with_pixel_size_is_resampled(tmp_path):
    from PIL import Image
    pixels, mask = phantom_pixels()
    u8 = to_uint8(pixels, mask)[0]
    path = tmp_path / "mammo.png"
    Image.fromarray(u8[::2, ::2]).save(path)            # half the resolution: 0.14 mm pixels
    image = load_image(path, pixel_size_mm=0.14)
    assert image.pixels.shape == (300, 360) and image.scale == pytest.approx(0.5)
    assert image.rois is None                           # no truth for a loose PNG
    result = scan_image(spot_model(FAST), image, stride=32)
    assert result.prob_map.shape == (len(window_starts(300, 32)), len(window_starts(360, 32)))


def test_image_smaller_than_a_patch_is_a_clear_error(tmp_path):
    with pytest.raises(ScanError, match="smaller than one 144 x 144 window"):
        scan_image(spot_model(), np.zeros((100, 300), dtype=np.uint8))
    from PIL import Image
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((120, 120), np.uint8)).save(small)
    with pytest.raises(ScanError, match="small.png"):
        load_image(small)


def test_bad_paths_are_clear_errors(tmp_path, capsys):
    model_path = spot_model().save(tmp_path / "model.npz")
    with pytest.raises(ScanError, match="no such file"):
        load_image(tmp_path / "missing.dcm")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom at all")
    with pytest.raises(ScanError, match="junk.dcm"):
        load_image(junk)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(ScanError, match="not an image"):
        load_image(text)

    assert main(["scan", str(model_path), str(tmp_path / "missing.dcm"), "-o", str(tmp_path / "o")]) == 2
    assert "missing.dcm: no such file" in capsys.readouterr().err
    assert main(["scan", str(tmp_path / "nomodel.npz"), str(junk), "-o", str(tmp_path / "o")]) == 2
    assert "nomodel.npz" in capsys.readouterr().err
    # an unreadable image among good ones is skipped, reported, and the status says so
    assert main(["scan", str(model_path), str(junk), "-o", str(tmp_path / "o"), "--backend", "numpy",
                 "--quiet"]) == 1
    assert "junk.dcm" in capsys.readouterr().err


def test_froc_figure_puts_the_curve_and_the_operating_point_where_they_belong(tmp_path):
    """froc.png (drawn by Pillow): ticks at round steps, the red operating point at its
    (FP/image, sensitivity), the blue step curve through each swept point, a PNG on disk."""
    from shallowcnn.froc import FrocCurve
    from shallowcnn.froc_figure import BOX, CURVE, OPERATING, froc_picture, nice_ticks, plot_froc

    assert nice_ticks(190).tolist() == [0, 25, 50, 75, 100, 125, 150, 175]
    assert nice_ticks(4.2).tolist() == [0, 1, 2, 3, 4] and nice_ticks(0).tolist() == [0]
    np.testing.assert_allclose(nice_ticks(1.05), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    curve = FrocCurve(thresholds=np.array([1.0, 0.9, 0.5, 0.2]), sensitivity=np.array([0.0, 0.5, 0.75, 1.0]),
                      fp_per_image=np.array([0.0, 1.0, 2.0, 4.0]), n_images=4, n_clusters=4)
    pixels = np.asarray(froc_picture(curve, threshold=0.5, rates=(1, 2)))
    left, top, right, bottom = BOX
    x_high = 4.0 * 1.05

    def at(x, y):                   # data -> pixel (row, col), the axes' own mapping worked by hand
        return (round(bottom - (y + 0.02) / 1.04 * (bottom - top)), round(left + x / x_high * (right - left)))

    assert tuple(pixels[at(2.0, 0.75)]) == OPERATING                  # threshold 0.5: 2 FP/image, sens 0.75
    for x, y in ((1.0, 0.25), (4.0, 0.9), (3.0, 0.75)):             # on the steps: rises and treads
        r, c = at(x, y)
        assert (pixels[r - 1:r + 2, c - 1:c + 2] == CURVE).all(axis=-1).any(), (x, y)
    r, c = at(3.0, 0.5)
    assert not (pixels[r - 3:r + 4, c - 3:c + 4] == CURVE).all(axis=-1).any()   # nothing off the curve
    path = plot_froc(curve, tmp_path / "froc.png", threshold=0.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, np.uint16])
def test_breast_mask_and_window_equal_their_plain_formulas_bit_for_bit(dtype):
    """breast_mask pads in place and apply_window works in place: the same bits as np.pad and
    the one-line formula (sides that are and are not whole blocks)."""
    from shallowcnn.data.breast import _box_mean, apply_window, otsu_threshold

    for shape in ((203, 157), (64, 80), (9, 17)):
        pixels = phantom_like(shape, dtype)
        rows, cols = -(-shape[0] // 8), -(-shape[1] // 8)
        padded = np.pad(pixels.astype(np.float32), ((0, rows * 8 - shape[0]), (0, cols * 8 - shape[1])), mode="edge")
        small = padded.reshape(rows, 8, cols, 8).mean(axis=(1, 3))
        want = np.repeat(np.repeat(_box_mean(small > otsu_threshold(small), 2) > 0.5, 8, 0), 8, 1)[:shape[0], :shape[1]]
        np.testing.assert_array_equal(breast_mask(pixels), want)
        lo, hi = float(np.percentile(pixels, 30)), float(np.percentile(pixels, 99))
        scaled = (pixels.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        np.testing.assert_array_equal(apply_window(pixels, lo, hi), np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def phantom_like(shape, dtype):
    """A bright half-disc on a dark, noisy background, in ``dtype`` (values up to ~16,000)."""
    rng = np.random.default_rng(shape[0])
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    disc = (yy - shape[0] / 2) ** 2 + xx ** 2 < (0.45 * min(shape[0], 2 * shape[1])) ** 2
    top = 250 if dtype == np.uint8 else 16000
    values = np.where(disc, 0.6 * top, 0.05 * top) + rng.normal(0, 0.05 * top, shape)
    return np.clip(values, 0, top).astype(dtype)
