"""The numba backend's block max for scanning: conv2 + ReLU + g x g block maxima in one pass.

Scanning needs, of the 16-channel conv2 map of a tile, only its g x g block maxima
(:mod:`shallowcnn.scan`; the contract is in :mod:`shallowcnn.kernels`). Computing the map with
``conv2d_forward`` and reducing it afterwards writes and re-reads 16 x T x T floats (16 MB for a
512 x 512 tile); here each small tile of the map is reduced while it is still in the L1 cache, and the full map
never exists.

    z[n, f, i, j]      = b[f] + sum_{c, p, q} W[f, c, p, q] x[n, c, i + p, j + q]
    out[n, f, bi, bj]  = relu( max_{0 <= u, v < g} z[n, f, bi*g + u, bj*g + v] )

The arithmetic is the register-blocked tile of the CPU backend,
:func:`shallowcnn.kernels.tiles.conv_tile` (FB filters x RB rows x up to JT columns;
:mod:`shallowcnn.kernels.tiles` explains the blocking and its variants, and
:mod:`shallowcnn.kernels.autotune` picks the variant, as for the other kernels). This module only
decides which tiles to compute and how to reduce them. One parallel task per (tile n, block row bi)
-- disjoint outputs, so no two threads ever write the same element.

The ``wino`` variant (:func:`_wino_blockmax`) computes the same block maxima from
Winograd's F(4, 3) down the columns, with the band passes of
:mod:`shallowcnn.kernels.winograd` (half the multiply-adds): a block row of g rows is
g / 4 groups of 4 output rows, two groups sharing each pass. It needs g % 4 == 0 and
K % 3 == 0 (else the direct default runs). Its float32 values differ from the direct
kernel's by rounding (the scan's probabilities by about 1e-6), so it is a variant the
autotuner may choose, never the pinned default.

Tested against the reference (``conv2d_forward`` then block max) in
tests/test_kernels_cpu.py and tests/test_scan.py. :mod:`shallowcnn.kernels.cpu` imports
:func:`conv_relu_blockmax` so that the numba backend offers it like the others.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import autotune, check_shapes, winograd
from .tiles import ACC_ROW, RB, VL, row_max, conv_tile, pack_bias, pack_weights, taps, tile_width, variant_args
from .winograd import FB as WFB, band_products, output_rows, transform_band


@njit(parallel=True, cache=True, fastmath={"contract"})
def _conv_relu_blockmax(x, Wp, bp, kt, ft, rt, g, jt, out):
    # Wp, bp: filters packed and zero-padded to blocks of FB = len(ft) (tiles.pack_weights);
    # rt: rows per pass (the variant, see tiles.py); out has the real F.
    # "contract" lets LLVM fuse a * b + c into one FMA instruction.
    FB = len(ft)
    N = x.shape[0]
    F = out.shape[1]
    nfb = Wp.shape[0]
    nbr, nbc = out.shape[2], out.shape[3]
    wc = nbc * g                                   # columns computed: whole blocks only
    for task in prange(N * nbr):
        n, bi = task // nbr, task % nbr
        acc = np.empty(RB * FB * ACC_ROW, dtype=x.dtype)
        best = np.full((nfb * FB, nbc), -np.inf, dtype=x.dtype)    # block maxima of this block row
        for blk in range(nfb):
            for i0 in range(bi * g, bi * g + g, RB):               # the g output rows of block row bi
                rn = min(RB, bi * g + g - i0)
                for j0 in range(0, wc, jt):
                    jn = min(jt, wc - j0)
                    conv_tile(acc, x, Wp, bp, kt, ft, rt, n, blk, i0, rn, j0, jn)
                    # fold the finished tile into its blocks (a tile may split a block)
                    for r in range(rn):
                        for f in range(FB):
                            a = (r * FB + f) * ACC_ROW
                            row = best[blk * FB + f]
                            for j in range(jn):
                                bj = (j0 + j) // g
                                if acc[a + j] > row[bj]:
                                    row[bj] = acc[a + j]
        for f in range(F):
            for bj in range(nbc):
                top = best[f, bj]
                out[n, f, bi, bj] = top if top > 0 else 0                # ReLU after the max: same value


@njit(parallel=True, cache=True, fastmath={"contract"})
def _wino_blockmax(x, Up, bp, kt, g, jt, out):
    # Up, bp: winograd.pack_weights / pack_bias (blocks of WFB filters); g % 4 == 0 and jt a
    # multiple of g, so a column chunk holds whole blocks. out has the real F.
    K = len(kt)
    N, C, H, Wd = x.shape
    F = out.shape[1]
    nfb = Up.shape[0]
    nbr, nbc = out.shape[2], out.shape[3]
    wc = nbc * g                                   # columns computed: whole blocks only
    for task in prange(N * nbr):
        n, bi = task // nbr, task % nbr
        V = np.zeros((2, C, K // 3, 6, Wd + VL), dtype=x.dtype)    # zero padding: see transform_band
        acc = np.empty(6 * 2 * WFB * ACC_ROW, dtype=x.dtype)
        y = np.empty(4 * ACC_ROW, dtype=x.dtype)
        best = np.full((nfb * WFB, nbc), -np.inf, dtype=x.dtype)
        for i0 in range(bi * g, bi * g + g, 8):            # bands of 8 rows (the last may hold 4)
            ng = min(2, (bi * g + g - i0) // 4)
            transform_band(x, n, i0, ng, V)
            for blk in range(nfb):
                for j0 in range(0, wc, jt):
                    jn = min(jt, wc - j0)
                    band_products(acc, V, Up, kt, blk, j0, (jn + VL - 1) // VL * VL, ng)
                    for s in range(ng):
                        for f in range(WFB):
                            row = best[blk * WFB + f]
                            output_rows(acc, s, f, bp[blk * WFB + f], jn, y)
                            for rho in range(4):
                                for bj in range(j0 // g, (j0 + jn) // g):
                                    m = row_max(y, rho * ACC_ROW + bj * g - j0, g)
                                    if m > row[bj]:
                                        row[bj] = m
        for f in range(F):
            for bj in range(nbc):
                top = best[f, bj]
                out[n, f, bi, bj] = top if top > 0 else 0


def conv_relu_blockmax(x, W, b, g: int, variant=None) -> np.ndarray:
    """Valid convolution, ReLU and g x g block maxima, without storing the convolution.

    x (N, C, H, W), W (F, C, K, K), b (F,), g >= 1 ->
    out (N, F, (H-K+1) // g, (W-K+1) // g), ``out = relu(blockmax_g(conv(x, W) + b))``

    Rows and columns of the convolution beyond the last whole block are not computed.
    variant: a name of ``variants.BLOCKMAX_VARIANTS`` (the tile variants and ``wino``), or
    None (the autotuner picks).
    """
    x = np.ascontiguousarray(x)
    W = np.asarray(W)
    check_shapes(x, W)
    K = W.shape[2]
    Ho, Wo = x.shape[2] - K + 1, x.shape[3] - K + 1
    if Ho < g or Wo < g:
        raise ValueError(f"convolution output {Ho} x {Wo} holds no whole {g} x {g} block")
    g = int(g)
    if variant is None:
        variant = autotune.pick("blockmax", f"tile blockmax g{g}", x, W,
                                lambda xs, v: _blockmax(xs, W, b, g, v),
                                rows=max(g, 32 // g * g))   # whole block rows
    return _blockmax(x, W, b, g, autotune.check("blockmax", variant))


def _blockmax(x, W, b, g, variant):
    F, _, K, _ = W.shape
    Ho, Wo = x.shape[2] - K + 1, x.shape[3] - K + 1
    if variant == "wino":
        if g % 4 or not winograd.usable(K):
            variant = autotune.FAMILIES["tile"][0]          # no whole groups of 4 rows: direct
        else:
            out = np.empty((x.shape[0], F, Ho // g, Wo // g), dtype=x.dtype)
            jt = max(g, tile_width((Wo // g) * g) // g * g)   # whole blocks per column chunk
            _wino_blockmax(x, winograd.pack_weights(W, x.dtype), pack_bias(b, F, x.dtype, WFB), taps(K),
                           g, jt, out)
            return out
    ft, rt = variant_args(variant)
    out = np.empty((x.shape[0], F, Ho // g, Wo // g), dtype=x.dtype)
    _conv_relu_blockmax(x, pack_weights(W, x.dtype, len(ft)), pack_bias(b, F, x.dtype, len(ft)), taps(K),
                        ft, rt, g, tile_width((Wo // g) * g), out)
    return out
