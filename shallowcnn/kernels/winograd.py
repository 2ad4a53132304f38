"""conv2's fused forward with half the multiply-adds: Winograd's F(4, 3) down the columns.

A direct 9 x 9 convolution spends K*K = 81 multiply-adds per output value and input
channel. Winograd's minimal filtering algorithm F(m, r) computes m outputs of an r-tap
filter with m + r - 1 multiplications instead of m*r (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", 2016). Here it runs *down* each column, on groups
of 4 output rows, with the 9 kernel rows split into 3 groups of 3:

    z[f, i0 + rho, j] = b[f] + sum_{c, k, q} sum_{p'<3} W[f, c, 3k + p', q] x[c, i0 + 3k + rho + p', j + q]

and for each (c, k, q) the inner sum over p' is a 3-tap filter down the column, four
rows of which F(4, 3) computes from six input rows:

    V[c, k, a, j']  = sum_{rho'<6} BT[a, rho'] x[c, i0 + 3k + rho', j']   (a < 6; input transform)
    U[f, c, k, a, q] = sum_{p'<3} G[a, p'] W[f, c, 3k + p', q]           (weights, once per call)
    M[f, a, j]      = sum_{c, k, q} U[f, c, k, a, q] V[c, k, a, j + q]     (6 x 6 x 3 x 9 per column)
    z[f, i0 + rho, j] = b[f] + sum_a AT[rho, a] M[f, a, j]              (rho < 4; output transform)

Per 4 output rows that is 6 "rows" a of 6 x 3 x 9 = 162 multiply-adds instead of 4 of
6 x 9 x 9 = 486: 972 against 1,944, half. And each of the 6 x 3 x 6 passes (c, k, a)
is exactly a row pass of the direct kernel -- 9 taps q along one row of V, 4 filters
at a time, the columns as the vector loop -- so :func:`tiles.tile_pass` does the
work, with the register blocking, padding and variants explained there; two groups
of 4 rows (8 output rows) share each pass, as the two rows of ``f4r2`` do.

The price is rounding: z comes out as a sum of larger terms that cancel (the
transforms hold 4, 5, 8 and 1/24). On conv2's shapes (a batch of ReLU outputs, 144 x
144 patches) its float32 maxima were as close to the float64 reference as the direct
kernel's (both within 2.4e-6, 7e-7 of the largest value), but they are rounded
differently, so the two kernels do not give equal numbers, and the maximum's
*position* can differ where two values tie to within that rounding.
Hence a variant of its own (``wino``), chosen by the autotuner only where it is
faster and never by the tests' pinned default, and tested against the reference
with a tolerance (tests/test_winograd.py).

Rows past the last whole group of 4 (Ho % 4 of them) are done by the direct kernel.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .tiles import ACC_ROW, FM_FMA, VL, fold_row_max, pack_bias, taps, tile_pass, tile_width

# F(4, 3): z = AT [(G w) * (BT d)] for 6 inputs d, 3 taps w, 4 outputs z.
BT = np.array([[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], dtype=np.float64)
FB = 4          # filters per pass (4 chains per row, 8 with the two groups of rows)



def usable(K) -> bool:
    """The row split needs K = 3 * (kernel-row groups)."""
    return K % 3 == 0


def pack_weights(W, dtype):
    """W (F, C, K, K) -> Up (nfb, C, K/3, 6, FB*K), Up[b, c, k, a, f*K + q] = U[b*FB + f, c, k, a, q].

    U = G applied to each group of 3 kernel rows, computed in float64; filters are
    zero-padded to a multiple of FB as in :func:`tiles.pack_weights`.
    """
    F, C, K, _ = W.shape
    nfb = -(-F // FB)
    Wg = np.zeros((nfb * FB, C, K // 3, 3, K))
    Wg[:F] = np.asarray(W, dtype=np.float64).reshape(F, C, K // 3, 3, K)
    U = np.matmul(G, Wg)                                          # (F, C, K/3, 6, K)
    Up = U.reshape(nfb, FB, C, K // 3, 6, K).transpose(0, 2, 3, 4, 1, 5)
    return np.ascontiguousarray(Up.reshape(nfb, C, K // 3, 6, FB * K).astype(dtype))


@njit(fastmath=FM_FMA, cache=True)
def _input_transform(x, n, r0, V, s, c, k, Wd):
    """V[s, c, k, a, :Wd] = sum_rho BT[a, rho] x[n, c, r0 + rho, :Wd]  (BT written out)."""
    for j in range(Wd):
        d0 = x[n, c, r0, j]
        d1 = x[n, c, r0 + 1, j]
        d2 = x[n, c, r0 + 2, j]
        d3 = x[n, c, r0 + 3, j]
        d4 = x[n, c, r0 + 4, j]
        d5 = x[n, c, r0 + 5, j]
        V[s, c, k, 0, j] = 4 * d0 - 5 * d2 + d4
        V[s, c, k, 1, j] = d3 + d4 - 4 * (d1 + d2)
        V[s, c, k, 2, j] = 4 * (d1 - d2) + d4 - d3
        V[s, c, k, 3, j] = 2 * (d3 - d1) + d4 - d2
        V[s, c, k, 4, j] = 2 * (d1 - d3) + d4 - d2
        V[s, c, k, 5, j] = 4 * d1 - 5 * d3 + d5


@njit(fastmath=FM_FMA, cache=True)
def transform_band(x, n, i0, ng, V):
    """The input transform for a band of ng (1 or 2) groups of 4 output rows from row i0:
    V[s, c, k] for s < ng, every channel c and kernel-row group k.

    V (2, C, K/3, 6, Wd + VL) comes zeroed from its kernel: a pass reads up to VL - 1
    columns past Wd, and this transform writes columns < Wd only, so that padding stays 0."""
    Wd = x.shape[3]
    for s in range(ng):
        for c in range(V.shape[1]):
            for k in range(V.shape[2]):
                _input_transform(x, n, i0 + 4 * s + 3 * k, V, s, c, k, Wd)


@njit(fastmath=FM_FMA, cache=True)
def band_products(acc, V, Up, kt, blk, j0, jv, ng):
    """M for one filter block and columns j0 .. j0 + jv - 1 of a band (jv a multiple of VL):

    acc[(a*2*FB + s*FB + f)*ACC_ROW + j] = sum_{c, k, q} Up[blk, c, k, a, f*K + q] V[s, c, k, a, j0 + j + q]

    for a < 6, s < ng, f < FB: 6 x C x K/3 row passes (:func:`tiles.tile_pass`), the two
    groups of a band sharing each one. K = len(kt), a compile-time constant (tiles.taps)."""
    K = len(kt)
    for r in range(6 * 2 * FB):
        for j in range(jv):
            acc[r * ACC_ROW + j] = 0.0
    for c in range(V.shape[1]):
        for k in range(V.shape[2]):
            for a in range(6):
                w = Up[blk, c, k, a]
                o = a * 2 * FB * ACC_ROW
                if ng == 2:
                    tile_pass(acc, o, V[0, c, k, a, j0:], V[1, c, k, a, j0:], w, K, FB, True, jv)
                else:
                    tile_pass(acc, o, V[0, c, k, a, j0:], V[0, c, k, a, j0:], w, K, FB, False, jv)


@njit(fastmath=FM_FMA, cache=True, inline="always")
def output_rows(acc, s, f, bias, jn, y):
    """The output transform z = b + AT M of group s and filter f of a band's products
    (:func:`band_products`): y[rho*ACC_ROW + j] = z of the group's output row rho < 4, j < jn."""
    a0 = (s * FB + f) * ACC_ROW            # row a of M is a * da further
    da = 2 * FB * ACC_ROW
    for j in range(jn):
        m0 = acc[a0 + j]
        m1 = acc[a0 + da + j]
        m2 = acc[a0 + 2 * da + j]
        m3 = acc[a0 + 3 * da + j]
        m4 = acc[a0 + 4 * da + j]
        m5 = acc[a0 + 5 * da + j]
        y[j] = bias + (m0 + m1 + m2 + m3 + m4)
        y[ACC_ROW + j] = bias + ((m1 - m2) + 2 * (m3 - m4))
        y[2 * ACC_ROW + j] = bias + ((m1 + m2) + 4 * (m3 + m4))
        y[3 * ACC_ROW + j] = bias + ((m1 - m2) + 8 * (m3 - m4) + m5)


