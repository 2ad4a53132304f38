"""The register-blocked tile that every CPU forward kernel shares, in a few variants.

    z[n, f, i, j] = b[f] + sum_{c, p, q} W[f, c, p, q] x[n, c, i + p, j + q]

:func:`conv_tile` computes one small tile of z -- FB filters x up to RB = 4 output
rows x up to JT = 256 columns -- into a buffer ``acc`` small enough to stay in the L1
cache. The dense forward, the fused max pool (:mod:`shallowcnn.kernels.cpu`) and the
scan's block maxima (:mod:`shallowcnn.kernels.cpu_blockmax`) all call it and then read
``acc`` while it is hot.

For one input row (c, p) a *pass* (:func:`tile_pass`) adds its K taps to the tile:
the loop along the output row j is the innermost loop, which LLVM vectorises (16
float32 lanes with 512-bit vectors, 8 with 256-bit: which of the two, on a CPU with AVX-512,
is measured per machine, see :mod:`shallowcnn.kernels.vector_width`); inside one column the running sums are
scalars, kept in registers for all K taps (K is a compile-time constant, see
:func:`taps`, so LLVM unrolls the taps), and every x value loaded feeds several FMAs.

Why variants?  A fused multiply-add takes about 4 cycles before its result can feed
the next one, and a core starts one or two of them per cycle. Each running sum is a
chain of dependent FMAs, so a core with two FMA units needs about 8 chains in flight
to stay busy, a core with one needs 4. How many chains a pass carries is the variant:

=======  ==================  ======  ================================================
name     filters x rows      chains  per vector of columns
=======  ==================  ======  ================================================
f4r1     FB = 4 x RP = 1     4       one x load feeds 4 FMAs (36 FMAs for K = 9)
f4r2     FB = 4 x RP = 2     8       two output rows at once: their x rows differ,
                                     the 4*K weights are shared (72 FMAs)
f8r1     FB = 8 x RP = 1     8       one x load feeds 8 FMAs (72 FMAs; 72 weights
                                     no longer fit in the 32 vector registers)
=======  ==================  ======  ================================================

Which one is fastest depends on the CPU (and on what LLVM makes of it), so
:mod:`shallowcnn.kernels.autotune` times them on the real shapes and remembers the
winner. FB and RP reach the kernels as tuple *types* (like K, see :func:`taps`):
each variant is its own compiled (and cached) specialisation, with no run-time
branches in the inner loop. (FB = 8 with RP = 2, 16 chains, is not offered: the
sums and weights no longer fit in registers, and it ran many times slower; nor are
4 x 4 and 6 x 2, 16 and 12 chains.) :mod:`shallowcnn.kernels.winograd` runs these same
passes over Winograd-transformed rows, for half the multiply-adds of the fused conv2.

No scalar tail: a vectorised loop over jn columns ends in jn % 16 columns of scalar
code, each as slow as a whole vector. A 60 x 60 patch has 44 conv2 columns: 2 vectors
and 12 scalar columns, most of the time. The passes therefore run over jn rounded up
to VL = 16 columns. The extra columns read real input (the next columns, or the next
row) and their sums are never used; only where that would read past the end of x
(the last rows of the last patch) does a tile keep the scalar tail.

(Editing this file?  Delete Numba's cache files in ``shallowcnn/kernels/__pycache__``
afterwards (``*.nbi``, ``*.nbc``): its on-disk cache of a kernel in cpu.py checks cpu.py
only, not the functions of this file that were compiled into it. Keep the
``shallowcnn-autotune-*.json`` there: it holds this machine's measured choices, the
vector width among them, which only ``shallowcnn tune`` makes again.)
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import vector_width
from .variants import SMALL_F_VARIANTS, TILE_VARIANTS  # noqa: F401  (tiles.X names them too)

# 256- or 512-bit vectors: this must be decided before the process's first @njit below fixes
# Numba's CPU features, and every kernel module imports this one before defining a kernel
# (kernels/vector_width.py explains).
vector_width.apply()

RB = 4       # output rows per tile
JT = 256     # room for this many output columns per tile row (a multiple of VL)
VL = 16      # columns are padded to a multiple of this (float32 lanes of AVX-512)
# Distance between two rows of sums in a tile's buffer acc: JT plus one vector, not JT.
# With rows of 256 float32 (1 KB), the sums of output rows r and r + 1 of one filter,
# FB = 4 rows of acc apart, would lie exactly 4 KB apart. A CPU first compares only
# the low 12 bits of addresses to see whether a load depends on an earlier store
# ("4K aliasing"), so the load of one row's sum stalled behind the store of the
# other's. One vector of padding removes the stall (about 10% on the fused conv2:
# benchmarks/README.md, "Measurements behind the kernels"); the rows stay 64-byte
# aligned relative to each other.
ACC_ROW = JT + VL

# TILE_VARIANTS: name -> (FB filters per block, RP output rows per pass), in variants.py

# 'contract' lets LLVM fuse a*b+c into one FMA instruction without otherwise
# reordering float arithmetic.
FM_FMA = {"contract"}


def taps(K):
    """A tuple of K zeros.  Its Numba *type* is UniTuple(int64, K), so inside a
    kernel ``len(kt)`` is a compile-time constant: the tap loop ``for q in
    range(K)`` gets a fixed trip count that LLVM unrolls.  Numba compiles one
    version per K through its ordinary (fast) type dispatch and caches it on
    disk -- unlike ``numba.literally``, which re-enters the compiler's dispatch
    on every call (costing more than a whole batch-1 conv1).
    The variants' FB and RP travel the same way."""
    return (0,) * int(K)


