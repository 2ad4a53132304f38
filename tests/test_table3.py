"""benchmarks/table3.py: the paper's Table 3 (ShallowCNN, LeNet-5, MobileNetV2) on a tiny store.

Needs the [bench] extra (PyTorch); skipped with the reason otherwise.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
        assert row["best_epoch"] == row["epochs"] == 1 and row["seeds"] == [0]
        assert 0 <= row["accuracy"] <= 1 and row["accuracy_std"] == 0 and row["patches_per_second"] > 0
    assert [len(run["val_losses"]) for run in result["runs"]] == [1, 1, 1]
    table = (tmp_path / "table3.md").read_text()
    assert table.count("\n| ") == 4 and "2,103,821" in table and "67,797,505" in table


def test_fit_until_stale_stops_after_patience_and_restores_the_best():
    """Validation losses 5, 3, 4, 2, 2.5, 2.1, 2.2, 1 with patience 3, monitored by loss: the
    best is epoch 4 (2.0); epochs 5, 6, 7 do not beat it, so training stops after epoch 7 and
    the weights of epoch 4 come back. A NaN loss never counts as an improvement."""
    table3 = load_script()
    losses = iter([5, 3, 4, 2, 2.5, 2.1, 2.2, 1])
    state = {"weights": 0}
    trained = []

    def train_epoch(epoch):
        trained.append(epoch)
        state["weights"] = epoch                     # "weights" = the epoch that made them

    best, epochs, seen, accuracies = table3.fit_until_stale(
        train_epoch, lambda: (next(losses), 0.5), lambda: state["weights"], lambda w: state.update(weights=w),
        max_epochs=20, patience=3, monitor="loss")
    assert (best, epochs, seen) == (4, 7, [5, 3, 4, 2, 2.5, 2.1, 2.2]) and accuracies == [0.5] * 7
    assert trained == list(range(1, 8)) and state["weights"] == 4
    nan_losses = iter([1.0, float("nan"), float("nan")])
    best, epochs, _, _ = table3.fit_until_stale(lambda e: None, lambda: (next(nan_losses), 0.5), lambda: "w1",
                                                lambda w: None, max_epochs=3, patience=2, monitor="loss")
    assert (best, epochs) == (1, 3)
    best, epochs, _, _ = table3.fit_until_stale(lambda e: None, lambda: (1.0, 0.5), lambda: "w", lambda w: None,
                                                max_epochs=5, patience=10)
    assert (best, epochs) == (1, 5)                  # max_epochs stops it first


def test_fit_until_stale_by_accuracy_keeps_the_most_accurate_epoch():
    """The paper's rule: the kept epoch is the one with the highest validation accuracy, even
    where a cautious epoch has the lowest loss. (loss, accuracy) per epoch: (0.70, 0.50),
    (0.60, 0.55), (0.90, 0.80), (1.20, 0.80), (0.50, 0.70), (2.00, 0.75) with patience 3:
    epoch 3 (0.80) is the best -- epoch 4 only ties it -- so training stops after epoch 6 and
    epoch 3 comes back, where the loss would have kept epoch 5."""
    table3 = load_script()
    scores = [(0.70, 0.50), (0.60, 0.55), (0.90, 0.80), (1.20, 0.80), (0.50, 0.70), (2.00, 0.75), (0.1, 1.0)]
    state = {"weights": 0, "epoch": 0}

    def run(monitor):
        it = iter(scores)
        return table3.fit_until_stale(lambda e: state.update(epoch=e), lambda: next(it), lambda: state["epoch"],
                                      lambda w: state.update(weights=w), max_epochs=7, patience=3,
                                      monitor=monitor)

    best, epochs, losses, accuracies = run("accuracy")
    assert (best, epochs, state["weights"]) == (3, 6, 3)
    assert accuracies == [0.50, 0.55, 0.80, 0.80, 0.70, 0.75] and losses[2] == 0.90
    best, epochs, _, _ = run("loss")
    assert (best, epochs, state["weights"]) == (7, 7, 7)             # 0.5 at epoch 5, then 0.1 at epoch 7
    with pytest.raises(ValueError, match="monitor"):
        table3.fit_until_stale(lambda e: None, lambda: (1.0, 0.5), lambda: 0, lambda w: None, 3, 1, monitor="auc")


def test_summarize_gives_mean_and_sample_spread():
    table3 = load_script()
    runs = [{"model": "lenet5", "seed": s, "n_params": 10, "patches_per_second": pps, "accuracy": acc,
             "sensitivity": 1.0, "specificity": acc, "roc_auc": 0.5, "best_epoch": 2, "epochs": e,
             "train_seconds": 3.0} for s, pps, acc, e in ((0, 100, 0.8, 4), (1, 300, 0.9, 6), (2, 200, 1.0, 8))]
    row = table3.summarize(runs)
    assert row["seeds"] == [0, 1, 2] and row["patches_per_second"] == 200
    assert abs(row["accuracy"] - 0.9) < 1e-12 and abs(row["accuracy_std"] - 0.1) < 1e-12   # ddof=1
    assert row["epochs"] == 6 and row["epochs_std"] == 2 and row["sensitivity_std"] == 0


def test_table3_refuses_unknown_models(capsys):
    table3 = load_script()
    with pytest.raises(SystemExit):
        table3.main(["--quick", "--models", "vgg16"])
    assert "unknown vgg16" in capsys.readouterr().err


def test_keras_init_gives_glorot_uniform_weights_and_zero_biases():
    """Glorot's bound sqrt(6 / (fan_in + fan_out)), fans counting the kernel's area: LeNet-5's
    first convolution (1 -> 6, 5 x 5) gets +-sqrt(6 / 175), its first dense layer
    +-sqrt(6 / (17,424 + 120)); every bias is 0 (PyTorch's default draws them at random)."""
    torch = pytest.importorskip("torch", reason="Table 3's peers need PyTorch")
    table3 = load_script()
    torch.manual_seed(0)
    net = table3.keras_init(table3.lenet5(torch.nn), torch.nn)
    conv1, dense1 = net[0], net[7]
    for layer, bound in ((conv1, (6 / (25 + 150)) ** 0.5), (dense1, (6 / (17_424 + 120)) ** 0.5)):
        w = layer.weight.detach().numpy()
        assert abs(w).max() <= bound and abs(w).max() > 0.95 * bound      # fills the whole range
        assert abs(w.std() - bound / 3 ** 0.5) < 0.05 * bound               # uniform: std = bound / sqrt(3)
    assert all(float(m.bias.abs().max()) == 0 for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_fit_until_stale_stops_after_the_epoch_that_passes_the_time_budget():
    """A clock that advances 10 s an epoch and a budget of 25 s: epochs 1, 2 and 3 run (the
    third passes 25 s at 30 s), however good the scores, and the best of them comes back.
    ``on_epoch`` hears each epoch's (epoch, loss, accuracy)."""
    table3 = load_script()
    now = {"t": 0.0}
    heard = []
    accuracies = iter([0.6, 0.9, 0.7, 0.95, 0.99])

    def train_epoch(epoch):
        now["t"] += 10.0

    best, epochs, _, seen = table3.fit_until_stale(
        train_epoch, lambda: (0.5, next(accuracies)), lambda: now["t"], lambda w: None, max_epochs=5,
        patience=5, max_seconds=25, clock=lambda: now["t"], on_epoch=lambda *a: heard.append(a))
    assert (best, epochs, seen) == (2, 3, [0.6, 0.9, 0.7])
    assert heard == [(1, 0.5, 0.6), (2, 0.5, 0.9), (3, 0.5, 0.7)]


def test_train_statistics_use_the_train_split_only_worked_by_hand():
    """Pixels 0.2, 0.4, 0.6, 0.8 (two patches of 1 x 1 x 2): mean 0.5, and the population
    standard deviation sqrt((0.09 + 0.01 + 0.01 + 0.09) / 4) = sqrt(0.05)."""
    table3 = load_script()
    x_train = np.array([0.2, 0.4, 0.6, 0.8], np.float32).reshape(2, 1, 1, 2)
    mean, std = table3.train_statistics(x_train)
    assert abs(mean - 0.5) < 1e-7 and abs(std - 0.05 ** 0.5) < 1e-7


def test_peers_standardise_every_input_with_the_train_statistics():
    """The peer's first layer holds the train split's mean and std as fixed buffers (not
    trainable: the parameter counts are unchanged), maps 0.5 -> 0 and 0.8 -> 0.3 / sqrt(0.05)
    by hand, and the whole network gives the same logits as its body fed (x - mean) / std by
    hand -- for validation- or test-like patches whose own statistics differ."""
    torch = pytest.importorskip("torch", reason="Table 3's peers need PyTorch")
    table3 = load_script()
    x_train = np.array([0.2, 0.4, 0.6, 0.8], np.float32).reshape(2, 1, 1, 2)
    mean, std = table3.train_statistics(x_train)
    torch.manual_seed(0)
    net = table3.build_peer("lenet5", torch, mean, std).eval()
    layer, body = net[0], net[1]
    assert float(layer.mean) == pytest.approx(0.5) and float(layer.std) == pytest.approx(0.05 ** 0.5)
    assert not any(p.requires_grad for p in layer.parameters()) and len(list(layer.parameters())) == 0
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == lenet5_count()
    assert set(net.state_dict()) >= {"0.mean", "0.std"}          # kept with the weights (keep-best)
    worked = layer(torch.tensor([[0.5, 0.8]])).numpy()
    assert np.allclose(worked, [[0.0, 0.3 / 0.05 ** 0.5]], atol=1e-6)
    rng = np.random.default_rng(1)
    x_test = (0.9 + 0.05 * rng.standard_normal((3, 1, 144, 144))).astype(np.float32)   # not the train mean
    with torch.no_grad():
        whole = net(torch.from_numpy(x_test)).numpy()
        by_hand = body(torch.from_numpy((x_test - 0.5) / np.float32(0.05 ** 0.5))).numpy()
    assert np.allclose(whole, by_hand, rtol=1e-4, atol=1e-4)


def test_recompute_batchnorm_statistics_averages_the_batches_worked_by_hand():
    """One BatchNorm channel, 4 one-pixel patches 1, 3, 5, 11 in batches of 2 (2 batches, order
    fixed by a sorted index): batch means 2 and 8 -> running mean 5; unbiased batch variances
    2 and 18 -> running variance 10. The momentum and the train/eval mode come back as they
    were; the weights do not change; a network without BatchNorm is left alone."""
    torch = pytest.importorskip("torch", reason="Table 3's peers need PyTorch")
    table3 = load_script()
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(1))
    net[0].running_mean.fill_(-7.0)
    net.eval()

    class FixedOrder:                       # rng.permutation -> 0, 1, 2, 3: batches {1, 3} and {5, 11}
        def permutation(self, n):
            return np.arange(n)

    x = torch.tensor([1.0, 3.0, 5.0, 11.0]).reshape(4, 1, 1, 1)
    weight = net[0].weight.detach().clone()
    table3.recompute_batchnorm_statistics(net, torch, x, FixedOrder(), batches=2, batch_size=2)
    assert float(net[0].running_mean) == pytest.approx(5.0) and float(net[0].running_var) == pytest.approx(10.0)
    assert net[0].momentum == 0.1 and not net.training and torch.equal(net[0].weight, weight)
    dense = torch.nn.Linear(2, 1)
    before = dense.weight.detach().clone()
    assert table3.recompute_batchnorm_statistics(dense, torch, torch.ones(3, 2), FixedOrder()) is dense
    assert torch.equal(dense.weight, before)


def test_time_share_gives_equal_shares_and_passes_unused_time_on():
    """15 minutes (900 s) for three networks: the first may use 300 s; if it stops on patience
    after 120 s, the second may use (900 - 120) / 2 = 390 s; if that one uses 90 s, the last
    gets all that is left, 690 s. A per-network cap still applies; none of either gives None."""
    table3 = load_script()
    assert table3.time_share(900, 0, 3) == 300
    assert table3.time_share(900, 120, 2) == 390
    assert table3.time_share(900, 210, 1) == 690
    assert table3.time_share(900, 1000, 1) == 0                     # overspent: nothing left, not negative
    assert table3.time_share(900, 120, 2, cap_seconds=360) == 360
    assert table3.time_share(None, 0, 3, cap_seconds=360) == 360 and table3.time_share(None, 0, 3) is None


def test_a_moved_patch_by_hand():
    """moved_patch: a pixel at (r, c) goes to (r + dy, c + dx); what comes in is mirrored at the
    border (numpy's "reflect": the edge pixel itself is not repeated); then the turn and the flip."""
    table3 = load_script()
    patch = np.arange(36, dtype=np.float32).reshape(1, 6, 6)
    out = table3.moved_patch(patch, 1, 2, 0, False, shift=3)
    assert out.shape == (1, 6, 6)
    assert out[0, 3, 4] == patch[0, 2, 2] and out[0, 5, 5] == patch[0, 4, 3]
    assert out[0, 0, 0] == patch[0, 1, 2] and out[0, 0, 1] == patch[0, 1, 1]     # reflected row 1, columns 2, 1
    np.testing.assert_array_equal(table3.moved_patch(patch, 0, 0, 0, False, shift=3), patch)
    np.testing.assert_array_equal(table3.moved_patch(patch, 0, 0, 1, False, shift=3)[0], np.rot90(patch[0]))
    np.testing.assert_array_equal(table3.moved_patch(patch, 0, 0, 0, True, shift=3)[0], patch[0, :, ::-1])
    np.testing.assert_array_equal(table3.moved_patch(patch, -3, 0, 0, False, shift=3)[0, :3], patch[0, 3:])


def test_augment_epoch_draws_alike_for_every_network_and_keeps_the_pixels():
    table3 = load_script()
    rng = np.random.default_rng(0)
    x = rng.random((5, 1, 16, 16)).astype(np.float32)
    a = table3.augment_epoch(x, np.random.default_rng([0, 4]), shift=4)
    b = table3.augment_epoch(x, np.random.default_rng([0, 4]), shift=4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not np.array_equal(a, x)
    for i in range(5):                  # every value comes from the patch itself
        assert np.isin(a[i], x[i]).all()