@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _wino_max_kernel(x, Up, bp, F, kt, jt):
    """The maximum of z over the whole groups of 4 output rows (rows 4*(Ho//4) and up
    are not looked at) and its first position, per (patch, filter): zmax (N, F),
    argmax (N, F) int64. One parallel task per patch; inside, bands of two groups (8
    rows) share each pass (as the two rows of f4r2 do)."""
    K = len(kt)
    N, C, H, Wd = x.shape
    nfb = Up.shape[0]
    Ho, Wo = H - K + 1, Wd - K + 1
    nt = Ho // 4                    # whole groups of 4 output rows
    zmax = np.full((N, F), -np.inf, dtype=x.dtype)
    argmax = np.zeros((N, F), dtype=np.int64)
    for n in prange(N):
        V = np.zeros((2, C, K // 3, 6, Wd + VL), dtype=x.dtype)    # zero padding: see transform_band
        acc = np.empty(6 * 2 * FB * ACC_ROW, dtype=x.dtype)
        y = np.empty(4 * ACC_ROW, dtype=x.dtype)
        best, where = zmax[n], argmax[n]
        for i0 in range(0, 4 * nt, 8):
            ng = min(2, nt - i0 // 4)
            transform_band(x, n, i0, ng, V)
            for blk in range(nfb):
                f0 = blk * FB
                nf = min(FB, F - f0)
                for j0 in range(0, Wo, jt):
                    jn = min(jt, Wo - j0)
                    band_products(acc, V, Up, kt, blk, j0, (jn + VL - 1) // VL * VL, ng)
                    # output transform, then each row folded into the running maxima
                    for s in range(ng):
                        for f in range(nf):
                            output_rows(acc, s, f, bp[f0 + f], jn, y)
                            for rho in range(4):
                                fold_row_max(y, rho * ACC_ROW, jn, (i0 + 4 * s + rho) * Wo + j0,
                                             best, where, f0 + f, 1)
    return zmax, argmax


@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _wino_dense_kernel(x, Up, bp, kt, jt, relu, out):
    """z (and its ReLU when relu) of the whole groups of 4 output rows into out (N, F, Ho, Wo)
    (rows 4*(Ho//4) and up are left alone). One parallel task per (patch, band of 8 rows)."""
    K = len(kt)
    N, C, H, Wd = x.shape
    F = out.shape[1]
    nfb = Up.shape[0]
    Ho, Wo = H - K + 1, Wd - K + 1
    nt = Ho // 4
    nb = (nt + 1) // 2              # bands of two groups per patch
    zero = np.zeros(1, dtype=x.dtype)[0]     # a 0 of x's dtype (0.0 would be float64)
    for t in prange(N * nb):
        n, i0 = t // nb, (t % nb) * 8
        ng = min(2, nt - i0 // 4)
        V = np.zeros((2, C, K // 3, 6, Wd + VL), dtype=x.dtype)    # zero padding: see transform_band
        acc = np.empty(6 * 2 * FB * ACC_ROW, dtype=x.dtype)
        y = np.empty(4 * ACC_ROW, dtype=x.dtype)
        transform_band(x, n, i0, ng, V)
        for blk in range(nfb):
            f0 = blk * FB
            nf = min(FB, F - f0)
            for j0 in range(0, Wo, jt):
                jn = min(jt, Wo - j0)
                band_products(acc, V, Up, kt, blk, j0, (jn + VL - 1) // VL * VL, ng)
                for s in range(ng):
                    for f in range(nf):
                        output_rows(acc, s, f, bp[f0 + f], jn, y)
                        for rho in range(4):
                            row = out[n, f0 + f, i0 + 4 * s + rho]
                            if relu:
                                for j in range(jn):
                                    row[j0 + j] = max(y[rho * ACC_ROW + j], zero)
                            else:
                                for j in range(jn):
                                    row[j0 + j] = y[rho * ACC_ROW + j]


def conv_max(x, W, b, direct_conv_max):
    """Winograd version of ``cpu._conv_max``: x (N, C, H, W) contiguous, W, b of x's dtype
    -> zmax (N, F), argmax (N, F). ``direct_conv_max(xs)`` runs the direct kernel on a
    row slice (for the Ho % 4 rows past the last group of 4)."""
    F, C, K, _ = W.shape
    N, _, H, Wd = x.shape
    Ho, Wo = H - K + 1, Wd - K + 1
    nt = Ho // 4
    if nt == 0 or not usable(K):
        return direct_conv_max(x)
    zmax, argmax = _wino_max_kernel(x, pack_weights(W, x.dtype), pack_bias(b, F, x.dtype, FB), F,
                                    taps(K), tile_width(Wo))
    if Ho % 4:
        rest_max, rest_arg = direct_conv_max(np.ascontiguousarray(x[:, :, 4 * nt:]))
        later = rest_max > zmax                                       # ties: the earlier rows win
        zmax = np.where(later, rest_max, zmax)
        argmax = np.where(later, rest_arg + 4 * nt * Wo, argmax)
    return zmax, argmax


def conv_dense(x, W, b, relu, direct_forward):
    """Winograd version of ``cpu.conv2d_forward``: x (N, C, H, W) contiguous, W, b of x's
    dtype -> out (N, F, Ho, Wo) (with its ReLU when relu). ``direct_forward(xs)`` runs the
    direct kernel on a row slice (for the Ho % 4 rows past the last group of 4)."""
    F, C, K, _ = W.shape
    N, _, H, Wd = x.shape
    Ho, Wo = H - K + 1, Wd - K + 1
    nt = Ho // 4
    if nt == 0 or not usable(K):
        return direct_forward(x)
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    _wino_dense_kernel(x, pack_weights(W, x.dtype), pack_bias(b, F, x.dtype, FB), taps(K), tile_width(Wo),
                       bool(relu), out)
    if Ho % 4:
        out[:, :, 4 * nt:] = direct_forward(np.ascontiguousarray(x[:, :, 4 * nt:]))
    return out
