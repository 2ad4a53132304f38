"""The fast CPU backend: Numba kernels, parallel over the batch.

Same functions as :mod:`shallowcnn.kernels.reference` (read that first: it is
the truth these kernels are tested against).  Three ideas make them fast.

1. Register blocking (the forward convolution): :mod:`shallowcnn.kernels.tiles`
   ``out[n,f,i,j] = b[f] + sum_{c,p,q} W[f,c,p,q] x[n,c,i+p,j+q]``.
   A naive loop loads ``x[n,c,i+p,j+q]`` once per multiply and reads and
   writes the output once per multiply: the CPU then waits on its caches, not
   on its multipliers.  All forward kernels (and the scanning kernel in
   :mod:`shallowcnn.kernels.cpu_blockmax`) share one function,
   :func:`~shallowcnn.kernels.tiles.conv_tile`, which computes a small tile --
   FB filters x RB = 4 output rows x up to JT = 256 columns -- in a buffer that
   stays in the L1 cache: the loop along the output row is the vector loop,
   each x value loaded feeds FB multiply-adds, and the running sums of a
   column stay in registers for all K taps.  Why not im2col + BLAS?  numba's
   ``np.dot`` needs SciPy's BLAS and the im2col copy of conv2 is 486 floats per
   output; the blocked loop reaches the matmul rate without either.

1b. Few filters (conv1: 6 filters x 1 channel): :func:`_small_f_kernel`
   conv_tile suits conv2 (16 filters, 6 x 9 row passes per tile) but not conv1:
   6 filters pad to 2 blocks of FB = 4 (25% wasted FMAs) and with only C*K = 9
   row passes per tile the fixed costs of a pass weigh more.  For F <= SMALL_F,
   conv2d_forward instead splits the filters into groups of G <= 4 (6 = 2 x 3:
   no padding; G*K + G + 1 = 31 of the 32 vector registers for K = 9, so no
   spills), and lays RB input rows side by side in a zero-padded buffer, each
   in a segment rounded up to 16 columns: one vectorised column loop then
   serves RB output rows at once and never runs a scalar tail (nearly twice
   conv_tile's rate on conv1: benchmarks/README.md, "Measurements behind the kernels").

1c. Variants, chosen by measurement: :mod:`shallowcnn.kernels.autotune`
   How many independent sums a pass carries (FB filters x RP rows for the
   tile, G filters for the few-filter path) decides whether the FMA units of
   a given CPU are kept busy.  Each kernel takes a ``variant`` (a name from
   ``tiles.TILE_VARIANTS`` or ``tiles.SMALL_F_VARIANTS``); left at None, the
   autotuner picks the fastest for this CPU and layer shape, once, and
   remembers it on disk.  The fused conv2, the scan's block max and the few-filter
   conv1 have one more: ``wino`` (:mod:`shallowcnn.kernels.winograd`), the same
   passes on Winograd-transformed rows (half the multiply-adds for conv2; for conv1,
   its 6 filters padded to 8, two thirds), float32 sums within about 1e-6 of the direct ones.
   The fused conv2 and conv1 have a second: ``wino2d`` (:mod:`shallowcnn.kernels.winograd2d`),
   Winograd in both directions on a grid of 3 x 3 tiles (a third of the multiply-adds);
   and :func:`features_forward` may run the two layers as one loop over patches in it
   (the autotuner's "stack" choice, :func:`_stack_variant`).

2. Fusion (conv + ReLU + global max pool)
   The network only needs, per (patch, filter), the maximum of the conv2
   output and where it is.  The fused kernel computes the same tiles and keeps
   a running maximum; the (N, 16, 128, 128) conv2 output (67 MB at batch 64)
   is never written.  relu(max z) = max(relu z), so the ReLU is applied last.
   conv1's ReLU is applied as its output is stored (``conv2d_forward(...,
   relu=True)``), instead of a second pass over the 28 MB array.

3. Sparsity (the backward passes)
   The max pool passes gradient to one position per (patch, filter), so
   conv2's gradient is zero except at N*F points: dW2, db2 and dx cost
   O(N*F*C*K*K) instead of O(N*F*C*K*K*Ho*Wo).  conv1's output gradient is
   then non-zero only in the K x K windows under those points; its backward
   skips zero rows, visits single positions when a row has few non-zeros, and
   uses vectorised dot products along a row only where the row is dense.

Parallelism: ``prange`` over independent work items (patch x filter-block, or
patch, or filter x channel) that write disjoint outputs -- never a shared
``+=`` across threads.  Weight-gradient reductions over the batch go into one
partial buffer per (patch, filter) that NumPy sums afterwards.

float32 and float64 both work (Numba compiles one version per dtype and per
kernel size K -- the size travels in the *type* of a tuple argument, so
calls dispatch as fast as any njit call; ``cache=True`` keeps them on disk).  Results come back in the
dtype of ``np.result_type(x, W)`` (float64 for anything that is not float32).
"""
from __future__ import annotations

