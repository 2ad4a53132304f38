"""Hard-negative mining and the operating point (issue 23), on the tiny phantom."""
from __future__ import annotations

import json

import numpy as np
import pytest

from shallowcnn.constants import PATCH_SIZE
from shallowcnn.data.clusters import find_clusters, points_in_polygon
from shallowcnn.data.images import load_image
from shallowcnn.data.inbreast import list_cases
from shallowcnn.froc import FrocCurve
from shallowcnn.mining import (MiningConfig, cases_of_split, mine, mine_image, merge_mined,
                               training_arrays, validation_frocs)
from shallowcnn.model import ShallowCNN
from shallowcnn.operating_point import (NMS_CHOICES, choose_operating_point, choose_threshold, model_nms,
                                        model_threshold)
from shallowcnn.scan import scan_patchwise, window_starts
from shallowcnn.train import TrainConfig

try:
    import numba  # noqa: F401
    FAST = "numba"
except ImportError:  # pragma: no cover
    FAST = "numpy"


def _naive_cluster_free(top, clusters, radius=72.0, margin=1.0 / 0.07, directions=720):
    """Independent check of one window: no calcification or centre of a cluster inside it,
    and its centre neither within ``radius`` of a cluster centre, inside an outline, nor in
    a cluster's calcification hull grown by ``margin`` -- the grown hull tested by its
    support function: P is in it iff u.P <= max_s u.s + margin for every direction u."""
    r, c = top
    centre = np.array([r + (PATCH_SIZE - 1) / 2, c + (PATCH_SIZE - 1) / 2])
    angles = np.linspace(0, 2 * np.pi, directions, endpoint=False)
    u = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    for cl in clusters:
        for y, x in list(cl.members) + [cl.centre]:
            if r <= y < r + PATCH_SIZE and c <= x < c + PATCH_SIZE:
                return False
        if np.hypot(*(centre - cl.centre)) <= radius:
            return False
        if cl.outline is not None and points_in_polygon(centre[None, ::-1], cl.outline)[0]:
            return False
        if len(cl.members) and np.all(u @ centre <= (u @ cl.members.T).max(axis=1) + margin):
            return False
    return True


def test_mined_windows_are_the_top_scoring_cluster_free_windows(tiny_phantom):
    folder, images = tiny_phantom
    image = max(images, key=lambda im: len(find_clusters(im.rois)))     # the image with most clusters
    clusters = find_clusters(image.rois)
    assert clusters
    model = ShallowCNN(backend=FAST, seed=5)                            # any scorer will do
    found = mine_image(model, image.dicom_path, count=4)
    assert len(found["position"]) == 4
    # independent: every window scored patch by patch, cluster-freedom by the naive rule
    scan = load_image(image.dicom_path)
    reference = scan_patchwise(model, scan.pixels)                      # (nR, nC), all windows
    rows, cols = window_starts(scan.pixels.shape[0], 16), window_starts(scan.pixels.shape[1], 16)
    from shallowcnn.data.breast import window_fraction
    in_breast = window_fraction(scan.mask, PATCH_SIZE, 16) >= 0.5
    for (r, c), p, patch in zip(found["position"], found["probability"], found["patches"]):
        k, l = r // 16, c // 16
        assert _naive_cluster_free((r, c), clusters)
        assert p == pytest.approx(reference[k, l], abs=1e-5)
        np.testing.assert_array_equal(patch, scan.pixels[r:r + PATCH_SIZE, c:c + PATCH_SIZE])
    # the first is the highest-scoring cluster-free window of the breast
    free = np.array([[in_breast[k, l] and _naive_cluster_free((rows[k], cols[l]), clusters)
                      for l in range(len(cols))] for k in range(len(rows))])
    assert free.sum() > 4 and (~free & in_breast).any()                 # the rule does exclude windows
    assert found["probability"][0] == pytest.approx(reference[free].max(), abs=1e-5)
    # the rest: highest first, each at least half a patch from those before it
    assert np.all(np.diff(found["probability"]) <= 1e-7)
    tops = found["position"].astype(float)
    for i in range(1, len(tops)):
        assert np.hypot(*(tops[:i] - tops[i]).T).min() >= PATCH_SIZE // 2


