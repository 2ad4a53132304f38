"""The fast CPU backend: Numba kernels, parallel over the batch.

Same functions as :mod:`shallowcnn.kernels.reference` (read that first: it is
the truth these kernels are tested against).  Three ideas make them fast.

1. Register blocking (the forward convolution)
   ``out[n,f,i,j] = b[f] + sum_{c,p,q} W[f,c,p,q] x[n,c,i+p,j+q]``.
   A naive loop loads ``x[n,c,i+p,j+q]`` once per multiply.  We instead let one
   load feed ``FB = 4`` filters: the innermost loop runs along the output row
   ``j`` (so LLVM turns it into 16-wide AVX-512 vectors) and its body holds all
   ``FB x K`` multiply-adds of one input row -- the K taps ``q`` are unrolled
   because ``K`` is a compile-time constant (``numba.literally``).  The output
   tile (FB filters x 128 columns, 2 KB in float32) lives in L1 cache and is
   read and written once per input row (c, p) instead of once per tap, and the
   FB*K weights stay in vector registers for the whole row.

2. Fusion (conv + ReLU + global max pool)
   The network only needs, per (patch, filter), the maximum of the conv2
   output and where it is.  The fused kernel computes the same tiles and keeps
   a running maximum; the (N, 16, 128, 128) conv2 output (67 MB at batch 64)
   is never written.  relu(max z) = max(relu z), so the ReLU is applied last.

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
kernel size K; ``cache=True`` keeps them on disk).  Results come back in the
dtype of ``np.result_type(x, W)`` (float64 for anything that is not float32).
"""
from __future__ import annotations

import numpy as np

from . import BackendUnavailable
from .reference import _check_shapes

try:
    import numba
    from numba import literally, njit, prange
except ImportError as _e:  # pragma: no cover - numba is a hard dependency
    numba = None
    _IMPORT_ERROR = _e
else:
    _IMPORT_ERROR = None

FB = 4     # filters per block: one input load feeds FB multiply-adds
JT = 128   # output columns per tile (a multiple of the 16-lane vector width)

# 'contract' lets LLVM fuse a*b+c into one FMA instruction without otherwise
# reordering float arithmetic.  'reassoc' additionally lets it split a sum into
# vector lanes -- needed to vectorise the dot products of the weight gradient.
_FM_FMA = {"contract"}
_FM_SUM = {"contract", "reassoc"}


def check_available():
    """Raise :class:`BackendUnavailable` when Numba cannot be used."""
    if numba is None:
        raise BackendUnavailable(f"backend 'numba' needs the numba package: {_IMPORT_ERROR}")


# ---------------------------------------------------------------------------
# helpers (plain Python)
# ---------------------------------------------------------------------------

def _dtype(x, W):
    dt = np.result_type(x, W)
    return np.dtype(np.float32) if dt == np.float32 else np.dtype(np.float64)


def _pack_weights(W, dtype):
    """W (F, C, K, K) -> Wp (nfb, C, K, FB*K) with Wp[b, c, p, f*K + q] = W[b*FB + f, c, p, q].

    Filters are zero-padded to a multiple of FB, so every block has FB filters
    (the padded ones compute zeros that are never stored).  For one input row
    (c, p) the FB*K weights a row pass needs are then contiguous.
    """
    F, C, K, _ = W.shape
    nfb = (F + FB - 1) // FB
    Wpad = np.zeros((nfb * FB, C, K, K), dtype=dtype)
    Wpad[:F] = W
    Wp = Wpad.reshape(nfb, FB, C, K, K).transpose(0, 2, 3, 1, 4)   # (nfb, C, K, FB, K)
    return np.ascontiguousarray(Wp.reshape(nfb, C, K, FB * K))


# ---------------------------------------------------------------------------
# forward kernels
# ---------------------------------------------------------------------------

@njit(fastmath=_FM_FMA, cache=True)
def _row_pass(acc, w, xrow, K, jn):
    """acc[f*JT + j] += sum_q w[f*K + q] * xrow[j + q]   for f < FB, j < jn.

    acc (FB*JT,) the output tile of FB filters; w (FB*K,) the weights of one
    input row (c, p); xrow the input row starting at the tile's first column.
    K is a literal so that the q loop is fully unrolled and LLVM vectorises
    the j loop; one vector load of x feeds FB FMAs.
    """
    literally(K)
    for j in range(jn):
        for f in range(FB):
            s = acc[f * JT + j]
            for q in range(K):
                s += w[f * K + q] * xrow[j + q]
            acc[f * JT + j] = s


@njit(fastmath=_FM_FMA, cache=True)
def _tile(acc, x, Wp, b, n, blk, i, j0, jn, F, K):
    """Fill acc with the pre-activations of filters blk*FB..blk*FB+FB-1,
    output row i, columns j0..j0+jn-1 of patch n."""
    f0 = blk * FB
    for f in range(FB):
        bf = b[f0 + f] if f0 + f < F else 0.0
        for j in range(jn):
            acc[f * JT + j] = bf
    for c in range(x.shape[1]):
        for p in range(K):
            _row_pass(acc, Wp[blk, c, p], x[n, c, i + p, j0:], K, jn)