import numpy as np

from . import BackendUnavailable, autotune, check_shapes, thread_placement, threading_layer, winograd, winograd2d
# The scanning kernel (conv2 + ReLU + block max) lives in its own file; it is part of this
# backend's contract (kernels/__init__.py), so the backend offers it under its name.
from .cpu_blockmax import conv_relu_blockmax  # noqa: F401
from .tiles import (ACC_F, ACC_ROW, FM_FMA, RB, SMALL_F_VARIANTS, VL, conv_tile, fold_row_max, pack_bias,
                    pack_weights, pack_weights_small, small_f_groups, small_f_pass, small_f_width, taps,
                    tile_width, variant_args)

try:
    import numba
    from numba import njit, prange
except ImportError as _e:  # pragma: no cover - numba is a hard dependency
    numba = None
    _IMPORT_ERROR = _e
else:
    _IMPORT_ERROR = None
    # Numba's 'workqueue' threading layer unless `shallowcnn tune` measured OpenMP's to be
    # clearly faster on this machine, or NUMBA_THREADING_LAYER says otherwise: which one wins
    # depends on the machine and its load (kernels/threading_layer.py). workqueue serves one
    # Python thread at a time (shallowcnn never calls kernels from several).
    THREADING = threading_layer.apply()
    # ... and, where `shallowcnn tune` measured it faster, each workqueue thread pinned to a CPU of
    # its own, so that the OS never wakes two of them on one CPU (kernels/thread_placement.py).
    PLACEMENT = thread_placement.apply()

SMALL_F = 8   # conv2d_forward takes the few-filter path (_small_f_kernel) when F <= SMALL_F
              # (more filters, e.g. conv2's 16 x 6 channels: conv_tile's blocks pad
              # little and its C*K row passes per tile are many)

# FM_FMA (tiles.py): 'contract' lets LLVM fuse a*b+c into one FMA instruction without
# otherwise reordering float arithmetic.  'reassoc' additionally lets it split a sum into
# vector lanes -- needed to vectorise the dot products of the weight gradient.
_FM_SUM = {"contract", "reassoc"}


def check_available():
    """Raise :class:`BackendUnavailable` when Numba cannot be used."""
    if numba is None:
        raise BackendUnavailable(f"backend 'numba' needs the numba package: {_IMPORT_ERROR}")


def _dtype(x, W):
    dt = np.result_type(x, W)
    return np.dtype(np.float32) if dt == np.float32 else np.dtype(np.float64)


# ---------------------------------------------------------------------------
# forward kernels
# ---------------------------------------------------------------------------

