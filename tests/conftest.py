"""Shared fixtures: one tiny phantom (a few patients, small images) and its patch store."""
from __future__ import annotations

import numpy as np
import pytest

from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.phantom import generate_phantom
from shallowcnn.data.patches import make_patches

TINY_SIZE = (480, 560)   # width, height: 3.4 x 3.9 cm, room for a couple of clusters
TINY_CASES = 4


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """``(folder, images)``: a 4-patient phantom written once per test session."""
    folder = tmp_path_factory.mktemp("phantom")
    images = generate_phantom(folder, cases=TINY_CASES, seed=3, size=TINY_SIZE, verbose=False)
    assert sum(len(find_clusters(im.rois)) for im in images) >= 2, "tiny phantom needs clusters"
    return folder, images


@pytest.fixture(scope="session")
def tiny_store(tiny_phantom, tmp_path_factory):
    """``(path, store)``: the patch store of the tiny phantom (default settings, no figures)."""
    folder, _ = tiny_phantom
    path = tmp_path_factory.mktemp("store") / "patches.npz"
    store = make_patches(folder, path, seed=0, verbose=False)
    return path, store


@pytest.fixture(scope="session")
def small_store(tiny_store, tmp_path_factory):
    """Path of a store of 16 training, 8 validation and 4 test patches drawn from ``tiny_store``:
    for tests that train many networks (search, Table 3)."""
    from shallowcnn.data.patches import PatchStore

    _, store = tiny_store
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.choice(store.indices(s), n, replace=False)
                           for s, n in (("train", 16), ("val", 8), ("test", 4))])
    small = PatchStore(**{n: getattr(store, n)[keep] for n in PatchStore.ARRAY_NAMES}, metadata=store.metadata)
    path = tmp_path_factory.mktemp("small_store") / "small.npz"
    small.save(path)
    return path