@njit(parallel=True, fastmath=_FM_FMA, cache=True)
def _conv_forward_kernel(x, Wp, b, F, K):
    literally(K)
    N, C, H, Wd = x.shape
    nfb = Wp.shape[0]
    Ho, Wo = H - K + 1, Wd - K + 1
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    for t in prange(N * nfb):              # one (patch, filter block) per item
        n, blk = t // nfb, t % nfb
        f0 = blk * FB
        acc = np.empty(FB * JT, dtype=x.dtype)
        for i in range(Ho):
            for j0 in range(0, Wo, JT):
                jn = min(JT, Wo - j0)
                _tile(acc, x, Wp, b, n, blk, i, j0, jn, F, K)
                for f in range(min(FB, F - f0)):
                    for j in range(jn):
                        out[n, f0 + f, i, j0 + j] = acc[f * JT + j]
    return out


@njit(parallel=True, fastmath=_FM_FMA, cache=True)
def _conv_max_kernel(x, Wp, b, F, K):
    literally(K)
    N, C, H, Wd = x.shape
    nfb = Wp.shape[0]
    Ho, Wo = H - K + 1, Wd - K + 1
    zmax = np.empty((N, F), dtype=x.dtype)
    argmax = np.zeros((N, F), dtype=np.int64)
    for t in prange(N * nfb):
        n, blk = t // nfb, t % nfb
        f0 = blk * FB
        nf = min(FB, F - f0)
        acc = np.empty(FB * JT, dtype=x.dtype)
        best = np.full(FB, -np.inf, dtype=x.dtype)
        where = np.zeros(FB, dtype=np.int64)
        # tiles are visited in row-major order and the test is strict '>',
        # so the first maximum wins, as in np.argmax
        for i in range(Ho):
            for j0 in range(0, Wo, JT):
                jn = min(JT, Wo - j0)
                _tile(acc, x, Wp, b, n, blk, i, j0, jn, F, K)
                for f in range(nf):
                    for j in range(jn):
                        v = acc[f * JT + j]
                        if v > best[f]:
                            best[f] = v
                            where[f] = i * Wo + j0 + j
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


@njit(parallel=True, fastmath=_FM_FMA, cache=True)
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


@njit(parallel=True, fastmath=_FM_FMA, cache=True)
def _sparse_grad_x_kernel(g, W, argmax, H, Wd, Wo):
    """dx[n,c,i+p,j+q] += g[n,f] W[f,c,p,q] with (i, j) = argmax[n,f].

    One patch per work item (it owns dx[n]): O(F*C*K*K) per patch.
    """
    N, F = g.shape
    _, C, K, _ = W.shape
    dx = np.zeros((N, C, H, Wd), dtype=W.dtype)
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

def conv2d_forward(x, W, b):
    """Valid cross-correlation, register-blocked.

    x (N, C, H, W), W (F, C, K, K), b (F,) -> out (N, F, H-K+1, W-K+1)
    ``out[n,f,i,j] = b[f] + sum_{c,p,q} W[f,c,p,q] x[n,c,i+p,j+q]``
    """
    _check_shapes(x, W)
    dt = _dtype(x, W)
    x = np.ascontiguousarray(x, dtype=dt)
    b = np.ascontiguousarray(b, dtype=dt)
    F, _, K, _ = W.shape
    return _conv_forward_kernel(x, _pack_weights(W, dt), b, F, K)


def conv2d_backward(dout, x, W, need_dx=True):
    """Gradients of the valid cross-correlation.

    dout (N, F, Ho, Wo), x (N, C, H, W), W (F, C, K, K) ->
    dx (N, C, H, W) or None, dW (F, C, K, K), db (F,)

    ``dW[f,c,p,q] = sum_{n,i,j} dout[n,f,i,j] x[n,c,i+p,j+q]``, ``db[f] = sum dout[n,f,i,j]``
    (zero rows of dout cost nothing, sparse rows cost K*K*C per non-zero);
    ``dx = conv(pad(dout, K-1), W flipped)`` -- a "full" convolution, computed
    with the fast forward kernel.
    """
    _check_shapes(x, W)
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


def conv_relu_maxpool_forward(x, W, b):
    """Fused convolution + ReLU + global max pool; the conv output is never stored.

    x (N, C, H, W), W (F, C, K, K), b (F,) -> pooled (N, F), argmax (N, F) int64

    ``pooled[n,f] = max(0, max_{i,j} z[n,f,i,j])``, z the convolution;
    ``argmax[n,f]`` = flat index ``i * Wo + j`` of the first maximum of z.
    """
    _check_shapes(x, W)
    dt = _dtype(x, W)
    x = np.ascontiguousarray(x, dtype=dt)
    b = np.ascontiguousarray(b, dtype=dt)
    F, _, K, _ = W.shape
    zmax, argmax = _conv_max_kernel(x, _pack_weights(W, dt), b, F, K)
    return np.maximum(zmax, 0), argmax


def conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled, need_dx=True):
    """Sparse backward of :func:`conv_relu_maxpool_forward`.

    dpooled (N, F), x (N, C, H, W), W (F, C, K, K), argmax and pooled (N, F) ->
    dx (N, C, H, W) or None, dW (F, C, K, K), db (F,)

    With ``g[n,f] = dpooled[n,f]`` where the ReLU was open (pooled > 0), else 0,
    and (i, j) = argmax[n, f]:
    ``db[f] = sum_n g[n,f]``, ``dW[f,c,p,q] = sum_n g[n,f] x[n,c,i+p,j+q]``,
    ``dx[n,c,i+p,j+q] += sum_f g[n,f] W[f,c,p,q]`` -- O(N*F*C*K*K) in all.
    """
    _check_shapes(x, W)
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
    dx = _sparse_grad_x_kernel(g, Wc, argmax, H, Wd, Wo) if need_dx else None
    return dx, dW, db