@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _small_f_kernel(x, Ws, b, F, gt, kt, jt, relu):
    """conv2d_forward for few filters (F <= 8, e.g. conv1: 6 filters, 1 channel).

    Why not the blocked conv_tile path?  With F = 6 it pads to two blocks of
    FB = 4 (25% wasted FMAs); its 136-column rows end in 8 columns of scalar
    code (as slow as 8 vector iterations); each row pass does only K taps, so
    the setup of a pass (broadcasting the weights) is paid every 136 columns;
    and the ReLU is a separate pass over the output.

    Here one work item is up to RB output rows x jt columns of one patch, for
    all F filters, done as ng groups of G <= 4 filters (see
    :func:`tiles.small_f_groups`: G = 3 for conv1, so its 27 weights, 3 sums and
    the x value fit in the 32 vector registers).  For one input row offset
    (c, p), the rn input rows (c, i0 + r + p) are copied side by side into xb,
    segment r starting at r*S (S = jn + K - 1 rounded up to VL).  Output
    column j of row r needs xb[r*S + j + q] only, so ONE column loop over
    rn*S positions (:func:`small_f_pass`) serves all rn rows: the weights are
    set up once per rn*S columns, and there is no scalar tail.  The last
    S - jn positions of each segment compute garbage that is never
    stored (about 6% extra work for conv1: 144 positions for 136 outputs).
    xb starts zeroed and only ever receives x values, so the garbage comes
    from finite data (uninitialised memory could hold NaNs or denormals, and
    denormals make FMAs very slow).  The ReLU is applied while storing.
    """
    G = len(gt)
    K = len(kt)
    ng = Ws.shape[0]
    N, C, H, Wd = x.shape
    Ho, Wo = H - K + 1, Wd - K + 1
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    zero = np.zeros(1, dtype=x.dtype)[0]     # a 0 of x's dtype: max(v, 0.0) would be float64
    nrb = (Ho + RB - 1) // RB
    for t in prange(N * nrb):
        n, i0 = t // nrb, (t % nrb) * RB
        rn = min(RB, Ho - i0)
        acc = np.empty(ng * G * ACC_F, dtype=x.dtype)
        xb = np.zeros(ACC_F + K + VL, dtype=x.dtype)   # reads run up to K past the last segment
        for j0 in range(0, Wo, jt):
            jn = min(jt, Wo - j0)
            xn = jn + K - 1                  # input columns a segment needs
            S = (xn + VL - 1) // VL * VL     # <= SEG, see tiles.small_f_width
            m = rn * S
            for f in range(ng * G):
                for j in range(m):
                    acc[f * ACC_F + j] = b[f]
            for c in range(C):
                for p in range(K):
                    for r in range(rn):
                        xb[r * S:r * S + xn] = x[n, c, i0 + r + p, j0:j0 + xn]
                    for g in range(ng):
                        small_f_pass(acc, g * G * ACC_F, xb, Ws[g, c, p], G, K, m)
            for f in range(F):
                for r in range(rn):
                    a = f * ACC_F + r * S
                    if relu:
                        for j in range(jn):
                            out[n, f, i0 + r, j0 + j] = max(acc[a + j], zero)
                    else:
                        for j in range(jn):
                            out[n, f, i0 + r, j0 + j] = acc[a + j]
    return out


@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _conv_forward_kernel(x, Wp, bp, F, kt, ft, rt, jt, relu):
    # Wp, bp packed for FB = len(ft) filters per block; rt: the rows per pass (tiles.py)
    K = len(kt)
    FB = len(ft)
    N, C, H, Wd = x.shape
    nfb = Wp.shape[0]
    Ho, Wo = H - K + 1, Wd - K + 1
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    for t in prange(N * nfb):              # one (patch, filter block) per item
        n, blk = t // nfb, t % nfb
        f0 = blk * FB
        nf = min(FB, F - f0)
        acc = np.empty(RB * FB * ACC_ROW, dtype=x.dtype)
        zero = np.zeros(1, dtype=x.dtype)[0]     # a 0 of x's dtype (0.0 would be float64)
        for i0 in range(0, Ho, RB):
            rn = min(RB, Ho - i0)
            for j0 in range(0, Wo, jt):
                jn = min(jt, Wo - j0)
                conv_tile(acc, x, Wp, bp, kt, ft, rt, n, blk, i0, rn, j0, jn)
                for r in range(rn):
                    for f in range(nf):
                        a = (r * FB + f) * ACC_ROW
                        if relu:
                            for j in range(jn):
                                out[n, f0 + f, i0 + r, j0 + j] = max(acc[a + j], zero)
                        else:
                            for j in range(jn):
                                out[n, f0 + f, i0 + r, j0 + j] = acc[a + j]
    return out