def variant_args(name):
    """Tile variant name -> (ft, rt), the tuples whose lengths are FB and RP."""
    fb, rp = TILE_VARIANTS[name]
    return taps(fb), taps(rp)


def pack_weights(W, dtype, fb):
    """W (F, C, K, K) -> Wp (nfb, C, K, fb*K) with Wp[b, c, p, f*K + q] = W[b*fb + f, c, p, q].

    Filters are zero-padded to a multiple of fb, so every block has fb filters
    (the padded ones compute zeros that are never stored).  For one input row
    (c, p) the fb*K weights a pass needs are then contiguous.
    """
    F, C, K, _ = W.shape
    nfb = (F + fb - 1) // fb
    Wpad = np.zeros((nfb * fb, C, K, K), dtype=dtype)
    Wpad[:F] = W
    Wp = Wpad.reshape(nfb, fb, C, K, K).transpose(0, 2, 3, 1, 4)   # (nfb, C, K, fb, K)
    return np.ascontiguousarray(Wp.reshape(nfb, C, K, fb * K))


def pack_bias(b, F, dtype, fb):
    """b (F,) -> (nfb*fb,), zero-padded like the filters of :func:`pack_weights`."""
    nfb = (F + fb - 1) // fb
    bp = np.zeros(nfb * fb, dtype=dtype)
    bp[:F] = b
    return bp


