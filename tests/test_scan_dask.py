"""shallowcnn scan --workers / --scheduler: the same files as a scan in one process."""
from __future__ import annotations

import json

import numpy as np
import pytest

from shallowcnn.cli import main
from shallowcnn.model import ShallowCNN


def without_timings(value):
    """A JSON value with every "seconds" entry removed (timings differ between runs)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_scan_on_a_local_dask_cluster_writes_what_a_plain_scan_writes(tiny_phantom, tmp_path):
    pytest.importorskip("distributed", reason="scan --workers needs the [dask] extra")
    folder, _ = tiny_phantom
    images = sorted((folder / "AllDICOMs").glob("*.dcm"))[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    model = ShallowCNN(seed=2, channels=(2, 3), kernel_size=5)      # small: a quick numpy scan
    model.params["dense.b"][:] = 0.5                       # some windows above threshold: detections
    model_path = model.save(tmp_path / "model.npz")
    inputs = [str(model_path), *map(str, images), str(broken), "--backend", "numpy", "--quiet"]
    assert main(["scan", *inputs, "-o", str(tmp_path / "here")]) == 1            # 1: the broken file
    assert main(["scan", *inputs, "-o", str(tmp_path / "dask"), "--workers", "2"]) == 1
    here = json.loads((tmp_path / "here" / "scan_summary.json").read_text())
    spread = json.loads((tmp_path / "dask" / "scan_summary.json").read_text())
    assert without_timings(spread) == without_timings(here)
    assert [r["image"] for r in here["images"]] == list(map(str, images))
    assert [r["image"] for r in here["failed"]] == [str(broken)]
    for image in images:
        np.testing.assert_array_equal(np.load(tmp_path / "dask" / f"{image.stem}.prob.npy"),
                                      np.load(tmp_path / "here" / f"{image.stem}.prob.npy"))
        a, b = (json.loads((tmp_path / d / f"{image.stem}.detections.json").read_text()) for d in ("here", "dask"))
        assert without_timings(a) == without_timings(b)


def test_scan_without_dask_says_how_to_install(tiny_phantom, tmp_path, monkeypatch, capsys):
    import sys
    folder, _ = tiny_phantom
    model_path = ShallowCNN(seed=2).save(tmp_path / "model.npz")
    monkeypatch.setitem(sys.modules, "distributed", None)                  # import distributed -> ImportError
    image = sorted((folder / "AllDICOMs").glob("*.dcm"))[0]
    assert main(["scan", str(model_path), str(image), "-o", str(tmp_path / "out"), "--workers", "2",
                 "--backend", "numpy", "--quiet"]) == 3
    assert 'pip install "shallowcnn[dask]"' in capsys.readouterr().err
