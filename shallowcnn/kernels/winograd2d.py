"""conv2's fused forward with a third of the multiply-adds: Winograd's F(3 x 3, 3 x 3) in 2-D.

:mod:`shallowcnn.kernels.winograd` runs Winograd's minimal filtering down the columns only
(half the multiply-adds of a direct 9 x 9 convolution). Here it runs in both directions, on
tiles of 3 x 3 outputs, and the tile size is chosen to match the kernel: split the K x K
kernel (K = 3 KG; KG = 3 for the network's 9 x 9) into KG x KG blocks of 3 x 3 and write
every output position as i = 3 ti + rho, j = 3 tj + sigma (rho, sigma < 3):

    z[f, 3ti + rho, 3tj + sigma] = b[f] + sum_{c, k1, k2} (3 x 3 correlation of the block
                                   W[f, c, 3k1 : 3k1 + 3, 3k2 : 3k2 + 3] with the 5 x 5
                                   input tile d[c, ti + k1, tj + k2] at (rho, sigma))

    d[c, I, J][u, v] = x[c, 3I + u, 3J + v]           (u, v < 5: a grid of tiles, stride 3)

F(3 x 3, 3 x 3) (Lavin & Gray 2016, with the points 0, 1, -1, 2 and infinity) computes such
a 3 x 3 correlation as AT [(G w G^T) * (BT d BT^T)] A, an element-wise product of 5 x 5
transformed arrays. Because the tiles step by 3, the same as the kernel's blocks, the tile
that block (k1, k2) of output tile (ti, tj) needs is the grid's tile (ti + k1, tj + k2):
each input tile is transformed ONCE and serves KG x KG output tiles. So

    V[ab, c, I, J]     = (BT d[c, I, J] BT^T)[a, b]                 (input transform)
    U[ab, f, c, k1, k2] = (G W[f, c, 3k1.., 3k2..] G^T)[a, b]       (weights, once per call)
    M[ab, f, ti, tj]   = sum_{c, k1, k2} U[ab, f, c, k1, k2] V[ab, c, ti + k1, tj + k2]
    z[f, 3ti.., 3tj..] = b[f] + AT M[:, f, ti, tj] A               (output transform)

and for each of the 25 points ab the middle line is an ordinary KG x KG convolution with
stride 1 on the grid of tiles: C channels in, F filters out. Per 9 outputs and input channel
that is 25 x 9 multiply-adds instead of 9 x 81: a third (3.24x fewer), against a half for
the 1-D variant; the transforms cost a few percent, since each is shared.

How the grid convolution is computed: a *pass* (:func:`grid_pass`) adds one channel of one
point ab to FB = 4 filters' sums, over a band of whole grid rows laid end to end (row
stride Jp = the grid's width): the vector loop runs along that flattened band, and the
KG x KG taps are the band shifted by k1 rows and k2 columns. Positions past the last
tile of a row (tj >= ntj) compute sums that are never used, as the padded columns of
:mod:`shallowcnn.kernels.tiles` do; this keeps every pass long, even on a 60 x 60 patch
(15 x 17 = 255 positions, 16 vectors) where a row alone holds one vector.

The input transform is separable: along each input row first (BT on 5 columns, for every
tile column J: the row's columns are first split by their remainder mod 3, so that
x[3J + v] is a plain vector load), then down the columns of the grid (BT on 5 rows).
Rows and columns past the input are zeros; the outputs they feed are never looked at.

Rounding: the transforms hold 1/2, 1/6, 2 and 4, so float32 sums come out rounded
differently from the direct kernel's (on conv2's shapes within a few 1e-6 of the float64
reference, about as close as the 1-D variant). Hence its own variant (``wino2d``), chosen
by the autotuner only where it is faster, tested against the reference with a tolerance
(tests/test_winograd2d.py).
"""
from __future__ import annotations

import threading

import numpy as np
from numba import get_num_threads, njit, prange

from .tiles import FM_FMA, VL, fold_row_max, pack_bias, row_max, taps

# F(3, 3) with the points 0, 1, -1, 2, infinity: y = AT [(G w) * (BT d)] for 5 inputs d, 3 taps w, 3 outputs y.
BT = np.array([[2, -1, -2, 1, 0],
               [0, -2, -1, 1, 0],
               [0, 2, -3, 1, 0],
               [0, -1, 0, 1, 0],
               [0, 2, -1, -2, 1]], dtype=np.float64)
