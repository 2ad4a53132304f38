"""Patches: labels that match their content, splits without leaks, a reproducible store."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shallowcnn.cli import main
from shallowcnn.data.augment import TRANSFORMS, apply_transform, augment, undo_transform
from shallowcnn.data.clusters import calcification_centres
from shallowcnn.data.inbreast import read_dicom
from shallowcnn.data.intensity import to_network_input
from shallowcnn.data.patches import load_patches, make_patches
from shallowcnn.data.split import split_by_patient
from shallowcnn.storage import StoreError, save_npz


def _windows(store, label):
    return np.flatnonzero((store.labels == label) & (store.transform == "none"))


def test_positive_patches_hold_their_calcifications(tiny_phantom, tiny_store):
    _, images = tiny_phantom
    _, store = tiny_store
    by_name = {im.file_name: im for im in images}
    positives = _windows(store, 1)
    assert len(positives) > 0
    u8_cache = {}
    for k in positives:
        im = by_name[str(store.image[k])]
        if im.file_name not in u8_cache:
            u8_cache[im.file_name] = to_network_input(read_dicom(im.dicom_path).pixels).pixels
        u8 = u8_cache[im.file_name]
        r, c = store.position[k]
        np.testing.assert_array_equal(store.patches[k], u8[r:r + 144, c:c + 144])  # the very pixels
        centres = calcification_centres(im.rois) - [r, c]
        inside = ((centres >= 0) & (centres < 144)).all(axis=1)
        assert inside.sum() >= 3 or any(roi.kind == "cluster" for roi in im.rois)
        # the brightest calcification stands out of the patch
        rr, cc = np.rint(centres[inside]).astype(int).T
        assert store.patches[k][np.clip(rr, 0, 143), np.clip(cc, 0, 143)].max() > np.median(store.patches[k])


def test_negative_patches_inside_breast_and_touch_no_annotation(tiny_phantom, tiny_store):
    _, images = tiny_phantom
    _, store = tiny_store
    by_name = {im.file_name: im for im in images}
    for k in _windows(store, 0):
        im = by_name[str(store.image[k])]
        r, c = store.position[k]
        for roi in im.rois:
            y, x = roi.points[:, 1], roi.points[:, 0]
            assert not ((y >= r) & (y < r + 144) & (x >= c) & (x < c + 144)).any()
        mask = to_network_input(read_dicom(im.dicom_path).pixels).mask
        assert mask[r:r + 144, c:c + 144].mean() > 0.95


def test_no_patient_in_two_splits(tiny_store):
    _, store = tiny_store
    seen = {}
    for patient, split in zip(store.patient, store.split):
        assert seen.setdefault(patient, split) == split
    audit = store.metadata["audit"]
    assert all(row["patients"] == 0 and row["images"] == 0 and row["overlapping_windows"] == 0
               for row in audit.values())


def test_store_arrays_and_api(tiny_store):
    path, store = tiny_store
    loaded = load_patches(path)
    assert loaded.patches.dtype == np.uint8 and loaded.patches.shape[1:] == (144, 144)
    assert loaded.labels.dtype == np.uint8 and loaded.position.shape == (len(loaded), 2)
    for name in ("patient", "image", "transform", "split"):
        assert getattr(loaded, name).dtype.kind == "U"
    assert set(np.unique(loaded.transform)) == set(TRANSFORMS)
    assert loaded.metadata["kind"] == "shallowcnn.patches"
    x, y = loaded.arrays("train")
    assert x.dtype == np.float32 and x.shape[1:] == (1, 144, 144) and y.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(np.unique(y)) <= {0.0, 1.0}
    assert len(loaded.arrays(None)[0]) == len(loaded)
    np.testing.assert_array_equal(x[0, 0], loaded.patches[loaded.split == "train"][0] / np.float32(255))
    for row in loaded.counts().values():  # balanced within each split
        assert row["positive"] == row["negative"] or row["positive"] * row["negative"] == 0
    with pytest.raises(ValueError):
        loaded.arrays("training")


def test_reading_twice_gives_identical_stores(tiny_phantom, tiny_store, tmp_path):
    folder, _ = tiny_phantom
    _, first = tiny_store
    again = make_patches(folder, tmp_path / "again.npz", seed=0, verbose=False)
    again = load_patches(tmp_path / "again.npz")
    for name in first.ARRAY_NAMES:
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert first.metadata["counts"] == again.metadata["counts"]
    assert first.metadata["audit"] == again.metadata["audit"]


def test_paper_split_warns_and_leaks(tiny_phantom, tmp_path, capsys):
    folder, _ = tiny_phantom
    status = main(["patches", str(folder), "-o", str(tmp_path / "paper.npz"), "--split-mode", "paper",
                   "--no-figures"])
    out = capsys.readouterr()
    assert status == 0 and "leak" in out.err and "leakage audit" in out.out
    store = load_patches(tmp_path / "paper.npz")
    assert store.metadata["audit"]["train/test"]["patients"] > 0
    assert store.metadata["audit"]["train/test"]["overlapping_windows"] > 0
    counts = store.counts()
    total = len(store)
    assert abs(counts["train"]["positive"] + counts["train"]["negative"] - 0.64 * total) <= 1


def test_figures_written_next_to_store(tiny_phantom, tmp_path):
    folder, _ = tiny_phantom
    assert main(["patches", str(folder), "-o", str(tmp_path / "p.npz"), "--quiet"]) == 0
    for suffix in ("_fig2_examples.png", "_fig3_transforms.png"):
        with Image.open(tmp_path / f"p{suffix}") as img:
            assert img.size[0] > 300


def test_transforms_are_the_papers_four():
    patch = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(apply_transform(patch, "reflect"), np.fliplr(patch))
    np.testing.assert_array_equal(apply_transform(patch, "rot180"), np.rot90(patch, 2))
    np.testing.assert_array_equal(apply_transform(patch, "reflect+rot180"), np.rot90(np.fliplr(patch), 2))
    np.testing.assert_array_equal(apply_transform(patch, "rot90"), np.rot90(patch))
    for name in TRANSFORMS:
        np.testing.assert_array_equal(undo_transform(apply_transform(patch, name), name), patch)
    out, source, names = augment(np.stack([patch, patch + 1]))
    assert out.shape == (10, 4, 4) and source.tolist() == [0, 1] * 5 and names[0] == "none"


def test_patient_split_is_stratified_and_near_fractions():
    rng = np.random.default_rng(0)
    patient = np.repeat([f"p{k:02d}" for k in range(40)], 10)
    labels = (rng.random(400) < 0.5).astype(np.uint8)
    labels[:100] = 0
    split = split_by_patient(patient, labels, seed=1)
    for name, share in (("train", 0.64), ("val", 0.16), ("test", 0.20)):
        assert abs((split == name).mean() - share) < 0.06
        assert labels[split == name].sum() > 0 and (labels[split == name] == 0).sum() > 0


def test_png_folder_source(tmp_path):
    rng = np.random.default_rng(0)
    for label in (0, 1):
        (tmp_path / "src" / str(label)).mkdir(parents=True)
        for k in range(6):
            size = 144 if k % 2 else 100  # some need resizing
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(
                tmp_path / "src" / str(label) / f"pat{k}_{label}.png")
    (tmp_path / "src" / "1" / "broken.png").write_bytes(b"not a png")
    store = make_patches(tmp_path / "src", tmp_path / "png.npz", verbose=False)
    assert store.patches.shape[1:] == (144, 144)
    assert store.metadata["source_kind"] == "png"
    assert any("broken.png" in path for path, _ in store.metadata["skipped"])
    assert store.metadata["notes"]["PNG patches resized to 144 x 144"] == 6
    assert store.metadata["before_augmentation"] == {"positive": 6, "negative": 6}


def test_load_patches_refuses_other_files(tmp_path):
    save_npz(tmp_path / "model.npz", {"w": np.zeros(3)}, {"kind": "shallowcnn.model"})
    with pytest.raises(StoreError, match="expected 'shallowcnn.patches'"):
        load_patches(tmp_path / "model.npz")


def test_unknown_source_is_a_clear_error(tmp_path, capsys):
    assert main(["patches", str(tmp_path), "-o", str(tmp_path / "p.npz")]) == 2
    err = capsys.readouterr().err
    assert "neither an INbreast-layout folder" in err and "Traceback" not in err