def test_training_arrays_replace_random_negatives_and_stay_balanced(small_store):
    _, store = small_store
    idx = store.indices("train")
    n_pos, n_neg = int(store.labels[idx].sum()), int((store.labels[idx] == 0).sum())
    mined = {"patches": np.full((7, PATCH_SIZE, PATCH_SIZE), 77, np.uint8),
             "position": np.arange(14, dtype=np.int32).reshape(7, 2), "probability": np.linspace(0.9, 0.3, 7),
             "patient": np.array(["p"] * 7), "image": np.array(["i"] * 7)}
    x, y = training_arrays(store, mined, np.random.default_rng(0), max_mined_share=0.5)
    budget = int(0.5 * n_neg) // 5                          # windows before the x5 augmentation
    assert len(y) == n_pos + n_neg and int(y.sum()) == n_pos
    mined_rows = np.all(x[:, 0] == np.float32(77 / 255), axis=(1, 2))
    assert mined_rows.sum() == 5 * min(budget, 7) and np.all(y[mined_rows] == 0)
    assert merge_mined(mined, mined)["patches"].shape[0] == 7          # each window once


def test_mining_reads_only_training_patients_and_stores_the_operating_point(small_store, tiny_phantom,
                                                                           tmp_path, monkeypatch):
    import shallowcnn.mining as mining

    folder, _ = tiny_phantom
    _, store = small_store
    train_patients = set(store.patient[store.indices("train")].tolist())
    other_patients = set(store.patient.tolist()) - train_patients
    assert other_patients, "the tiny store needs validation/test patients"
    mined_paths = []
    real = mining.mine_image

    def spy(model, path, count):
        mined_paths.append(path)
        return real(model, path, count)

    monkeypatch.setattr(mining, "mine_image", spy)
    model = ShallowCNN(backend=FAST, seed=1)
    record = mine(store, folder, model, tmp_path / "mine", TrainConfig(epochs=1, backend=FAST),
                  MiningConfig(rounds=1, round_epochs=1, per_image=3), verbose=False)
    by_path = {case.dicom_path: case.patient for case in list_cases(folder).cases}
    assert mined_paths and {by_path[p] for p in mined_paths} <= train_patients
    assert {by_path[p] for p in mined_paths} == {c.patient for c in cases_of_split(store, folder, "train")}
    saved = ShallowCNN.load(tmp_path / "mine" / "model.npz", backend=FAST)
    point = saved.metadata["operating_point"]
    assert point == json.loads((tmp_path / "mine" / "mining.json").read_text())["operating_point"]
    # independent: the kept model's validation FROCs give the same operating point
    curves = validation_frocs(saved, cases_of_split(store, folder, "val"))
    assert sorted(curves) == sorted(NMS_CHOICES)
    again = choose_operating_point(curves, 1.0)
    assert point["threshold"] == pytest.approx(again["threshold"]) and point["fp_per_image"] <= 1.0
    assert point["nms_px"] == again["nms_px"] and point["nms_px"] in NMS_CHOICES
    assert point["threshold"] == pytest.approx(choose_threshold(curves[point["nms_px"]], 1.0)["threshold"])
    assert model_threshold(saved) == pytest.approx(point["threshold"])
    assert model_nms(saved) == point["nms_px"]
    assert record["rounds"][0]["round"] == 0 and len(record["rounds"]) == 2


def test_choose_threshold_on_a_hand_made_curve():
    curve = FrocCurve(thresholds=np.array([1.0, 0.9, 0.7, 0.4, 0.2]), sensitivity=np.array([0, .25, .5, .75, 1.0]),
                      fp_per_image=np.array([0, 0.5, 1.0, 1.5, 3.0]), n_images=4, n_clusters=4)
    assert choose_threshold(curve, 1.0)["threshold"] == 0.7
    assert choose_threshold(curve, 1.0)["sensitivity"] == 0.5
    assert choose_threshold(curve, 2.0)["threshold"] == 0.4
    assert choose_threshold(curve, 0.2)["threshold"] == 1.0


