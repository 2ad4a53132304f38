"""benchmarks/table3.py: the paper's Table 3 (ShallowCNN, LeNet-5, MobileNetV2) on a tiny store.

Needs the [bench] extra (PyTorch); skipped with the reason otherwise.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "table3.py"


def load_script():
    spec = importlib.util.spec_from_file_location("table3", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lenet5_count():
    """Worked by hand: two convs with biases, then three dense layers from 16 x 33 x 33."""
    return (1 * 25 * 6 + 6) + (6 * 25 * 16 + 16) + (16 * 33 * 33 * 120 + 120) + (120 * 84 + 84) + (84 + 1)


def mobilenet_v2_count():
    """Sandler et al.'s Table 2 counted by hand: conv weights (no bias) + 2 per BatchNorm channel."""
    total = 9 * 1 * 32 + 2 * 32                                            # stem 3x3, one input channel
    cin = 32
    for t, c, n, _ in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for _ in range(n):
            hidden = cin * t
            total += (cin * hidden + 2 * hidden) if t != 1 else 0           # 1x1 expansion
            total += 9 * hidden + 2 * hidden                               # 3x3 depthwise
            total += hidden * c + 2 * c                                    # 1x1 projection
            cin = c
    return total + (320 * 1280 + 2 * 1280) + (1280 + 1)                    # last 1x1 conv, dense


def test_table3_quick(small_store, tmp_path):
    pytest.importorskip("torch", reason="Table 3's peers (LeNet-5, MobileNetV2) need PyTorch: "
                                        "pip install \".[bench]\"")
    # Its own process, as a user runs it: PyTorch's native libraries can crash while loading
    # into a process where other tests already loaded JAX's and CUDA's.
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--patches", str(small_store[0]),
                          "--epochs", "1", "--reps", "1", "--inference-patches", "4", "--threads", "1",
                          "--backend", "numpy", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "table3.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"shallowcnn", "lenet5", "mobilenetv2"}
    assert rows["shallowcnn"]["n_params"] == 8301
    assert rows["lenet5"]["n_params"] == lenet5_count() == 2_103_821
    assert rows["mobilenetv2"]["n_params"] == mobilenet_v2_count()
    for row in rows.values():
        assert row["best_epoch"] == 1 and 0 <= row["accuracy"] <= 1 and row["patches_per_second"] > 0
    table = (tmp_path / "table3.md").read_text()
    assert table.count("\n| ") == 4 and "2,103,821" in table and "67,797,505" in table


def test_table3_refuses_unknown_models(capsys):
    table3 = load_script()
    with pytest.raises(SystemExit):
        table3.main(["--quick", "--models", "vgg16"])
    assert "unknown vgg16" in capsys.readouterr().err
