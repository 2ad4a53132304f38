"""The Numba backend (kernels/cpu.py) against the NumPy reference (kernels/reference.py).

Small shapes keep the suite quick; Numba compiles once per (kernel, dtype, K)
and caches on disk, so the shapes reuse a few kernel sizes.  Random normal
data has no exact ties, so the argmax is unambiguous.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from shallowcnn.kernels import cpu, get_backend, reference as ref, tiles  # noqa: E402

# (N, C, H, W, F, K): odd sizes, K != 9, batch 1, F not a multiple of the block
SHAPES = [
    (2, 3, 13, 11, 5, 3),
    (1, 1, 20, 17, 6, 9),
    (3, 6, 19, 22, 16, 9),
    (2, 2, 140, 10, 3, 3),      # tall and narrow
    (1, 2, 9, 150, 4, 3),       # output row not a multiple of the vector width
    (1, 2, 11, 273, 7, 3),      # two column chunks (JT = 256), rows not a multiple of RB = 4
]
DTYPES = [np.float64, np.float32]


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)


def data(shape, dtype, seed=0):
    N, C, H, W, F, K = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    Wt = (rng.standard_normal((F, C, K, K)) / np.sqrt(C * K * K)).astype(dtype)
    b = (0.1 * rng.standard_normal(F)).astype(dtype)
    return x, Wt, b


def close(a, b, dtype, scale=1.0):
    t = tol(dtype)
    np.testing.assert_allclose(a, b, rtol=t["rtol"], atol=t["atol"] * scale)


def test_backend_by_name():
    assert get_backend("numba") is cpu
    cpu.check_available()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward(shape, dtype):
    x, W, b = data(shape, dtype)
    out = cpu.conv2d_forward(x, W, b)
    assert out.dtype == dtype
    close(out, ref.conv2d_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64)), dtype)


# The small-F path (cpu._small_f_kernel, F <= cpu.SMALL_F): F = 6 and 5 (groups
# of 3, one of them padded), 8 and 1; K = 9 and 3; batch 1; odd widths; rows not
# a multiple of RB; two column chunks (Wo > JT); C > 1.
SMALL_F_SHAPES = [
    (1, 1, 144, 144, 6, 9),     # conv1 of the paper's network, one patch
    (2, 1, 23, 31, 6, 9),
    (1, 1, 12, 17, 5, 3),
    (3, 2, 14, 27, 5, 9),
    (2, 3, 10, 11, 8, 3),
    (1, 1, 7, 300, 1, 3),       # two column chunks
    (2, 1, 13, 270, 7, 9),      # two column chunks, K = 9
]


def _ref_forward(x, W, b, relu):
    z = ref.conv2d_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64))
    return np.maximum(z, 0) if relu else z


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SMALL_F_SHAPES)
def test_forward_small_f(shape, dtype, relu):
    x, W, b = data(shape, dtype)
    out = cpu.conv2d_forward(x, W, b, relu=relu)
    assert out.dtype == dtype and out.shape == (shape[0], shape[4], shape[2] - shape[5] + 1, shape[3] - shape[5] + 1)
    if relu:
        assert (out >= 0).all() and (out == 0).any()
    close(out, _ref_forward(x, W, b, relu), dtype)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [SHAPES[2], SMALL_F_SHAPES[1], SMALL_F_SHAPES[6]])
def test_forward_relu_blocked_path(shape, dtype, relu):
    """The register-blocked path (F > SMALL_F, or forced by a tile variant for small F) with the fused ReLU."""
    x, W, b = data(shape, dtype)
    close(cpu.conv2d_forward(x, W, b, relu=relu, variant="f4r2"), _ref_forward(x, W, b, relu), dtype)


def test_small_f_width():
    """Column chunks of the small-F path; 0 (use the blocked path) when K is huge."""
    assert tiles.small_f_width(136, 9) == 136
    assert tiles.small_f_width(1000, 9) == 250               # four chunks of 250
    for Wo, K in ((136, 9), (1000, 9), (300, 3), (17, 3)):
        jt = tiles.small_f_width(Wo, K)
        assert -(-(jt + K - 1) // tiles.VL) * tiles.VL <= tiles.SEG
    assert tiles.small_f_width(5, tiles.SEG) == 0              # no segment holds K input columns


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize("density", [1.0, 0.03])
def test_backward(shape, dtype, density):
    """Dense dout (the dot-product path) and sparse dout (the per-position path)."""
    x, W, b = data(shape, dtype)
    N, C, H, Wd, F, K = shape
    rng = np.random.default_rng(1)
    dout = rng.standard_normal((N, F, H - K + 1, Wd - K + 1))
    dout *= rng.random(dout.shape) < density
    dout = dout.astype(dtype)
    dx, dW, db = cpu.conv2d_backward(dout, x, W)
    rdx, rdW, rdb = ref.conv2d_backward(dout.astype(np.float64), x.astype(np.float64), W.astype(np.float64))
    assert dx.dtype == dW.dtype == db.dtype == dtype
    scale = np.sqrt(dout.size)   # float32 sums of many terms: absolute error grows
    close(dx, rdx, dtype, scale)
    close(dW, rdW, dtype, scale)
    close(db, rdb, dtype, scale)
    dx2, dW2, db2 = cpu.conv2d_backward(dout, x, W, need_dx=False)
    assert dx2 is None
    np.testing.assert_array_equal(dW2, dW)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_forward(shape, dtype):
    x, W, b = data(shape, dtype)
    pooled, argmax = cpu.conv_relu_maxpool_forward(x, W, b)
    rp, ra = ref.conv_relu_maxpool_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64))
    assert pooled.dtype == dtype and argmax.dtype == np.int64
    np.testing.assert_array_equal(argmax, ra)
    close(pooled, rp, dtype)


def test_fused_forward_first_maximum_and_closed_relu():
    """Equal maxima: the first in row-major order wins; negative maps pool to 0."""
    x = np.zeros((1, 1, 6, 7))
    x[0, 0, 1, 4] = x[0, 0, 3, 2] = 2.0        # two equal maxima, (1, 4) comes first
    W = np.ones((2, 1, 1, 1))
    W[1] = -1.0                                # second filter: all <= 0
    pooled, argmax = cpu.conv_relu_maxpool_forward(x, W, np.zeros(2))
    assert argmax[0, 0] == 1 * 7 + 4
    assert pooled[0, 0] == 2.0 and pooled[0, 1] == 0.0
    assert argmax[0, 1] == ref.conv_relu_maxpool_forward(x, W, np.zeros(2))[1][0, 1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_sparse_backward_equals_dense_textbook(shape, dtype):
    """The sparse fused backward gives the gradients of the dense path:
    reference conv, ReLU, max, then conv2d_backward with the scattered gradient."""
    x, W, b = data(shape, dtype)
    N, C, H, Wd, F, K = shape
    b = b - 0.3       # some maps entirely negative: closed ReLU, no gradient
    pooled, argmax = cpu.conv_relu_maxpool_forward(x, W, b)
    dpooled = np.random.default_rng(2).standard_normal(pooled.shape).astype(dtype)
    dx, dW, db = cpu.conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled)
    assert dx.dtype == dW.dtype == db.dtype == dtype

    x64, W64, b64 = (a.astype(np.float64) for a in (x, W, b))
    z = ref.conv2d_forward(x64, W64, b64)
    Ho, Wo = z.shape[2:]
    flat = z.reshape(N, F, -1)
    am = flat.argmax(axis=2)
    zmax = flat.max(axis=2)
    dz = np.zeros_like(flat)
    n_idx, f_idx = np.nonzero(zmax > 0)
    dz[n_idx, f_idx, am[n_idx, f_idx]] = dpooled[n_idx, f_idx]
    rdx, rdW, rdb = ref.conv2d_backward(dz.reshape(N, F, Ho, Wo), x64, W64)
    close(dx, rdx, dtype)
    close(dW, rdW, dtype, np.sqrt(N))
    close(db, rdb, dtype)

    dx2, dW2, db2 = cpu.conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled, need_dx=False)
    assert dx2 is None
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)


def test_mixed_dtypes_follow_numpy_promotion():
    x, W, b = data(SHAPES[0], np.float32)
    out = cpu.conv2d_forward(x, W.astype(np.float64), b)
    assert out.dtype == np.float64


def test_bad_shapes_raise():
    x, W, b = data(SHAPES[0], np.float64)
    with pytest.raises(ValueError):
        cpu.conv2d_forward(x[:, :2], W, b)
    with pytest.raises(ValueError):
        cpu.conv2d_backward(np.zeros((1, 1, 1, 1)), x, W)


def test_fused_forward_tie_across_column_chunks():
    """A tile of the next column chunk can hold an earlier flat index than the
    current chunk's second row: the first maximum in row-major order still wins."""
    Wd = tiles.JT + 40                         # two column chunks with K = 1
    x = np.zeros((1, 1, 6, Wd))
    x[0, 0, 1, 5] = 3.0                        # chunk 0, row 1
    x[0, 0, 0, Wd - 3] = 3.0                   # chunk 1, row 0: smaller flat index
    pooled, argmax = cpu.conv_relu_maxpool_forward(x, np.ones((1, 1, 1, 1)), np.zeros(1))
    assert argmax[0, 0] == Wd - 3 == ref.conv_relu_maxpool_forward(x, np.ones((1, 1, 1, 1)), np.zeros(1))[1][0, 0]
    assert pooled[0, 0] == 3.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", [1, 5, 7])