def test_choose_operating_point_keeps_the_most_sensitive_nms_distance():
    def curve(sensitivity_at_1):
        return FrocCurve(thresholds=np.array([1.0, 0.8, 0.6, 0.3]),
                         sensitivity=np.array([0, .5, sensitivity_at_1, 1.0]),
                         fp_per_image=np.array([0, 0.5, 1.0, 2.5]), n_images=4, n_clusters=4)
    point = choose_operating_point({144.0: curve(0.5), 96.0: curve(0.75), 72.0: curve(0.75)}, 1.0)
    assert point["nms_px"] == 96.0 and point["sensitivity"] == 0.75 and point["threshold"] == 0.6   # tie: the larger
    assert point["sensitivity_by_nms"] == {"144": 0.5, "96": 0.75, "72": 0.75}
    assert choose_operating_point({72.0: curve(0.5), 144.0: curve(0.5)}, 1.0)["nms_px"] == 144.0
    assert choose_operating_point({144.0: curve(0.5), 96.0: curve(0.75)}, 0.5)["nms_px"] == 144.0  # both 0.5 there
    with pytest.raises(ValueError):
        choose_operating_point({}, 1.0)


def test_scan_uses_the_models_operating_point_unless_told(tiny_phantom, tmp_path):
    from shallowcnn.cli import main

    folder, images = tiny_phantom
    model = ShallowCNN(backend="numpy", seed=2)
    assert model_threshold(model) == 0.5                               # no operating point: 0.5
    assert model_nms(model) == PATCH_SIZE                              # no stored distance: one window
    path = model.save(tmp_path / "m.npz", metadata={"operating_point": {"threshold": 0.125, "nms_px": 96.0}})
    image = str(images[0].dicom_path)
    assert main(["scan", str(path), image, "-o", str(tmp_path / "a"), "--quiet", "--backend", FAST]) == 0
    summary = json.loads((tmp_path / "a" / "scan_summary.json").read_text())
    assert (summary["threshold"], summary["nms_px"]) == (0.125, 96.0)
    assert main(["scan", str(path), image, "-o", str(tmp_path / "b"), "--quiet", "--backend", FAST,
                 "--threshold", "0.7", "--nms", "144"]) == 0
    summary = json.loads((tmp_path / "b" / "scan_summary.json").read_text())
    assert (summary["threshold"], summary["nms_px"]) == (0.7, 144.0)


def test_mine_command_names_a_missing_source(small_store, tmp_path, capsys):
    from shallowcnn.cli import main

    path, _ = small_store
    model = ShallowCNN(backend="numpy", seed=0).save(tmp_path / "m.npz")
    status = main(["mine", str(path), str(model), "-o", str(tmp_path / "out"), "--source", str(tmp_path / "nowhere")])
    assert status == 2 and "nowhere" in capsys.readouterr().err


def test_scan_settings_without_threshold_take_the_models_operating_point(tiny_phantom, tmp_path):
    """The library, not only the command, resolves the threshold: scan_paths and scan_one
    (what a Dask worker runs) with ScanSettings() use the stored operating point."""
    from shallowcnn.scan_files import ScanSettings, scan_one, scan_paths

    folder, images = tiny_phantom
    model = ShallowCNN(backend=FAST, seed=2)
    model.metadata = {"operating_point": {"threshold": 0.125}}     # as ShallowCNN.load gives it
    assert ScanSettings().threshold is None
    assert ScanSettings().for_model(model).threshold == 0.125
    assert ScanSettings(threshold=0.7).for_model(model).threshold == 0.7
    result, _ = scan_one(model, images[0].dicom_path, ScanSettings())
    assert result.threshold == 0.125
    assert [d.probability for d in result.detections] == [d.probability for d in result.candidates
                                                          if d.probability >= 0.125]
    report = scan_paths(model, [images[0].dicom_path], tmp_path / "out", ScanSettings(), verbose=False)
    assert report["threshold"] == 0.125