@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _conv_max_kernel(x, Wp, bp, F, kt, ft, rt, jt):
    K = len(kt)
    FB = len(ft)
    N, C, H, Wd = x.shape
    nfb = Wp.shape[0]
    Ho, Wo = H - K + 1, Wd - K + 1
    zmax = np.empty((N, F), dtype=x.dtype)
    argmax = np.zeros((N, F), dtype=np.int64)
    for t in prange(N * nfb):
        n, blk = t // nfb, t % nfb
        f0 = blk * FB
        nf = min(FB, F - f0)
        acc = np.empty(RB * FB * ACC_ROW, dtype=x.dtype)
        best = np.full(FB, -np.inf, dtype=x.dtype)
        where = np.zeros(FB, dtype=np.int64)
        for i0 in range(0, Ho, RB):
            rn = min(RB, Ho - i0)
            for j0 in range(0, Wo, jt):
                jn = min(jt, Wo - j0)
                conv_tile(acc, x, Wp, bp, kt, ft, rt, n, blk, i0, rn, j0, jn)
                # fold the tile into the running maxima (tiles.fold_row_max: ties go
                # to the smaller flat index, as in np.argmax)
                for r in range(rn):
                    for f in range(nf):
                        fold_row_max(acc, (r * FB + f) * ACC_ROW, jn, (i0 + r) * Wo + j0, best, where, f, 1)
        for f in range(nf):
            zmax[n, f0 + f] = best[f]
            argmax[n, f0 + f] = where[f]
    return zmax, argmax


# ---------------------------------------------------------------------------
# backward kernels
# ---------------------------------------------------------------------------

@njit(parallel=True, fastmath=_FM_SUM, cache=True)
def _conv_grad_w_kernel(dout, x, K):
    """Partial weight and bias gradients, one buffer per (patch, filter).

    dW_part[n, f, c, p, q] = sum_{i,j} dout[n,f,i,j] x[n,c,i+p,j+q];
    db_part[n, f] = sum_{i,j} dout[n,f,i,j].

    Rows of dout that are all zero are skipped; a row with few non-zeros
    visits only those positions (a K x K window each); a dense row uses dot
    products along j, which LLVM vectorises.
    """
    N, F, Ho, Wo = dout.shape
    C = x.shape[1]
    dWp = np.zeros((N, F, C, K, K), dtype=x.dtype)
    dbp = np.zeros((N, F), dtype=x.dtype)
    for t in prange(N * F):
        n, f = t // F, t % F
        part = dWp[n, f]
        sb = 0.0
        for i in range(Ho):
            drow = dout[n, f, i]
            nnz = 0
            for j in range(Wo):
                if drow[j] != 0.0:
                    nnz += 1
            if nnz == 0:
                continue
            if nnz * 8 < Wo:               # sparse row: visit the non-zeros only
                for j in range(Wo):
                    g = drow[j]
                    if g != 0.0:
                        sb += g
                        for c in range(C):
                            for p in range(K):
                                xr = x[n, c, i + p]
                                for q in range(K):
                                    part[c, p, q] += g * xr[j + q]
            else:                          # dense row: vectorised dot products
                for j in range(Wo):
                    sb += drow[j]
                for c in range(C):
                    for p in range(K):
                        xr = x[n, c, i + p]
                        for q in range(K):
                            s = 0.0
                            for j in range(Wo):
                                s += drow[j] * xr[j + q]
                            part[c, p, q] += s
        dbp[n, f] = sb
    return dWp, dbp


@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _sparse_grads_w_kernel(g, x, argmax, K, Wo):
    """dW[f,c,p,q] = sum_n g[n,f] x[n,c,i+p,j+q] with (i, j) = argmax[n,f].

    One (filter, channel) pair per work item: disjoint outputs, O(N*K*K) each.
    """
    N, F = g.shape
    C = x.shape[1]
    dW = np.zeros((F, C, K, K), dtype=x.dtype)
    for t in prange(F * C):
        f, c = t // C, t % C
        for n in range(N):
            gn = g[n, f]
            if gn == 0.0:
                continue
            i, j = argmax[n, f] // Wo, argmax[n, f] % Wo
            for p in range(K):
                for q in range(K):
                    dW[f, c, p, q] += gn * x[n, c, i + p, j + q]
    return dW


@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _sparse_grad_x_kernel(g, W, argmax, Wo, dx):
    """dx[n,c,i+p,j+q] += g[n,f] W[f,c,p,q] with (i, j) = argmax[n,f]; dx comes zeroed.

    One patch per work item (it owns dx[n]): O(F*C*K*K) per patch.
    """
    N, F = g.shape
    _, C, K, _ = W.shape
    for n in prange(N):
        for f in range(F):
            gn = g[n, f]
            if gn == 0.0:
                continue
            i, j = argmax[n, f] // Wo, argmax[n, f] % Wo
            for c in range(C):
                for p in range(K):
                    for q in range(K):
                        dx[n, c, i + p, j + q] += gn * W[f, c, p, q]
    return dx


