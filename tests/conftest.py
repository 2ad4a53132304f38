"""Shared fixtures: one tiny phantom (a few patients, small images) and its patch store."""
from __future__ import annotations

import os

import numpy as np
import pytest

# The CPU kernels' autotuner would time its variants on first use; tests use the
# default variants instead (quick, and the same on every machine). The variants
# themselves are each tested against the reference in tests/test_kernels_cpu.py.
os.environ.setdefault("SHALLOWCNN_KERNEL_VARIANT", "default")
# Likewise the vector width: LLVM's own choice, whatever `shallowcnn tune` saved on this machine
# (tests/test_vector_width.py runs kernels at 512 bits in a process of their own).
os.environ.setdefault("SHALLOWCNN_VECTOR_WIDTH", "llvm")

# Property tests explore new random inputs on a developer's machine; in CI (CI=true) they
# replay a fixed sequence, so that a submission's result does not depend on the draw.
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:
    pass

from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.phantom import generate_phantom
from shallowcnn.data.patches import PatchStore, make_patches
from shallowcnn.model import ShallowCNN

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
    """``(path, store)``: 48 train, 16 val and 16 test patches of the tiny store, so that
    training takes seconds."""
    _, store = tiny_store
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.permutation(store.indices(s))[:n]
                           for s, n in (("train", 48), ("val", 16), ("test", 16))])
    small = PatchStore(**{k: getattr(store, k)[keep] for k in PatchStore.ARRAY_NAMES}, metadata=store.metadata)
    return small.save(tmp_path_factory.mktemp("small") / "small.npz"), small


@pytest.fixture(scope="session")
def tutorial_builder():
    """``tutorials/build_notebooks.py`` as a module (a script beside the notebooks, not in the package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tutorials" / "build_notebooks.py"
    spec = importlib.util.spec_from_file_location("build_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A small model (2 and 3 filters of 5x5) that evaluates in milliseconds."""
    path = tmp_path_factory.mktemp("model") / "model.npz"
    ShallowCNN(seed=0, channels=(2, 3), kernel_size=5).save(path)
    return path


@pytest.fixture(scope="session")
def small_store_file(small_store):
    return small_store[0]


@pytest.fixture
def tune_cache_file(tmp_path, monkeypatch):
    """The autotuner's file of choices moved to an empty temporary file, and this process's
    memory of it (and of the variants chosen) cleared: a test never reads or writes the
    machine's real file."""
    from shallowcnn.kernels import autotune, autotune_cache

    path = tmp_path / "shallowcnn-autotune.json"
    monkeypatch.setattr(autotune_cache, "cache_path", lambda: path)
    monkeypatch.setattr(autotune_cache, "_disk", None)
    monkeypatch.setattr(autotune_cache, "_warned", False)
    monkeypatch.setattr(autotune, "_chosen", {})
    return path
