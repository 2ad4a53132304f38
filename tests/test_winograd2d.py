"""The 2-D Winograd variant of the fused conv + ReLU + max pool (kernels/winograd2d.py).

As for the 1-D variant (tests/test_winograd.py): checked against the float64 reference
with a tolerance in float32, its argmax by the value the reference has there, and
exactly in float64 (random data has no near-ties at 1e-12).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from fused_variant_check import check_dense_variant, check_fused_variant, check_model_path  # noqa: E402

from shallowcnn.kernels import cpu, reference as ref, winograd2d  # noqa: E402

# (N, C, H, W, F, K)
SHAPES = [
    (2, 6, 30, 31, 16, 9),      # 22 x 23 outputs: the last tile row and column hold 1 and 2 of 3
    (1, 6, 52, 52, 16, 9),      # conv2 of a 60 x 60 patch: 15 x 15 tiles, one band in two halves
    (1, 6, 136, 140, 16, 9),    # conv2 of a 144 x 144 patch (4 more columns): 4 bands, the last shorter
    (2, 3, 20, 25, 5, 6),       # K = 6: 2 x 2 blocks; F = 5 pads to 2 blocks of 4
    (2, 2, 11, 14, 3, 3),       # K = 3: one block, plain F(3 x 3, 3 x 3)
    (2, 1, 9, 9, 4, 9),         # a single output: one tile, 8 of its 9 values past the output
    (1, 2, 10, 400, 16, 9),     # 2 x 392 outputs: a grid row of 133 tiles, 3 rows to a band
]


def test_the_transform_matrices_compute_a_3_by_3_correlation():
    """AT [(G w G^T) * (BT d BT^T)] A = the 3 x 3 outputs of the 3 x 3 correlation of a 5 x 5 d."""
    rng = np.random.default_rng(0)
    AT, G, BT = winograd2d.AT, winograd2d.G, winograd2d.BT
    for _ in range(5):
        d, w = rng.standard_normal((5, 5)), rng.standard_normal((3, 3))
        direct = np.array([[np.sum(w * d[i:i + 3, j:j + 3]) for j in range(3)] for i in range(3)])
        np.testing.assert_allclose(AT @ ((G @ w @ G.T) * (BT @ d @ BT.T)) @ AT.T, direct, rtol=1e-13, atol=1e-13)


def test_usable_shapes():
    assert winograd2d.usable(9, 128) and winograd2d.usable(9, 44) and winograd2d.usable(3, 1)
    assert not winograd2d.usable(5, 128)                   # not whole 3 x 3 blocks
    assert not winograd2d.usable(12, 128)                  # more blocks than grid_pass has views for
    assert not winograd2d.usable(9, 3 * winograd2d.MAXP)   # a grid row wider than a band


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_wino2d_matches_the_reference(shape, dtype):
    check_fused_variant(shape, dtype, "wino2d")


def test_ties_go_to_the_first_position_across_tiles_bands_and_halves():
    """Equal maxima: the first in row-major order wins, as in np.argmax, though the kernel
    visits positions tile by tile (every third column of a row at a time), half by half
    and band by band."""
    Wd = 400                                              # 392 outputs a row: 133 tiles, bands of 3 grid rows
    x = np.zeros((1, 1, 40, Wd))
    W = np.zeros((1, 1, 9, 9))
    W[0, 0, 0, 0] = 1.0                                   # z[i, j] = x[i, j]
    Wo = Wd - 8

    def first(*positions):
        x[:] = 0.0
        for i, j in positions:
            x[0, 0, i, j] = 2.0
        pooled, argmax = cpu.conv_relu_maxpool_forward(x, W, np.zeros(1), variant="wino2d")
        assert pooled[0, 0] == 2.0
        return divmod(int(argmax[0, 0]), Wo)

    assert first((4, 7), (4, 5)) == (4, 5)                # one row: column 7 (tile 2, sigma 1) is folded
    #                                                       before column 5 (tile 1, sigma 2)
    assert first((4, 6), (4, 5)) == (4, 5)                # sigma 0 of tile 2, then sigma 2 of tile 1
    assert first((5, 0), (4, 300)) == (4, 300)            # the earlier row of one grid row wins
    assert first((6, 0), (5, 391)) == (5, 391)            # grid row 1 (first half) before grid row 2 (second)
    assert first((30, 2), (9, 391)) == (9, 391)           # band 1 (grid rows 3 to 5) before band 3
    assert first((7, 0), (6, 0)) == (6, 0)                # two rows of one tile


def test_the_model_path_uses_wino2d_when_pinned(monkeypatch):
    """features_forward with the 2-D Winograd variant pinned (fused_variant_check.check_model_path)."""
    check_model_path(monkeypatch, "wino2d", 60, 60)


def test_wide_rows_fall_back_to_the_1d_variant():
    """A grid row wider than a band: variant "wino2d" runs the 1-D "wino" instead, same numbers."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 12, 3 * winograd2d.MAXP + 20)).astype(np.float32)
    W = rng.standard_normal((4, 2, 9, 9)).astype(np.float32) / 18
    b = np.zeros(4, np.float32)
    got = cpu.conv_relu_maxpool_forward(x, W, b, variant="wino2d")
    want = cpu.conv_relu_maxpool_forward(x, W, b, variant="wino")
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