# ---------------------------------------------------------------------------
# the backend API
# ---------------------------------------------------------------------------

def conv2d_forward(x, W, b, relu=False, variant=None):
    """Valid cross-correlation, register-blocked; with ``relu=True`` its ReLU.

    x (N, C, H, W), W (F, C, K, K), b (F,) -> out (N, F, H-K+1, W-K+1)
    ``out[n,f,i,j] = b[f] + sum_{c,p,q} W[f,c,p,q] x[n,c,i+p,j+q]``
    (``max(out, 0)`` when relu: applied as the output is stored, no extra pass).
    ``variant`` is an extension of this backend (``relu`` is in every backend's contract):
    None (the autotuner picks), a name of ``tiles.TILE_VARIANTS`` (the blocked path, any F), of
    ``tiles.SMALL_F_VARIANTS`` (the few-filter path, any F), ``wino`` (:func:`winograd.conv_dense`)
    or ``wino2d`` (:func:`winograd2d.conv_dense`; both any F, float32 sums within rounding of the
    direct ones).
    """
    check_shapes(x, W)
    dt = _dtype(x, W)
    x = np.ascontiguousarray(x, dtype=dt)
    b = np.ascontiguousarray(b, dtype=dt)
    W = np.asarray(W, dtype=dt)
    F, _, K, _ = W.shape
    Wo = x.shape[3] - K + 1
    jt = small_f_width(Wo, K)
    if variant == "wino2d":     # Winograd in 2-D (kernels/winograd2d.py), where its tiles fit
        if winograd2d.usable(K, Wo):
            return winograd2d.conv_dense(x, W, b, relu)
        variant = "wino"
    if variant == "wino":       # Winograd (kernels/winograd.py); leftover rows: the direct default
        direct = _direct_default(F, jt)
        return winograd.conv_dense(x, W, b, relu, lambda xs: conv2d_forward(xs, W, b, relu, direct))
    if variant in SMALL_F_VARIANTS or (variant is None and F <= SMALL_F):
        if jt:
            if variant is None:
                variant = autotune.pick("small_f", "small_f dense", x, W,
                                        lambda xs, v: conv2d_forward(xs, W, b, relu, v))
                if variant in ("wino", "wino2d"):
                    return conv2d_forward(x, W, b, relu, variant)
            return _small_f(x, W, b, relu, variant, jt)
        variant = None          # K wider than a segment (tiles.SEG): the blocked path
    if variant is None:
        variant = autotune.pick("tile", "tile dense", x, W, lambda xs, v: _blocked(xs, W, b, relu, v))
    return _blocked(x, W, b, relu, autotune.check("tile", variant))


def _direct_default(F, jt):
    """The pinned default of the direct path conv2d_forward would take for F filters."""
    return autotune.FAMILIES["small_f" if F <= SMALL_F and jt else "tile"][0]


def _small_f(x, W, b, relu, variant, jt):
    F, _, K, _ = W.shape
    ng, G = small_f_groups(F, SMALL_F_VARIANTS[variant])
    bp = pack_bias(b, F, x.dtype, G)        # ng * G entries: ceil(F / G) == ng
    Ws = pack_weights_small(W, x.dtype, SMALL_F_VARIANTS[variant])
    return _small_f_kernel(x, Ws, bp, F, taps(G), taps(K), jt, bool(relu))


def _blocked(x, W, b, relu, variant):
    F, _, K, _ = W.shape
    ft, rt = variant_args(variant)
    return _conv_forward_kernel(x, pack_weights(W, x.dtype, len(ft)), pack_bias(b, F, x.dtype, len(ft)),
                                F, taps(K), ft, rt, tile_width(x.shape[3] - K + 1), bool(relu))