def test_scan_blockmax_shares_the_tile(dtype, g):
    """cpu.conv_relu_blockmax (kernels/cpu_blockmax.py) uses cpu.conv_tile: odd K, F, wide rows (two chunks)."""
    conv_relu_blockmax = cpu.conv_relu_blockmax
    N, C, H, Wd, F, K = 2, 3, 5 + 23, 5 + 270, 6, 5
    x, W, b = data((N, C, H, Wd, F, K), dtype, seed=g)
    z = ref.conv2d_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64))
    Ho, Wo = z.shape[2:]
    nr, nc = Ho // g, Wo // g
    expected = np.maximum(z[:, :, :nr * g, :nc * g].reshape(N, F, nr, g, nc, g).max(axis=(3, 5)), 0)
    got = conv_relu_blockmax(x, W, b, g)
    assert got.dtype == dtype and got.shape == expected.shape
    close(got, expected, dtype)


def test_forward_batch_1_each_kernel_size():
    """One compiled version per K: K = 1, 2, 4 next to the 3 and 9 above."""
    for K in (1, 2, 4):
        x, W, b = data((1, 2, 12, 13, 5, K), np.float64, seed=K)
        close(cpu.conv2d_forward(x, W, b), ref.conv2d_forward(x, W, b), np.float64)
        p, a = cpu.conv_relu_maxpool_forward(x, W, b)
        rp, ra = ref.conv_relu_maxpool_forward(x, W, b)
        np.testing.assert_array_equal(a, ra)
        close(p, rp, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C0,F1,F2,K1,K2,H,W", [(1, 6, 16, 9, 9, 24, 23), (2, 3, 5, 3, 5, 13, 12)])
def test_feature_stack_equals_layer_by_layer_reference(dtype, C0, F1, F2, K1, K2, H, W):
    """features_forward/backward == reference conv1 -> relu -> conv2 -> relu -> max, dense backward."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, C0, H, W)).astype(dtype)
    W1 = (rng.standard_normal((F1, C0, K1, K1)) / K1).astype(dtype)
    b1 = (0.2 * rng.standard_normal(F1)).astype(dtype)
    W2 = (rng.standard_normal((F2, F1, K2, K2)) / K2).astype(dtype)
    b2 = (0.1 * rng.standard_normal(F2)).astype(dtype)
    b2[0] = -100.0                                                  # one filter whose ReLU stays shut
    z1 = ref.conv2d_forward(x, W1, b1)
    h1 = np.maximum(z1, 0)
    pooled_ref, argmax_ref = ref.conv_relu_maxpool_forward(h1, W2, b2)
    pooled, ctx = cpu.features_forward(x, W1, b1, W2, b2)
    np.testing.assert_allclose(pooled, pooled_ref, **tol(dtype))
    np.testing.assert_array_equal(ctx["argmax"], argmax_ref)
    dpooled = rng.standard_normal(pooled.shape).astype(dtype)
    dh1, dW2_ref, db2_ref = ref.conv_relu_maxpool_backward(dpooled, h1, W2, argmax_ref, pooled_ref)
    _, dW1_ref, db1_ref = ref.conv2d_backward(dh1 * (z1 > 0), x, W1, need_dx=False)
    dW1, db1, dW2, db2 = cpu.features_backward(dpooled, ctx)
    for got, want in ((dW1, dW1_ref), (db1, db1_ref), (dW2, dW2_ref), (db2, db2_ref)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol(dtype)["rtol"], atol=tol(dtype)["atol"] * np.abs(want).max())
    assert db2[0] == 0 and not dW2[0].any()


# Every kernel variant (kernels/tiles.py) against the reference, in both dtypes.
# One kernel size (K = 9, the network's) keeps the compilations few: Numba compiles
# one version per (kernel, dtype, K, variant), while the shapes below are free.
VARIANT_SHAPES = [
    (2, 6, 19, 22, 10, 9),      # 14 columns (padded to 16), F = 10: padded filter blocks
    (1, 3, 22, 300, 9, 9),      # two column chunks, odd rows per tile, last rows of the array
    (3, 1, 13, 40, 16, 9),      # rn = 1 and a last tile that cannot read padding
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", list(tiles.TILE_VARIANTS))
def test_every_tile_variant_matches_the_reference(variant, dtype):
    from shallowcnn.kernels.cpu_blockmax import conv_relu_blockmax
    for i, shape in enumerate(VARIANT_SHAPES):
        x, W, b = data(shape, dtype, seed=i)
        z = _ref_forward(x, W, b, relu=False)
        close(cpu.conv2d_forward(x, W, b, variant=variant), z, dtype)
        close(cpu.conv2d_forward(x, W, b, relu=True, variant=variant), np.maximum(z, 0), dtype)
        pooled, argmax = cpu.conv_relu_maxpool_forward(x, W, b, variant=variant)
        rp, ra = ref.conv_relu_maxpool_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64))
        np.testing.assert_array_equal(argmax, ra)
        close(pooled, rp, dtype)
        g = 3
        N, F, Ho, Wo = z.shape
        nr, nc = Ho // g, Wo // g
        blocks = np.maximum(z[:, :, :nr * g, :nc * g].reshape(N, F, nr, g, nc, g).max(axis=(3, 5)), 0)
        close(conv_relu_blockmax(x, W, b, g, variant=variant), blocks, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", list(tiles.SMALL_F_VARIANTS))
def test_every_small_f_variant_matches_the_reference(variant, dtype):
    for i, shape in enumerate(SMALL_F_SHAPES[:2] + SMALL_F_SHAPES[-1:] + [(2, 2, 12, 21, 8, 9)]):
        x, W, b = data(shape, dtype, seed=i)
        for relu in (False, True):
            close(cpu.conv2d_forward(x, W, b, relu=relu, variant=variant), _ref_forward(x, W, b, relu), dtype)


def test_unknown_variant_is_refused():
    x, W, b = data(SHAPES[2], np.float64)
    with pytest.raises(ValueError, match="unknown kernel variant 'f9r9'"):
        cpu.conv_relu_maxpool_forward(x, W, b, variant="f9r9")
    with pytest.raises(ValueError, match="unknown kernel variant"):
        cpu.conv2d_forward(x, W, b, variant="nope")