def tile_width(Wo):
    """Columns per tile: the whole output row when it fits in JT, else equal
    chunks (a ragged last chunk of a few columns would waste a tile)."""
    nchunks = -(-Wo // JT)
    return -(-Wo // nchunks)


@njit(fastmath=FM_FMA, cache=True, inline="always")
def tile_pass(acc, a, x0, x1, w, K, FB, TWO, jn):
    """One input row into one tile row, or two input rows into two tile rows.

    acc[a + f*ACC_ROW + j]       += sum_q w[f*K + q] * x0[j + q]
    acc[a + (FB+f)*ACC_ROW + j]  += sum_q w[f*K + q] * x1[j + q]   (TWO only)

    for f < FB, j < jn.  x0 and x1 are views of flattened x from the first
    column of each input row on (reads may run into the next row: see the
    padding above).  TWO goes with FB = 4 only (f8r2 is not a variant).  FB (4 or 8) and TWO are
    compile-time constants, so the
    ``if`` tests vanish and the sums s*, t* not used are never computed (they
    copy s0 so that every name has x's dtype).  Within a column the 4 or 8
    sums are independent chains of K FMAs each.
    """
    b = a + FB * ACC_ROW
    for j in range(jn):
        s0 = acc[a + j]
        s1 = acc[a + ACC_ROW + j]
        s2 = acc[a + 2 * ACC_ROW + j]
        s3 = acc[a + 3 * ACC_ROW + j]
        s4 = acc[a + 4 * ACC_ROW + j] if FB > 4 else s0
        s5 = acc[a + 5 * ACC_ROW + j] if FB > 4 else s0
        s6 = acc[a + 6 * ACC_ROW + j] if FB > 4 else s0
        s7 = acc[a + 7 * ACC_ROW + j] if FB > 4 else s0
        t0 = acc[b + j] if TWO else s0
        t1 = acc[b + ACC_ROW + j] if TWO else s0
        t2 = acc[b + 2 * ACC_ROW + j] if TWO else s0
        t3 = acc[b + 3 * ACC_ROW + j] if TWO else s0
        for q in range(K):
            v = x0[j + q]
            s0 += w[q] * v
            s1 += w[K + q] * v
            s2 += w[2 * K + q] * v
            s3 += w[3 * K + q] * v
            if FB > 4:
                s4 += w[4 * K + q] * v
                s5 += w[5 * K + q] * v
                s6 += w[6 * K + q] * v
                s7 += w[7 * K + q] * v
            if TWO:
                u = x1[j + q]
                t0 += w[q] * u
                t1 += w[K + q] * u
                t2 += w[2 * K + q] * u
                t3 += w[3 * K + q] * u
        acc[a + j] = s0
        acc[a + ACC_ROW + j] = s1
        acc[a + 2 * ACC_ROW + j] = s2
        acc[a + 3 * ACC_ROW + j] = s3
        if FB > 4:
            acc[a + 4 * ACC_ROW + j] = s4
            acc[a + 5 * ACC_ROW + j] = s5
            acc[a + 6 * ACC_ROW + j] = s6
            acc[a + 7 * ACC_ROW + j] = s7
        if TWO:
            acc[b + j] = t0
            acc[b + ACC_ROW + j] = t1
            acc[b + 2 * ACC_ROW + j] = t2
            acc[b + 3 * ACC_ROW + j] = t3


@njit(fastmath=FM_FMA, cache=True)
def conv_tile(acc, x, Wp, bp, kt, ft, rt, n, blk, i0, rn, j0, jn):
    """Pre-activations of one tile: FB filters x rn (<= RB) output rows x jn columns.

    acc[(r*FB + f)*ACC_ROW + j] = z[n, blk*FB + f, i0 + r, j0 + j]

    for r < rn, f < FB, j < jn (acc holds RB*FB*ACC_ROW values; columns jn and up
    hold sums that mean nothing).  K = len(kt), FB = len(ft), RP = len(rt) (the
    variant, see the module docstring); Wp, bp packed for this FB.

    Loop order, outside in: channel c, kernel row p (the FB*K weights of input
    row (c, p) are loaded once), tile rows in steps of RP, column j, tap q.
    """
    K = len(kt)
    FB = len(ft)
    RP = len(rt)
    N, C, H, Wd = x.shape
    xf = x.reshape(x.size)
    # Pad the columns to a multiple of VL (no scalar tail) unless the last
    # element read, x[n, C-1, i0+rn-1+K-1, j0+jv-1+K-1], would lie past the end of x.
    jv = (jn + VL - 1) // VL * VL
    if ((n * C + C - 1) * H + i0 + rn + K - 2) * Wd + j0 + jv + K - 2 >= x.size:
        jv = jn
    f0 = blk * FB
    for r in range(rn):
        for f in range(FB):
            a = (r * FB + f) * ACC_ROW
            for j in range(jv):
                acc[a + j] = bp[f0 + f]
    for c in range(C):
        for p in range(K):
            w = Wp[blk, c, p]
            row = ((n * C + c) * H + i0 + p) * Wd + j0      # flat offset of x[n, c, i0 + p, j0]
            r = 0
            if RP == 2:
                while r + 1 < rn:
                    # (x0[j + q] indices provably >= 0: LLVM vectorises; xf[o + j + q]
                    # with an unknown offset o needs a wrap-around test per element)
                    tile_pass(acc, r * FB * ACC_ROW, xf[row + r * Wd:], xf[row + (r + 1) * Wd:], w, K, FB, True, jv)
                    r += 2
            while r < rn:
                tile_pass(acc, r * FB * ACC_ROW, xf[row + r * Wd:], xf[row + r * Wd:], w, K, FB, False, jv)
                r += 1


@njit(fastmath={"nnan", "ninf", "nsz", "reassoc"}, cache=True, inline="always")
def row_max(acc, a, jn):
    """max(acc[a : a + jn]).  The fast-math flags promise no NaN or inf and
    allow reordering, which lets LLVM keep 16 partial maxima in one vector
    instead of a compare-and-branch per element (it was ~8% of the fused
    kernel).  A NaN in the data would make the result unspecified; the
    reference would then pick the NaN."""
    m = acc[a]
    for j in range(1, jn):
        v = acc[a + j]
        m = v if v > m else m
    return m


@njit(cache=True, inline="always")
def fold_row_max(acc, a, jn, idx0, best, where, k, step):
    """Fold one row of a tile, acc[a : a + jn] at flat output positions idx0, idx0 + step,
    ..., idx0 + (jn - 1)*step, into the running maximum best[k] and its position where[k].

    The row's maximum is a vectorised reduction (:func:`row_max`); only when it
    reaches the running best is its first position looked for. Ties go to the
    smaller flat index, as in np.argmax: rows are not always folded in order (a
    later column chunk holds an earlier position than an earlier chunk's next row).
    step is 1 for a row of outputs; the 2-D Winograd tiles (winograd2d.py) hold every
    third output of a row. Used by the fused kernels, direct (cpu.py) and Winograd
    (winograd.py, winograd2d.py).
    """
    m = row_max(acc, a, jn)
    if m >= best[k]:
        j = 0
        while acc[a + j] != m:
            j += 1
        if m > best[k] or idx0 + j * step < where[k]:
            best[k] = m
            where[k] = idx0 + j * step


# ---------------------------------------------------------------------------
# the few-filter tile (conv1: 6 filters x 1 channel), see cpu._small_f_kernel
# ---------------------------------------------------------------------------
# Its variant is the largest group of filters whose sums one pass carries: G
# chains per vector of columns, G*K weights held in registers.
# (SMALL_F_VARIANTS, name -> gmax, is in variants.py)
SEG = JT + 2 * VL         # longest row segment (input columns) of the small-F path
ACC_F = RB * SEG          # distance between two filters' sums in its buffer


def small_f_groups(F, gmax):
    """(ng, G): the few-filter path does F filters as ng groups of G <= gmax
    filters, as even as possible (F = 6, gmax 3 or 4: 2 x 3, no padding; F = 5:
    2 x 3 with one zero filter; gmax 2: 3 x 2).  gmax is the variant (see
    SMALL_F_VARIANTS).  Why not all 6 at once?  6 sums x 9 taps = 54 weights do
    not fit in 32 vector registers; LLVM then reloads spilled weights in the
    inner loop, and conv1 ran about a quarter slower than with groups of 3."""
    ng = -(-F // gmax)
    return ng, -(-F // ng)


def pack_weights_small(W, dtype, gmax):
    """W (F, C, K, K) -> Ws (ng, C, K, K*G) with Ws[g, c, p, q*G + f] = W[g*G + f, c, p, q]:
    the G*K weights of one group and input row (c, p) are contiguous."""
    F, C, K, _ = W.shape
    ng, G = small_f_groups(F, gmax)
    Wpad = np.zeros((ng * G, C, K, K), dtype=dtype)
    Wpad[:F] = W
    Ws = Wpad.reshape(ng, G, C, K, K).transpose(0, 2, 3, 4, 1)    # (ng, C, K, K, G)
    return np.ascontiguousarray(Ws.reshape(ng, C, K, K * G))


def small_f_width(Wo, K):
    """Columns per chunk for the small-F path (see :func:`tile_width`), or 0
    when K is too large for a segment of SEG input columns."""
    jt = tile_width(Wo)
    while jt > 0 and -(-(jt + K - 1) // VL) * VL > SEG:
        jt = -(-Wo // (-(-Wo // jt) + 1))       # one chunk more, narrower chunks
        if jt < VL:
            return 0
    return jt


@njit(fastmath=FM_FMA, cache=True, inline="always")
def small_f_pass(acc, a0, xb, w, G, K, m):
    """acc[a0 + f*ACC_F + j] += sum_q w[q*G + f] * xb[j + q]  for f < G <= 4, j < m.

    The G running sums of one column are scalars: in registers for all K taps,
    and one load of xb[j + q] feeds G FMAs (as in :func:`tile_pass`).  G and K
    are compile-time constants (tuple lengths, see :func:`taps`), so the
    ``if G > k`` tests vanish at compile time and a group of 3 computes exactly
    3 sums.  m is a multiple of VL: the vectorised j loop has no scalar tail.
    The filters' sums are ACC_F apart, a constant: LLVM then proves that they
    do not overlap (with a run-time distance it gave up vectorising the loop).
    """
    for j in range(m):
        # (unused sums copy s0: "else 0.0" would make them float64 for float32 data)
        s0 = acc[a0 + j]
        s1 = acc[a0 + ACC_F + j] if G > 1 else s0
        s2 = acc[a0 + 2 * ACC_F + j] if G > 2 else s0
        s3 = acc[a0 + 3 * ACC_F + j] if G > 3 else s0
        for q in range(K):
            v = xb[j + q]
            o = q * G
            s0 += w[o] * v
            if G > 1:
                s1 += w[o + 1] * v
            if G > 2:
                s2 += w[o + 2] * v
            if G > 3:
                s3 += w[o + 3] * v
        acc[a0 + j] = s0
        if G > 1:
            acc[a0 + ACC_F + j] = s1
        if G > 2:
            acc[a0 + 2 * ACC_F + j] = s2
        if G > 3:
            acc[a0 + 3 * ACC_F + j] = s3