def conv2d_backward(dout, x, W, need_dx=True):
    """Gradients of the valid cross-correlation.

    dout (N, F, Ho, Wo), x (N, C, H, W), W (F, C, K, K) ->
    dx (N, C, H, W) or None, dW (F, C, K, K), db (F,)

    ``dW[f,c,p,q] = sum_{n,i,j} dout[n,f,i,j] x[n,c,i+p,j+q]``, ``db[f] = sum dout[n,f,i,j]``
    (zero rows of dout cost nothing, sparse rows cost K*K*C per non-zero);
    ``dx = conv(pad(dout, K-1), W flipped)`` -- a "full" convolution, computed
    with the fast forward kernel.
    """
    check_shapes(x, W)
    dt = _dtype(x, W)
    x = np.ascontiguousarray(x, dtype=dt)
    dout = np.ascontiguousarray(dout, dtype=dt)
    F, C, K, _ = W.shape
    N, _, H, Wd = x.shape
    if dout.shape != (N, F, H - K + 1, Wd - K + 1):
        raise ValueError(f"dout has shape {dout.shape}, expected {(N, F, H - K + 1, Wd - K + 1)}")
    dWp, dbp = _conv_grad_w_kernel(dout, x, K)
    dW = dWp.sum(axis=0)
    db = dbp.sum(axis=0)
    dx = None
    if need_dx:
        # dx[n,c,y,v] = sum_{f,p,q} dout[n,f,y-p,v-q] W[f,c,p,q]: a valid
        # correlation of dout padded by K-1 with W turned 180 degrees and
        # its (F, C) axes swapped.
        Ho, Wo = dout.shape[2], dout.shape[3]
        dpad = np.zeros((N, F, Ho + 2 * (K - 1), Wo + 2 * (K - 1)), dtype=dt)
        dpad[:, :, K - 1:K - 1 + Ho, K - 1:K - 1 + Wo] = dout
        Wt = np.ascontiguousarray(np.asarray(W, dtype=dt)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        dx = conv2d_forward(dpad, Wt, np.zeros(C, dtype=dt))
    return dx, dW, db


def conv_relu_maxpool_forward(x, W, b, variant=None):
    """Fused convolution + ReLU + global max pool; the conv output is never stored.

    x (N, C, H, W), W (F, C, K, K), b (F,) -> pooled (N, F), argmax (N, F) int64

    ``pooled[n,f] = max(0, max_{i,j} z[n,f,i,j])``, z the convolution;
    ``argmax[n,f]`` = flat index ``i * Wo + j`` of the first maximum of z.
    variant: a name of ``variants.FUSED_VARIANTS`` (the tile variants and "wino"), or
    None (the autotuner picks).
    """
    check_shapes(x, W)
    dt = _dtype(x, W)
    x = np.ascontiguousarray(x, dtype=dt)
    b = np.ascontiguousarray(b, dtype=dt)
    W = np.asarray(W, dtype=dt)
    if variant is None:
        variant = autotune.pick("fused", "tile fused", x, W, lambda xs, v: _conv_max(xs, W, b, v))
    zmax, argmax = _conv_max(x, W, b, autotune.check("fused", variant))
    return np.maximum(zmax, 0), argmax


def _conv_max(x, W, b, variant):
    if variant == "wino2d":         # Winograd in 2-D (kernels/winograd2d.py), where its tiles fit
        F, _, K, _ = W.shape
        if winograd2d.usable(K, x.shape[3] - K + 1):
            return winograd2d.conv_max(x, W, b)
        variant = "wino"
    if variant == "wino":           # Winograd (kernels/winograd.py); leftover rows: the direct default
        return winograd.conv_max(x, W, b, lambda xs: _conv_max(xs, W, b, autotune.FAMILIES["tile"][0]))
    F, _, K, _ = W.shape
    ft, rt = variant_args(variant)
    return _conv_max_kernel(x, pack_weights(W, x.dtype, len(ft)), pack_bias(b, F, x.dtype, len(ft)),
                            F, taps(K), ft, rt, tile_width(x.shape[3] - K + 1))


def conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled, need_dx=True):
    """Sparse backward of :func:`conv_relu_maxpool_forward`.

    dpooled (N, F), x (N, C, H, W), W (F, C, K, K), argmax and pooled (N, F) ->
    dx (N, C, H, W) or None, dW (F, C, K, K), db (F,)

    With ``g[n,f] = dpooled[n,f]`` where the ReLU was open (pooled > 0), else 0,
    and (i, j) = argmax[n, f]:
    ``db[f] = sum_n g[n,f]``, ``dW[f,c,p,q] = sum_n g[n,f] x[n,c,i+p,j+q]``,
    ``dx[n,c,i+p,j+q] += sum_f g[n,f] W[f,c,p,q]`` -- O(N*F*C*K*K) in all.
    """
    check_shapes(x, W)
    dt = _dtype(x, W)
    x = np.ascontiguousarray(x, dtype=dt)
    Wc = np.ascontiguousarray(W, dtype=dt)
    F, C, K, _ = W.shape
    N, _, H, Wd = x.shape
    Wo = Wd - K + 1
    argmax = np.ascontiguousarray(argmax, dtype=np.int64)
    g = np.where(np.asarray(pooled) > 0, np.asarray(dpooled, dtype=dt), dt.type(0))
    g = np.ascontiguousarray(g, dtype=dt)
    db = g.sum(axis=0)
    dW = _sparse_grads_w_kernel(g, x, argmax, K, Wo)
    dx = None
    if need_dx:
        # np.zeros in Python asks the OS for zeroed pages (calloc): only the
        # pages under the N*F touched windows are ever faulted in and written.
        # Inside a Numba kernel np.zeros would memset the whole array (28 MB
        # for conv2's input at batch 64), which cost more than the kernel.
        dx = np.zeros((N, C, H, Wd), dtype=dt)
        _sparse_grad_x_kernel(g, Wc, argmax, Wo, dx)
    return dx, dW, db