# (N, C, H, W, F, K)
DENSE_SHAPES = [
    (2, 1, 30, 33, 6, 9),       # conv1: 22 x 25 outputs, the last tiles partly past them; F = 6: 2 blocks of 4
    (1, 1, 60, 60, 6, 9),       # conv1 of a 60 x 60 patch: 52 x 52, 18 x 18 tiles in one band
    (1, 1, 144, 144, 6, 9),     # conv1 of a 144 x 144 patch: 46 grid rows in bands of 19
    (2, 6, 20, 300, 16, 9),     # many channels and filters; 98 tiles a grid row, 5 rows to a band
    (2, 3, 13, 12, 4, 6),       # K = 6
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", DENSE_SHAPES)
def test_wino2d_dense_forward_matches_the_reference(shape, dtype, relu):
    """cpu.conv2d_forward(variant="wino2d") -- conv1's 2-D Winograd variant -- against the float64 reference."""
    check_dense_variant(shape, dtype, relu, "wino2d")


def test_scratch_is_kept_per_shape_and_reused():
    """The work arrays are made once per shape (and thread), and a call with other shapes in
    between does not disturb the numbers of the next."""
    rng = np.random.default_rng(7)
    x1 = rng.random((3, 1, 60, 60), dtype=np.float32)
    W1 = rng.standard_normal((6, 1, 9, 9)).astype(np.float32) / 9
    x2 = rng.random((2, 6, 52, 52), dtype=np.float32)
    W2 = rng.standard_normal((16, 6, 9, 9)).astype(np.float32) / 20
    b1, b2 = np.zeros(6, np.float32), np.zeros(16, np.float32)
    first = winograd2d.conv_dense(x1, W1, b1, True)
    assert winograd2d._scratch(x1, 1, 3) is winograd2d._scratch(x1, 1, 3)
    winograd2d.conv_max(x2, W2, b2)
    np.testing.assert_array_equal(winograd2d.conv_dense(x1, W1, b1, True), first)


def test_wino2d_pins_conv1_and_the_fused_conv2(monkeypatch):
    """SHALLOWCNN_KERNEL_VARIANT=wino2d pins conv1 and the fused conv2, not the scan's block max
    (pinned here by the f4r2 before it, which wino2d then overrides for the other two)."""
    from shallowcnn.kernels import autotune
    monkeypatch.setenv(autotune.ENV, "f4r2,wino2d")
    monkeypatch.setattr(autotune, "_chosen", {})
    rng = np.random.default_rng(1)
    x = rng.random((1, 1, 24, 24), dtype=np.float32)
    h = cpu.conv2d_forward(x, rng.standard_normal((6, 1, 9, 9)).astype(np.float32), np.zeros(6, np.float32),
                           relu=True)
    W2 = rng.standard_normal((16, 6, 9, 9)).astype(np.float32) / 20
    cpu.conv_relu_maxpool_forward(h, W2, np.zeros(16, np.float32))
    cpu.conv_relu_blockmax(h, W2, np.zeros(16, np.float32), 4)
    variants = {sig.split(" float")[0]: rec["variant"] for sig, rec in autotune.chosen().items()}
    assert variants == {"small_f dense": "wino2d", "tile fused": "wino2d", "tile blockmax g4": "f4r2"}


# (N, H, W): conv1 (6 filters, 9 x 9) and conv2 (16 x 6 x 9 x 9) on one-channel patches
STACK_SHAPES = [(3, 60, 60), (2, 144, 144), (2, 30, 33), (1, 17, 17)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", STACK_SHAPES)
def test_the_stack_computes_what_the_two_kernels_do(shape, dtype):
    """winograd2d.stack_max (both layers, a patch at a time) gives the same bits as conv_dense and
    then conv_max over the whole batch, and matches the float64 reference."""
    N, H, Wd = shape
    rng = np.random.default_rng(H + Wd)
    x = rng.random((N, 1, H, Wd)).astype(dtype)
    W1 = (rng.standard_normal((6, 1, 9, 9)) / 9).astype(dtype)
    b1 = (0.05 * rng.standard_normal(6)).astype(dtype)
    W2 = (rng.standard_normal((16, 6, 9, 9)) / 20).astype(dtype)
    b2 = (0.05 * rng.standard_normal(16)).astype(dtype)
    h1, zmax, argmax = winograd2d.stack_max(x, W1, b1, W2, b2)
    h1_alone = winograd2d.conv_dense(x, W1, b1, True)
    np.testing.assert_array_equal(h1, h1_alone)
    zmax_alone, argmax_alone = winograd2d.conv_max(h1_alone, W2, b2)
    np.testing.assert_array_equal(zmax, zmax_alone)
    np.testing.assert_array_equal(argmax, argmax_alone)
    h_ref = np.maximum(ref.conv2d_forward(*(a.astype(np.float64) for a in (x, W1, b1))), 0)
    pooled_ref, _ = ref.conv_relu_maxpool_forward(h_ref, W2.astype(np.float64), b2.astype(np.float64))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(h1, h_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(np.maximum(zmax, 0), pooled_ref, rtol=0, atol=tol)


@pytest.mark.parametrize("pin, stacked", [("wino2d", True), ("default", False), ("wino", False),
                                         ("g3,separate", False), ("wino2d,separate", False)])
def test_features_forward_stacks_the_layers_only_where_chosen(monkeypatch, pin, stacked):
    """cpu.features_forward runs winograd2d.stack_max exactly when the "stack" choice is wino2d
    (never where the user pinned the layers' variants and not the stack's), and gives the
    two-kernel path's numbers either way."""
    from shallowcnn.kernels import autotune
    rng = np.random.default_rng(11)
    x = rng.random((2, 1, 60, 60), dtype=np.float32)
    W1 = (rng.standard_normal((6, 1, 9, 9)) / 9).astype(np.float32)
    W2 = (rng.standard_normal((16, 6, 9, 9)) / 20).astype(np.float32)
    b1, b2 = np.full(6, 0.01, np.float32), np.zeros(16, np.float32)
    calls = []
    stack = winograd2d.stack_max
    monkeypatch.setattr(winograd2d, "stack_max", lambda *a: calls.append(1) or stack(*a))
    monkeypatch.setenv(autotune.ENV, pin)
    autotune.forget_choices()
    pooled, ctx = cpu.features_forward(x, W1, b1, W2, b2)
    assert bool(calls) == stacked
    h1 = cpu.conv2d_forward(x, W1, b1, relu=True)
    want, argmax = cpu.conv_relu_maxpool_forward(h1, W2, b2)
    np.testing.assert_array_equal(ctx["h1"], h1)
    np.testing.assert_array_equal(pooled, want)
    np.testing.assert_array_equal(ctx["argmax"], argmax)