G = np.array([[1 / 2, 0, 0],
              [-1 / 2, -1 / 2, -1 / 2],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 6, 1 / 3, 2 / 3],
              [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 1, 0],
               [0, 1, -1, 2, 0],
               [0, 1, 1, 4, 1]], dtype=np.float64)
NPT = 25        # transform points ab (5 x 5)
FB = 4          # filters per pass (their sums for two sets of positions: 8 chains of FMAs)
MAXP = 512      # grid positions per band (a multiple of VL): the sums of a band fit in the L2 cache
# Distance between two rows of sums: MAXP plus one vector. At exactly 512 float32 the sums of
# filters f and f + 2 would lie 4 KB apart, and a load of one would wait on the store of the
# other ("4K aliasing": tiles.ACC_ROW explains).
ROW = MAXP + VL


def grid_width(Wo, K) -> int:
    """Jp, the grid's row stride: the tile columns of the output, ceil(Wo / 3), and the
    KG - 1 more that the last tiles' blocks reach."""
    return -(-Wo // 3) + K // 3 - 1


def usable(K, Wo) -> bool:
    """K must be 1 to 3 whole 3 x 3 blocks (:func:`grid_pass` has views for 3), and one grid
    row must fit in a band."""
    return K in (3, 6, 9) and grid_width(Wo, K) <= MAXP


def pack_weights(W, dtype):
    """W (F, C, K, K) -> Up (nfb, 25, C, FB*KG*KG), Up[blk, a*5 + b, c, (f*KG + k1)*KG + k2]
    = (G W[blk*FB + f, c, 3k1 : 3k1 + 3, 3k2 : 3k2 + 3] G^T)[a, b], computed in float64;
    filters zero-padded to a multiple of FB."""
    F, C, K, _ = W.shape
    KG = K // 3
    nfb = -(-F // FB)
    Wb = np.zeros((nfb * FB, C, KG, KG, 3, 3))
    Wb[:F] = np.asarray(W, dtype=np.float64).reshape(F, C, KG, 3, KG, 3).transpose(0, 1, 2, 4, 3, 5)
    U = Wb.reshape(-1, 9) @ np.kron(G, G).T          # G w G^T of every 3 x 3 block, as one product
    Up = U.reshape(nfb, FB, C, KG, KG, NPT).transpose(0, 5, 2, 1, 3, 4)   # (nfb, 25, C, FB, KG, KG)
    return np.ascontiguousarray(Up.reshape(nfb, NPT, C, FB * KG * KG).astype(dtype))


@njit(fastmath=FM_FMA, cache=True, inline="always")
def grid_pass(acc, a, v0, v1, v2, u0, u1, u2, w, KG, mh):
    """One channel of one point ab into the sums of FB = 4 filters, at 2 mh positions of a band:

        acc[a + f*ROW + P]        += sum_{k1, k2 < KG} w[(f*KG + k1)*KG + k2] * v_k1[P + k2]
        acc[a + (FB + f)*ROW + P] += sum_{k1, k2 < KG} w[(f*KG + k1)*KG + k2] * u_k1[P + k2]

    for f < FB, P < mh (a multiple of VL): v_k1 is the band's plane from grid row k1 on, u_k1
    the same from position mh on (the second half of the band; KG <= 3, the unused views
    are never read). One column of the loop carries 8 running sums, scalars in registers for
    all KG*KG taps: enough independent FMA chains to keep two FMA units busy (as the two
    rows of tiles.tile_pass's f4r2), and each plane value loaded feeds 4 FMAs. KG = len(kt)
    is a compile-time constant, so the taps unroll and the ``if`` tests vanish.

    Why views, and why the second half's sums in rows FB.. 2FB - 1 rather than at mh + P?
    LLVM vectorises the loop only if it can rule out that a store hits a load, with at
    most 8 run-time tests of address ranges. Sums at constant distances form one range;
    indices with an offset not known to be >= 0 would also cost Numba a wrap-around test
    per element."""
    T = KG * KG
    for P in range(mh):
        s0 = acc[a + P]
        s1 = acc[a + 1 * ROW + P]
        s2 = acc[a + 2 * ROW + P]
        s3 = acc[a + 3 * ROW + P]
        t0 = acc[a + 4 * ROW + P]
        t1 = acc[a + 5 * ROW + P]
        t2 = acc[a + 6 * ROW + P]
        t3 = acc[a + 7 * ROW + P]
        for k2 in range(KG):
            o = k2
            e = v0[P + k2]
            s0 += w[o] * e
            s1 += w[1 * T + o] * e
            s2 += w[2 * T + o] * e
            s3 += w[3 * T + o] * e
            e = u0[P + k2]
            t0 += w[o] * e
            t1 += w[1 * T + o] * e
            t2 += w[2 * T + o] * e
            t3 += w[3 * T + o] * e
            if KG > 1:
                o = 1 * KG + k2
                e = v1[P + k2]
                s0 += w[o] * e
                s1 += w[1 * T + o] * e
                s2 += w[2 * T + o] * e
                s3 += w[3 * T + o] * e
                e = u1[P + k2]
                t0 += w[o] * e
                t1 += w[1 * T + o] * e
                t2 += w[2 * T + o] * e
                t3 += w[3 * T + o] * e
            if KG > 2:
                o = 2 * KG + k2
                e = v2[P + k2]
                s0 += w[o] * e
                s1 += w[1 * T + o] * e
                s2 += w[2 * T + o] * e
                s3 += w[3 * T + o] * e
                e = u2[P + k2]
                t0 += w[o] * e
                t1 += w[1 * T + o] * e
                t2 += w[2 * T + o] * e
                t3 += w[3 * T + o] * e
        acc[a + P] = s0
        acc[a + 1 * ROW + P] = s1
        acc[a + 2 * ROW + P] = s2
        acc[a + 3 * ROW + P] = s3
        acc[a + 4 * ROW + P] = t0
        acc[a + 5 * ROW + P] = t1
        acc[a + 6 * ROW + P] = t2
        acc[a + 7 * ROW + P] = t3


@njit(fastmath=FM_FMA, cache=True, inline="always")
def _bt_row(d0, d1, d2, d3, d4, k):
    """Row k of BT d for 5 inputs: the transform of one point (doublings written as sums:
    in Numba an integer times a float32 is a float64)."""
    if k == 0:
        return (d0 - d2) + (d0 - d2) + d3 - d1
    if k == 1:
        return d3 - d2 - d1 - d1
    if k == 2:
        return (d1 - d2) + (d1 - d2) - d2 + d3
    if k == 3:
        return d3 - d1
    return (d1 - d3) + (d1 - d3) - d2 + d4


@njit(fastmath=FM_FMA, cache=True)
def row_transforms(x, n, r0, nrows, xs, T):
    """The transform along the input rows r0 .. r0 + nrows - 1 of patch n (zeros past x):

    T[c, r, b, J] = sum_{v < 5} BT[b, v] x[n, c, r0 + r, 3J + v]      for J < JW = T.shape[3]

    (JW: the grid's width Jp rounded up to whole vectors, so that no loop ends in scalar
    code). xs (3, JW + 1) is scratch: the row split by column remainder, xs[u, J] =
    x[.., 3J + u], so that x[3J + v] is a plain vector load. Each loop writes one array
    row (see :func:`grid_pass` on what lets LLVM vectorise)."""
    C, H, Wd = x.shape[1], x.shape[2], x.shape[3]
    JW = T.shape[3]
    for c in range(C):
        for r in range(nrows):
            row = r0 + r
            if row >= H:
                T[c, r] = 0.0
                continue
            for u in range(3):
                xu = xs[u]
                nfull = min(JW + 1, (Wd - u + 2) // 3)        # J with 3J + u < Wd
                for J in range(nfull):
                    xu[J] = x[n, c, row, 3 * J + u]
                xu[nfull:] = 0.0
            x0, x1, x2 = xs[0], xs[1], xs[2]
            for b in range(5):
                out = T[c, r, b]
                for J in range(JW):
                    out[J] = _bt_row(x0[J], x1[J], x2[J], x0[J + 1], x1[J + 1], b)


@njit(fastmath=FM_FMA, cache=True)
def column_transforms(T, ng, Jp, V):
    """The transform down the grid: V[a*5 + b, c, I*Jp + J] = sum_{u < 5} BT[a, u] T[c, 3I + u, b, J]
    for grid rows I < ng of the band and J < Jp. The loops run over whole vectors, J < JW:
    what a row writes past Jp, the next row overwrites (rows go in order), and the last
    row's lands in the plane's padding."""
    JW = T.shape[3]
    for c in range(T.shape[0]):
        for a in range(5):
            for b in range(5):
                plane = V[a * 5 + b, c]
                for I in range(ng):
                    out = plane[I * Jp:]
                    t0, t1, t2, t3, t4 = T[c, 3 * I, b], T[c, 3 * I + 1, b], T[c, 3 * I + 2, b], \
                        T[c, 3 * I + 3, b], T[c, 3 * I + 4, b]
                    for J in range(JW):
                        out[J] = _bt_row(t0[J], t1[J], t2[J], t3[J], t4[J], a)


@njit(fastmath=FM_FMA, cache=True, inline="always")
def _at(m0, m1, m2, m3, m4):
    """AT m for 5 transformed values: the 3 outputs."""
    return m0 + m1 + m2 + m3, m1 - m2 + (m3 + m3), m1 + m2 + (m3 + m3) + (m3 + m3) + m4


@njit(fastmath=FM_FMA, cache=True, inline="always")
def _columns(mf, a, tj):
    """AT along b for row a of one tile's M (mf as in :func:`output_tiles`)."""
    S = 2 * FB * ROW
    return _at(mf[5 * a * S + tj], mf[(5 * a + 1) * S + tj], mf[(5 * a + 2) * S + tj],
               mf[(5 * a + 3) * S + tj], mf[(5 * a + 4) * S + tj])


@njit(fastmath=FM_FMA, cache=True, inline="always")
def output_tiles(mf, bias, n, y, ymax):
    """z = b + AT M A for the tiles tj < n (whole vectors) of one grid row of one filter,
    M[a*5 + b] at mf[(a*5 + b)*2*FB*ROW + tj] (a view of a band's sums):

    y[(rho*3 + sigma)*ROW + tj] = z[3ti + rho, 3tj + sigma],  ymax[tj] = max of the tile's 9.

    AT is applied along b (each tile's columns), then along a."""
    for tj in range(n):
        c00, c01, c02 = _columns(mf, 0, tj)
        c10, c11, c12 = _columns(mf, 1, tj)
        c20, c21, c22 = _columns(mf, 2, tj)
        c30, c31, c32 = _columns(mf, 3, tj)
        c40, c41, c42 = _columns(mf, 4, tj)
        z00, z10, z20 = _at(c00, c10, c20, c30, c40)
        z01, z11, z21 = _at(c01, c11, c21, c31, c41)
        z02, z12, z22 = _at(c02, c12, c22, c32, c42)
        y[tj] = z00 + bias
        y[ROW + tj] = z01 + bias
        y[2 * ROW + tj] = z02 + bias
        y[3 * ROW + tj] = z10 + bias
        y[4 * ROW + tj] = z11 + bias
        y[5 * ROW + tj] = z12 + bias
        y[6 * ROW + tj] = z20 + bias
        y[7 * ROW + tj] = z21 + bias
        y[8 * ROW + tj] = z22 + bias
        ymax[tj] = bias + max(max(max(z00, z01), max(z02, z10)), max(max(z11, z12), max(max(z20, z21), z22)))


@njit(fastmath=FM_FMA, cache=True, inline="always")
def output_rows(mf, bias, n, yrow):
    """As :func:`output_tiles`, but the 3 output rows of the grid row in their natural order:
    yrow[rho*3*ROW + 3tj + sigma] = z[3ti + rho, 3tj + sigma] for tj < n (the three values of
    a tile row are stored side by side, which LLVM vectorises as an interleaved store)."""
    R3 = 3 * ROW
    for tj in range(n):
        c00, c01, c02 = _columns(mf, 0, tj)
        c10, c11, c12 = _columns(mf, 1, tj)
        c20, c21, c22 = _columns(mf, 2, tj)
        c30, c31, c32 = _columns(mf, 3, tj)
        c40, c41, c42 = _columns(mf, 4, tj)
        z00, z10, z20 = _at(c00, c10, c20, c30, c40)
        z01, z11, z21 = _at(c01, c11, c21, c31, c41)
        z02, z12, z22 = _at(c02, c12, c22, c32, c42)
        j = 3 * tj
        yrow[j] = z00 + bias
        yrow[j + 1] = z01 + bias
        yrow[j + 2] = z02 + bias
        yrow[R3 + j] = z10 + bias
        yrow[R3 + j + 1] = z11 + bias
        yrow[R3 + j + 2] = z12 + bias
        yrow[2 * R3 + j] = z20 + bias
        yrow[2 * R3 + j + 1] = z21 + bias
        yrow[2 * R3 + j + 2] = z22 + bias


@njit(fastmath=FM_FMA, cache=True)
def band_sums(x, n, t0, rn, Up, blk, kt, Jp, xs, T, V, acc, new_band):
    """The sums M of filter block blk for the band of grid rows t0 .. t0 + rn - 1 of patch n,
    into acc (25 points ab, each 2 FB rows of ROW: the first half's rows, then the second's);
    with new_band, the band's transforms into T and V first. Returns rh, the grid rows of the
    first half (grid row r < rh is at position r*Jp of rows f, the rest at (r - rh)*Jp of rows
    FB + f). KG = len(kt), a compile-time constant for :func:`grid_pass`."""
    KG = len(kt)
    C = x.shape[1]
    ng = rn + KG - 1
    if new_band:
        row_transforms(x, n, 3 * t0, 3 * ng + 2, xs, T)
        column_transforms(T, ng, Jp, V)
    rh = (rn + 1) // 2
    mh = max(rh, rn - rh) * Jp
    mh = (mh + VL - 1) // VL * VL         # positions per half, in whole vectors
    S = 2 * FB * ROW
    for ab in range(NPT):
        a = ab * S
        for row in range(2 * FB):
            acc[a + row * ROW:a + row * ROW + mh] = 0.0
        for c in range(C):
            v = V[ab, c]
            v1 = v[Jp:]
            v2 = v[min(2, KG - 1) * Jp:]
            h = rh * Jp
            grid_pass(acc, a, v, v1, v2, v[h:], v1[h:], v2[h:], Up[blk, ab, c], KG, mh)
    return rh


@njit(cache=True, inline="always")
def _layout(Wd, KG):
    """The grid of a Wd-column input: (Jp, its row stride; JW, a grid row in whole vectors; ntv,
    the tile columns in whole vectors; R, grid rows per band; ngmax, grid rows of input tiles
    a band needs; length, what the passes read of a plane, the second half overrunning)."""
    ntj = -(-(Wd - 3 * KG + 1) // 3)
    Jp = ntj + KG - 1
    R = MAXP // Jp
    ngmax = R + KG - 1
    return Jp, (Jp + VL - 1) // VL * VL, (ntj + VL - 1) // VL * VL, R, ngmax, (ngmax + 1) * Jp + 2 * VL + KG


@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _wino2d_max_kernel(x, Up, bp, F, kt, xs, T, V, acc, y):
    """The maximum of z over every output position and its first position (flat i * Wo + j),
    per (patch, filter): zmax (N, F), argmax (N, F) int64. The scratch arrays (:func:`_scratch`)
    have one slice per parallel task; task w takes every nw-th patch. A patch's grid rows go
    in bands of R = MAXP // Jp rows, each band in two halves of whole grid rows (the first rh
    rows, then the rest) that :func:`grid_pass` does side by side."""
    N = x.shape[0]
    Jp, _, ntv, R, _, _ = _layout(x.shape[3], len(kt))
    nw = acc.shape[0]
    zmax = np.full((N, F), -np.inf, dtype=x.dtype)
    argmax = np.zeros((N, F), dtype=np.int64)
    for w in prange(nw):
        for n in range(w, N, nw):
            _patch_max(x, n, Up, bp, kt, F, Jp, R, ntv, xs[w], T[w], V[w], acc[w], y[w, :9 * ROW],
                       y[w, 9 * ROW:], zmax[n], argmax[n])
    return zmax, argmax


@njit(fastmath=FM_FMA, cache=True)
def _patch_max(x, n, Up, bp, kt, F, Jp, R, ntv, xs, T, V, acc, y, ymax, best, where):
    """The maxima and their positions of patch n into best (F,) and where (F,)."""
    K = 3 * len(kt)
    nfb = Up.shape[0]
    Ho, Wo = x.shape[2] - K + 1, x.shape[3] - K + 1
    nti = -(-Ho // 3)
    for t0 in range(0, nti, R):
        rn = min(R, nti - t0)             # tile rows of this band
        for blk in range(nfb):
            f0 = blk * FB
            nf = min(FB, F - f0)
            rh = band_sums(x, n, t0, rn, Up, blk, kt, Jp, xs, T, V, acc, blk == 0)
            for f in range(nf):
                k = f0 + f
                for r in range(rn):
                    half, rr = (0, r) if r < rh else (FB, r - rh)
                    output_tiles(acc[(half + f) * ROW + rr * Jp:], bp[k], ntv, y, ymax)
                    # tiles past the output (and past the last tile) only raise this bound
                    if row_max(ymax, 0, ntv) < best[k]:
                        continue
                    for rho in range(3):
                        i = 3 * (t0 + r) + rho
                        if i >= Ho:
                            break
                        for sig in range(min(3, Wo)):      # output columns 3tj + sig < Wo
                            fold_row_max(y, (rho * 3 + sig) * ROW, (Wo - sig + 2) // 3, i * Wo + sig,
                                         best, where, k, 3)


@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _wino2d_dense_kernel(x, Up, bp, kt, relu, out, xs, T, V, acc, y):
    """z (and its ReLU when relu) into out (N, F, Ho, Wo); tasks and bands as in
    :func:`_wino2d_max_kernel`."""
    N = x.shape[0]
    Jp, _, ntv, R, _, _ = _layout(x.shape[3], len(kt))
    nw = acc.shape[0]
    for w in prange(nw):
        for n in range(w, N, nw):
            _patch_dense(x, n, Up, bp, kt, Jp, R, ntv, relu, xs[w], T[w], V[w], acc[w], y[w], out[n])


@njit(fastmath=FM_FMA, cache=True)
def _patch_dense(x, n, Up, bp, kt, Jp, R, ntv, relu, xs, T, V, acc, yrow, out):
    """z of patch n (and its ReLU when relu) into out (F, Ho, Wo)."""
    F, Ho, Wo = out.shape
    nti = -(-Ho // 3)
    zero = np.zeros(1, dtype=x.dtype)[0]     # a 0 of x's dtype (0.0 would be float64)
    for t0 in range(0, nti, R):
        rn = min(R, nti - t0)
        for blk in range(Up.shape[0]):
            f0 = blk * FB
            rh = band_sums(x, n, t0, rn, Up, blk, kt, Jp, xs, T, V, acc, blk == 0)
            for f in range(min(FB, F - f0)):
                for r in range(rn):
                    half, rr = (0, r) if r < rh else (FB, r - rh)
                    output_rows(acc[(half + f) * ROW + rr * Jp:], bp[f0 + f], ntv, yrow)
                    for rho in range(min(3, Ho - 3 * (t0 + r))):
                        dst = out[f0 + f, 3 * (t0 + r) + rho]
                        src = yrow[rho * 3 * ROW:]
                        if relu:
                            for j in range(Wo):
                                dst[j] = max(src[j], zero)
                        else:
                            for j in range(Wo):
                                dst[j] = src[j]


_SCRATCH = threading.local()       # per Python thread: the kernels' work arrays, by shape


def _scratch(x, C, KG):
    """The kernels' work arrays for input x, one slice per parallel task (one task per
    thread, at most one per patch): (xs, T, V, acc, y). Kept between calls (per Python thread,
    for the last few shapes): allocated afresh, V and the sums (about 1 MB a task for conv2)
    would come from new pages of the OS at every call, page faults included, which cost as
    much as the arithmetic of a small batch. They start as zeros and only ever hold finite
    values, which is all that the values read past a band need."""
    nw = max(1, min(x.shape[0], get_num_threads()))
    _, JW, _, _, ngmax, length = _layout.py_func(x.shape[3], KG)
    key = (nw, C, JW, ngmax, length, x.dtype.str)
    cache = getattr(_SCRATCH, "arrays", None)
    if cache is None:
        cache = _SCRATCH.arrays = {}
    if key not in cache:
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[key] = (np.zeros((nw, 3, JW + 1), x.dtype), np.zeros((nw, C, 3 * ngmax + 2, 5, JW), x.dtype),
                      np.zeros((nw, NPT, C, length), x.dtype), np.zeros((nw, NPT * 2 * FB * ROW), x.dtype),
                      np.zeros((nw, 10 * ROW), x.dtype))
    return cache[key]


def conv_max(x, W, b):
    """The Winograd F(3 x 3, 3 x 3) version of ``cpu._conv_max``: x (N, C, H, W) contiguous,
    W, b of x's dtype -> zmax (N, F), argmax (N, F). Needs :func:`usable`."""
    F, C, K, _ = W.shape
    return _wino2d_max_kernel(x, pack_weights(W, x.dtype), pack_bias(b, F, x.dtype, FB), F, taps(K // 3),
                              *_scratch(x, C, K // 3))


def conv_dense(x, W, b, relu):
    """The Winograd F(3 x 3, 3 x 3) version of ``cpu.conv2d_forward``: x (N, C, H, W) contiguous,
    W, b of x's dtype -> out (N, F, Ho, Wo) (its ReLU when relu). Needs :func:`usable`."""
    F, C, K, _ = W.shape
    N, _, H, Wd = x.shape
    out = np.empty((N, F, H - K + 1, Wd - K + 1), dtype=x.dtype)
    _wino2d_dense_kernel(x, pack_weights(W, x.dtype), pack_bias(b, F, x.dtype, FB), taps(K // 3), bool(relu), out,
                         *_scratch(x, C, K // 3))
    return out


@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _wino2d_stack_kernel(x, Up1, bp1, kt1, Up2, bp2, F2, kt2, h1,
                         xs1, T1, V1, acc1, y1, xs2, T2, V2, acc2, y2):
    """conv1 + ReLU into h1 (N, F1, Ho1, Wo1) and then conv2's maxima and their positions,
    one patch at a time: zmax (N, F2), argmax (N, F2) int64. Scratch arrays as
    :func:`_scratch` makes them, conv1's (xs1 ..) and conv2's (xs2 ..)."""
    N = x.shape[0]
    Jp1, _, ntv1, R1, _, _ = _layout(x.shape[3], len(kt1))
    Jp2, _, ntv2, R2, _, _ = _layout(h1.shape[3], len(kt2))
    nw = acc2.shape[0]
    zmax = np.full((N, F2), -np.inf, dtype=x.dtype)
    argmax = np.zeros((N, F2), dtype=np.int64)
    for w in prange(nw):
        for n in range(w, N, nw):
            _patch_dense(x, n, Up1, bp1, kt1, Jp1, R1, ntv1, True, xs1[w], T1[w], V1[w], acc1[w], y1[w], h1[n])
            _patch_max(h1, n, Up2, bp2, kt2, F2, Jp2, R2, ntv2, xs2[w], T2[w], V2[w], acc2[w],
                       y2[w, :9 * ROW], y2[w, 9 * ROW:], zmax[n], argmax[n])
    return zmax, argmax


def stack_max(x, W1, b1, W2, b2):
    """conv1 (+ ReLU) and conv2's fused maximum, both in F(3 x 3, 3 x 3), a patch at a time
    in one parallel loop: x (N, C, H, W) contiguous, weights of x's dtype ->
    h1 (N, F1, Ho1, Wo1), zmax (N, F2), argmax (N, F2). Needs :func:`usable` for both."""
    F1, C, K1, _ = W1.shape
    F2, _, K2, _ = W2.shape
    N, _, H, Wd = x.shape
    h1 = np.empty((N, F1, H - K1 + 1, Wd - K1 + 1), dtype=x.dtype)
    zmax, argmax = _wino2d_stack_kernel(
        x, pack_weights(W1, x.dtype), pack_bias(b1, F1, x.dtype, FB), taps(K1 // 3),
        pack_weights(W2, x.dtype), pack_bias(b2, F2, x.dtype, FB), F2, taps(K2 // 3), h1,
        *_scratch(x, C, K1 // 3), *_scratch(h1, F1, K2 // 3))
    return h1, zmax, argmax