# ---------------------------------------------------------------------------
# the whole feature stack: conv1 -> ReLU -> fused conv2 + ReLU + max pool
# ---------------------------------------------------------------------------

@njit(parallel=True, fastmath=FM_FMA, cache=True)
def _sparse_conv1_grads_kernel(g, x, h1, W2, argmax, Wo2, kt1):
    """conv1's weight and bias gradients straight from conv2's sparse gradient.

    g (N, F2) conv2's output gradient at its argmax (0 where the ReLU was shut),
    x (N, C0, H, W) the input, h1 (N, C1, H1, W1) = relu(conv1(x)), W2 (F2, C1, K2, K2),
    K1 = len(kt1) (a tuple type, see tiles.taps: the tap loops get fixed trip counts
    that LLVM unrolls; with K1 a plain integer this kernel took about 1.5 times as long).
    Returns per-patch partials dW1p (N, C1, C0, K1, K1) and db1p (N, C1).

    Each (n, f) sends ``g W2[f]`` into the K2 x K2 window of h1 under its argmax;
    where h1 > 0 that is conv1's pre-activation gradient dz1, and
    ``dW1[c,c0,p1,q1] += dz1[n,c,y,v] x[n,c0,y+p1,v+q1]``, ``db1[c] += dz1``.
    Overlapping windows simply add (the gradient is linear in dz1), so the dense
    (N, C1, H1, W1) gradient of h1 is never built: O(N*F2*C1*K2^2*C0*K1^2) work.
    """
    N, F2 = g.shape
    _, C1, K2, _ = W2.shape
    C0 = x.shape[1]
    K1 = len(kt1)
    dW1p = np.zeros((N, C1, C0, K1, K1), dtype=x.dtype)
    db1p = np.zeros((N, C1), dtype=x.dtype)
    for n in prange(N):                      # each patch owns its partials
        for f in range(F2):
            gn = g[n, f]
            if gn == 0.0:
                continue
            i, j = argmax[n, f] // Wo2, argmax[n, f] % Wo2
            for c in range(C1):
                for p in range(K2):
                    for q in range(K2):
                        if h1[n, c, i + p, j + q] <= 0.0:   # conv1's ReLU was shut here
                            continue
                        dz = gn * W2[f, c, p, q]
                        db1p[n, c] += dz
                        for c0 in range(C0):
                            for p1 in range(K1):
                                for q1 in range(K1):
                                    dW1p[n, c, c0, p1, q1] += dz * x[n, c0, i + p + p1, j + q + q1]
    return dW1p, db1p


