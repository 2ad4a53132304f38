"""The Winograd variant of the fused conv + ReLU + max pool (kernels/winograd.py).

Its sums are rounded differently from the direct kernel's (see the module), so it is
checked against the float64 reference with a tolerance, and its argmax by the value
the reference has there: the position it names must hold the maximum (to within
that tolerance), whichever of two near-equal positions it picks.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from fused_variant_check import (  # noqa: E402
    check_dense_variant, check_fused_variant, check_model_path, random_layer)

from shallowcnn.kernels import cpu, reference as ref, winograd  # noqa: E402

# (N, C, H, W, F, K)
SHAPES = [
    (2, 6, 30, 31, 16, 9),      # 22 output rows: 5 groups of 4 (one band with a single group) + 2 direct rows
    (3, 6, 24, 300, 10, 9),     # two column chunks; F = 10 pads to 3 blocks of 4
    (2, 1, 21, 40, 5, 9),       # one channel; 13 rows = 3 groups + 1
    (1, 6, 52, 52, 16, 9),      # conv2 of a 60 x 60 patch
    (2, 2, 11, 14, 3, 9),       # 3 output rows: no whole group, all direct
    (2, 3, 13, 12, 4, 5),       # K = 5 is not 3 groups of kernel rows: all direct
]


def test_the_transform_matrices_compute_a_3_tap_filter():
    """AT [(G w) * (BT d)] = the 4 outputs of the 3-tap correlation of d (Lavin & Gray's F(4, 3))."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, w = rng.standard_normal(6), rng.standard_normal(3)
        direct = np.array([w @ d[i:i + 3] for i in range(4)])
        np.testing.assert_allclose(winograd.AT @ ((winograd.G @ w) * (winograd.BT @ d)), direct,
                                   rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_wino_matches_the_reference(shape, dtype):
    check_fused_variant(shape, dtype, "wino")


def test_ties_go_to_the_first_position_across_bands_and_rows():
    """Equal maxima in two bands (rows 1 and 13) and in the rows left to the direct
    kernel (row 16): the first in row-major order wins, as in np.argmax."""
    x = np.zeros((1, 1, 25, 12))                          # 17 x 4 outputs: groups of 4 rows up to row 15
    W = np.zeros((1, 1, 9, 9))
    W[0, 0, 0, 0] = 1.0                                   # z[i, j] = x[i, j]
    x[0, 0, 1, 3] = x[0, 0, 13, 2] = x[0, 0, 16, 0] = 2.0   # band 0, band 1, the direct row 16
    pooled, argmax = cpu.conv_relu_maxpool_forward(x, W, np.zeros(1), variant="wino")
    assert pooled[0, 0] == 2.0 and argmax[0, 0] == 1 * 4 + 3
    x[0, 0, 1, 3] = 0.0
    assert cpu.conv_relu_maxpool_forward(x, W, np.zeros(1), variant="wino")[1][0, 0] == 13 * 4 + 2
    x[0, 0, 13, 2] = 0.0
    assert cpu.conv_relu_maxpool_forward(x, W, np.zeros(1), variant="wino")[1][0, 0] == 16 * 4 + 0
    x[0, 0, 16, 0] = 0.0
    x[0, 0, 6, 1] = x[0, 0, 6, 3] = 2.0                  # two in one row
    assert cpu.conv_relu_maxpool_forward(x, W, np.zeros(1), variant="wino")[1][0, 0] == 6 * 4 + 1


def test_the_model_path_uses_wino_when_pinned(monkeypatch):
    """features_forward with the 1-D Winograd variant pinned (fused_variant_check.check_model_path)."""
    check_model_path(monkeypatch, "wino", 40, 41)


# (N, C, H, W, F, K)
DENSE_SHAPES = [
    (2, 1, 30, 33, 6, 9),       # conv1: 22 rows = 5 groups + 2 direct rows; F = 6 pads to 2 blocks of 4
    (1, 1, 60, 60, 6, 9),       # conv1 of a 60 x 60 patch: 52 rows, 13 groups (the last band holds one)
    (2, 6, 20, 300, 16, 9),     # many channels and filters, two column chunks
    (2, 2, 11, 14, 3, 9),       # 3 output rows: all direct
    (2, 3, 13, 12, 4, 5),       # K = 5: all direct
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", DENSE_SHAPES)
def test_wino_dense_forward_matches_the_reference(shape, dtype, relu):
    """cpu.conv2d_forward(variant="wino") -- conv1's Winograd variant -- against the float64 reference."""
    check_dense_variant(shape, dtype, relu, "wino")


def blockmax_reference(x, W, b, g):
    z = ref.conv2d_forward(x, W, b)
    N, F, Ho, Wo = z.shape
    z = z[:, :, :Ho // g * g, :Wo // g * g].reshape(N, F, Ho // g, g, Wo // g, g)
    return np.maximum(z.max(axis=(3, 5)), 0)


# (N, C, H, W, F, K), g
BLOCKMAX_CASES = [
    ((2, 6, 56, 60, 16, 9), 16),    # a small scan tile: 3 block rows of 16 (2 bands of 8 each)
    ((1, 6, 40, 300, 16, 9), 8),    # 8-row blocks (one band), two column chunks of whole blocks
    ((2, 3, 30, 37, 5, 9), 4),      # 4-row blocks (a band of one group); F = 5 pads to 8
    ((2, 6, 36, 36, 16, 9), 12),    # 12 = 3 groups: a band of 2 and a band of 1
    ((1, 2, 30, 30, 4, 9), 6),      # g % 4 != 0: the direct default runs
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", BLOCKMAX_CASES)
def test_wino_blockmax_matches_the_reference(case, dtype):
    """The scan's block max with variant="wino" against conv2d_forward + block max in float64."""
    from shallowcnn.kernels.cpu_blockmax import conv_relu_blockmax
    shape, g = case
    x, W, b = random_layer(shape, dtype, sum(shape) + g)
    b[0] = -50.0                                       # a filter whose ReLU stays shut: zeros
    got = conv_relu_blockmax(x, W, b, g, variant="wino")
    want = blockmax_reference(*(a.astype(np.float64) for a in (x, W, b)), g)
    assert got.dtype == dtype and got.shape == want.shape
    assert np.all(got[:, 0] == 0)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=(1e-12 if dtype == np.float64 else 5e-6) * scale)


def test_wino_pins_the_three_winograd_kernels(monkeypatch):
    """SHALLOWCNN_KERNEL_VARIANT=wino: the fused conv2, the scan's block max and conv1 all run it."""
    from shallowcnn.kernels import autotune
    monkeypatch.setenv(autotune.ENV, "wino")
    monkeypatch.setattr(autotune, "_chosen", {})
    x, W, b = random_layer((1, 1, 24, 24, 6, 9), np.float32, 1)
    h = cpu.conv2d_forward(x, W, b, relu=True)
    W2 = np.random.default_rng(2).standard_normal((16, 6, 9, 9)).astype(np.float32) / 20
    cpu.conv_relu_blockmax(h, W2, np.zeros(16, np.float32), 4)
    variants = {sig.split(" float")[0]: rec["variant"] for sig, rec in autotune.chosen().items()}
    assert variants == {"small_f dense": "wino", "tile blockmax g4": "wino"}