def features_forward(x, W1, b1, W2, b2):
    """The network's feature stack in one call: x (N, C0, H, W) -> pooled (N, F2).

    ``pooled = max_{i,j} relu(conv2(relu(conv1(x))))``; ``ctx`` keeps what
    :func:`features_backward` needs (x, h1 = relu(conv1(x)), argmax, pooled, W2).
    """
    check_shapes(x, W1)
    dt = _dtype(x, W1)
    x, W1, b1, W2, b2 = (np.ascontiguousarray(a, dtype=dt) for a in (x, W1, b1, W2, b2))
    layers = {}     # the two layers' own variants, where choosing the stack needed them
    if _stack_variant(x, W1, b1, W2, b2, layers) == "wino2d":
        # both layers in F(3 x 3, 3 x 3), one patch at a time: conv1's output of a patch is still
        # in the cache when conv2 reads it, and the threads are woken once per batch, not twice
        h1, zmax, argmax = winograd2d.stack_max(x, W1, b1, W2, b2)
        pooled = np.maximum(zmax, 0)
    else:
        h1 = conv2d_forward(x, W1, b1, relu=True, variant=layers.get("conv1"))   # ReLU fused into the store
        pooled, argmax = conv_relu_maxpool_forward(h1, W2, b2, variant=layers.get("conv2"))
    ctx = {"x": x, "h1": h1, "argmax": argmax, "pooled": pooled, "W2": W2, "K1": W1.shape[2]}
    return pooled, ctx


def _stack_variant(x, W1, b1, W2, b2, layers) -> str:
    """The autotuner's "stack" choice for these shapes: "wino2d" (:func:`winograd2d.stack_max`,
    conv1 and the fused conv2 in one parallel loop) or "separate" (two kernels, each with its
    own choice, which timing the two puts into ``layers`` as "conv1" and "conv2"). Offered
    where both layers fit the grid, unless the user pinned the layers' variants and not this.
    All arrays of x's dtype."""
    F1, _, K1, _ = W1.shape
    Wo1 = x.shape[3] - K1 + 1
    if F1 > SMALL_F or not small_f_width(Wo1, K1) or not winograd2d.usable(K1, Wo1) \
            or not winograd2d.usable(W2.shape[2], Wo1 - W2.shape[2] + 1):
        return "separate"
    pinned = autotune.pins()
    if "stack" not in pinned and ("small_f" in pinned or "fused" in pinned):
        return "separate"

    def run(xs, variant):
        if variant == "wino2d":
            return winograd2d.stack_max(xs, W1, b1, W2, b2)
        if "conv1" not in layers:        # chosen once: "separate" is timed over many runs
            layers["conv1"] = autotune.pick("small_f", "small_f dense", xs, W1,
                                            lambda xt, v: conv2d_forward(xt, W1, b1, True, v))
        h1 = conv2d_forward(xs, W1, b1, True, layers["conv1"])
        if "conv2" not in layers:
            layers["conv2"] = autotune.pick("fused", "tile fused", h1, W2, lambda hs, v: _conv_max(hs, W2, b2, v))
        return _conv_max(h1, W2, b2, layers["conv2"])

    # timed on whole patches of a whole batch (64 at most): what the stack saves is conv1's output
    # of the batch going out to memory and back, which a slice of 4 patches would keep in the cache
    return autotune.pick("stack", f"stack F{W2.shape[0]}", x, W1, run, rows=x.shape[2] - K1 + 1, patches=64)


def features_backward(dpooled, ctx):
    """Gradients of the feature stack from dL/dpooled (N, F2): (dW1, db1, dW2, db2).

    Everything follows the N*F2 argmax positions: conv2's gradients as in
    :func:`conv_relu_maxpool_backward`, conv1's by :func:`_sparse_conv1_grads_kernel`.
    """
    x, h1, argmax, pooled, W2 = ctx["x"], ctx["h1"], ctx["argmax"], ctx["pooled"], ctx["W2"]
    dt = h1.dtype
    g = np.ascontiguousarray(np.where(pooled > 0, dpooled, 0), dtype=dt)   # the ReLU after the max
    K2, Wo2 = W2.shape[2], h1.shape[3] - W2.shape[2] + 1
    dW2 = _sparse_grads_w_kernel(g, h1, argmax, K2, Wo2)
    db2 = g.sum(axis=0)
    dW1p, db1p = _sparse_conv1_grads_kernel(g, x, h1, W2, argmax, Wo2, taps(ctx["K1"]))
    return dW1p.sum(axis=0), db1p.sum(axis=0), dW2, db2
