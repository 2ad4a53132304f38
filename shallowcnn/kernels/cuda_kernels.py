"""The device code of the cuda backend: every ``numba.cuda`` kernel, and the device
functions they share.

:mod:`shallowcnn.kernels.cuda` explains how the work is split over threads and launches
these kernels (host side: transfers, launch shapes, scratch buffers). Each kernel is built
by a cached factory so that dtypes and block shapes are compile-time constants: local
(register) and shared arrays need constant sizes, and typed zeros keep float32 sums in
float32. Nothing here is compiled until a kernel is first launched.
"""
from __future__ import annotations

import functools
import math

import numpy as np

try:  # numba-cuda is an optional extra (see cuda.check_available)
    import numba
    from numba import cuda
except Exception:  # pragma: no cover - depends on the installation
    numba = cuda = None

_NO_INDEX = 2**31 - 1        # index of "no pixel yet" in the argmax reduction
NONE, RELU, MAXPOOL = 0, 1, 2  # epilogues of the tiled convolution


def _nbtype(dtype):
    return numba.from_dtype(np.dtype(dtype))


def _device_function(fn):
    """Compile ``fn`` as a CUDA device function (callable from kernels only);
    left as it is where numba.cuda is missing, so that importing never fails."""
    return fn if cuda is None else cuda.jit(device=True)(fn)


@_device_function
def _unravel4(k, B, C, D):
    """Flat index k of a C-ordered (A, B, C, D) array -> (a, b, c, d)."""
    d = k % D
    t = k // D
    c = t % C
    t //= C
    b = t % B
    a = t // B
    return a, b, c, d


@functools.lru_cache(maxsize=None)
def tiled_conv_kernel(dtype: str, FB: int, BX: int, BY: int, R: int, epilogue: int):
    """Tiled valid convolution of ``x`` (N, C, H, W) with ``W`` (F, C, K, K).

    Grid ``(ceil(Wo / (BX R)), ceil(Ho / BY), n_patches x ceil(F / FB))``,
    block ``(BX, BY)``; dynamic shared memory for one channel's input tile and
    weights, and with MAXPOOL the reduction's FB x NT values and int32 indices
    after them (``cuda._tiled_conv_shared_bytes``). ``epilogue``: NONE writes z
    to ``out`` (N, F, Ho, Wo); RELU
    writes relu(z); MAXPOOL writes, per (patch, filter, block), the block's
    largest z and its flat index ``i * Wo + j`` to ``part_v``/``part_i``
    (N, F, n_blocks). ``n0`` is the first patch of this launch.
    """
    dt = _nbtype(dtype)
    NT = BX * BY                        # threads per block
    TW = BX * R                         # output tile width
    NACC = FB * R                       # accumulators per thread
    RED = FB if epilogue == MAXPOOL else 1
    ITEM_WORDS = np.dtype(dtype).itemsize // 4   # int32 words per value
    HALF = 1                            # largest power of two below NT
    while HALF * 2 < NT:
        HALF *= 2
    NEG_INF = -math.inf

    @cuda.jit
    def kernel(x, W, b, out, part_v, part_i, n0):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * BX + tx
        C, H, Wd = x.shape[1], x.shape[2], x.shape[3]
        F, K = W.shape[0], W.shape[2]
        Ho = H - K + 1
        Wo = Wd - K + 1
        n_groups = (F + FB - 1) // FB
        n = n0 + cuda.blockIdx.z // n_groups
        f0 = (cuda.blockIdx.z % n_groups) * FB
        i0 = cuda.blockIdx.y * BY
        j0 = cuda.blockIdx.x * TW

        # Dynamic shared memory: [input tile of one channel | FB x K x K weights
        # | MAXPOOL: RED x NT values | RED x NT int32 indices]. The reduction's
        # arrays live here rather than in static ``cuda.shared.array((RED, NT))``
        # arrays: the CUDA simulator creates a static shared array lazily, when
        # the first thread reaches it, and two threads that get there together
        # can each create their own, so that some threads' values are lost (a
        # race inside the simulator, not on a GPU; tests/cuda_sim shows it). The
        # dynamic block exists before any thread starts, on a GPU and in the simulator.
        smem = cuda.shared.array(0, dt)
        smem_i = cuda.shared.array(0, numba.int32)   # the same bytes, as int32
        tile_w = TW + K - 1
        w_off = (BY + K - 1) * tile_w       # the weights follow the input tile
        red_off = w_off + K * K * FB        # then the reduction's values ...
        red_i_off = (red_off + RED * NT) * ITEM_WORDS   # ... and indices (int32 words)

        acc = cuda.local.array(NACC, dt)    # acc[f * R + r]: filter f0+f, pixel r
        xv = cuda.local.array(R, dt)
        for k in range(NACC):
            acc[k] = 0

        for c in range(C):
            cuda.syncthreads()   # everyone is done with the previous channel's tile
            # 2-D strided loops (rather than one flat index split with // and %):
            # integer division is slow on a GPU.
            for row in range(ty, BY + K - 1, BY):
                y = i0 + row
                for col in range(tx, tile_w, BX):   # neighbouring threads read
                    xx = j0 + col                   # neighbouring addresses
                    if y < H and xx < Wd:
                        smem[row * tile_w + col] = x[n, c, y, xx]
                    else:
                        smem[row * tile_w + col] = 0   # beyond the image: feeds only unused outputs
            for p in range(ty, K, BY):          # weights in layout [p, q, f]:
                for q in range(tx, K, BX):      # one offset's FB weights side by side
                    for f in range(FB):
                        if f0 + f < F:
                            smem[w_off + (p * K + q) * FB + f] = W[f0 + f, c, p, q]
                        else:
                            smem[w_off + (p * K + q) * FB + f] = 0   # padding filter of the last group
            cuda.syncthreads()

            # The hot loop. ``xs`` and ``ws`` are views that start at this
            # offset's first input value and first weight; after the compiler
            # unrolls the constant-length r and f loops, their indices are
            # constants and each load is a plain shared-memory load (an index
            # that is a variable would cost a negative-index check per load).
            for p in range(K):
                for q in range(K):
                    xs = smem[(ty + p) * tile_w + tx + q:]
                    ws = smem[w_off + (p * K + q) * FB:]
                    for r in range(R):   # neighbouring threads: neighbouring words
                        xv[r] = xs[r * BX]
                    for f in range(FB):
                        w = ws[f]        # the same word for all threads: a broadcast
                        for r in range(R):
                            acc[f * R + r] += w * xv[r]

        i = i0 + ty
        if epilogue != MAXPOOL:
            if i < Ho:
                for f in range(FB):
                    if f0 + f < F:
                        bf = b[f0 + f]
                        for r in range(R):
                            j = j0 + tx + r * BX
                            if j < Wo:
                                v = acc[f * R + r] + bf
                                if epilogue == RELU and not (v > 0):
                                    out[n, f0 + f, i, j] = 0
                                else:
                                    out[n, f0 + f, i, j] = v
        else:
            red_v = smem[red_off:]          # red_v[f * NT + t]: filter f0+f, thread t
            red_i = smem_i[red_i_off:]
            # 1. each thread: the first maximum among its own pixels (r ascending
            #    means j ascending, so a strict ">" keeps the first one)
            for f in range(FB):
                bv = dt(NEG_INF)
                bi = _NO_INDEX
                if i < Ho and f0 + f < F:
                    bf = b[f0 + f]          # add the bias before comparing, as the
                    for r in range(R):      # reference does (rounding may create ties)
                        j = j0 + tx + r * BX
                        if j < Wo:
                            v = acc[f * R + r] + bf
                            if v > bv:
                                bv = v
                                bi = i * Wo + j
                red_v[f * NT + tid] = bv
                red_i[f * NT + tid] = bi
            cuda.syncthreads()
            # 2. the block: tree reduction of (value, index) pairs, all FB filters
            #    at once, slot t takes the better of t and t + s
            s = HALF
            while s > 0:
                for k in range(tid, FB * s, NT):
                    f = k // s
                    t = k - f * s
                    u = t + s
                    if u < NT:
                        v2 = red_v[f * NT + u]
                        i2 = red_i[f * NT + u]
                        v1 = red_v[f * NT + t]
                        if v2 > v1 or (v2 == v1 and i2 < red_i[f * NT + t]):
                            red_v[f * NT + t] = v2
                            red_i[f * NT + t] = i2
                cuda.syncthreads()
                s //= 2
            # 3. one partial per (patch, filter, block)
            blk = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x
            for f in range(tid, FB, NT):
                if f0 + f < F:
                    part_v[n, f0 + f, blk] = red_v[f * NT]
                    part_i[n, f0 + f, blk] = red_i[f * NT]

    return kernel


@functools.lru_cache(maxsize=None)
def finish_maxpool_kernel(dtype: str):
    """One thread per (patch, filter): reduce the block partials (N, F, B) to
    ``pooled = relu(max z)`` (N, F) and ``argmax`` (N, F) int64."""

    @cuda.jit
    def kernel(part_v, part_i, pooled, argmax):
        k = cuda.grid(1)
        N, F, B = part_v.shape[0], part_v.shape[1], part_v.shape[2]
        if k < N * F:
            n = k // F
            f = k - n * F
            bv = part_v[n, f, 0]
            bi = part_i[n, f, 0]
            for blk in range(1, B):
                v = part_v[n, f, blk]
                i = part_i[n, f, blk]
                if v > bv or (v == bv and i < bi):
                    bv = v
                    bi = i
            argmax[n, f] = bi
            if bv > 0:
                pooled[n, f] = bv
            else:
                pooled[n, f] = 0

    return kernel


@functools.lru_cache(maxsize=None)
def blockmax_kernel(dtype: str):
    """One thread per output (patch, filter, block row, block column): the largest
    z of its g x g block, then ReLU. ``z`` (N, F, Ho, Wo), ``out`` (N, F, Ho // g, Wo // g)."""

    @cuda.jit
    def kernel(z, g, out):
        k = cuda.grid(1)
        N, F, nr, nc = out.shape[0], out.shape[1], out.shape[2], out.shape[3]
        if k < N * F * nr * nc:
            n, f, bi, bj = _unravel4(k, F, nr, nc)
            top = z[n, f, bi * g, bj * g]
            for u in range(g):
                for v in range(g):
                    val = z[n, f, bi * g + u, bj * g + v]
                    if val > top:
                        top = val
            if top > 0:                  # ReLU after the max: the same value
                out[n, f, bi, bj] = top
            else:
                out[n, f, bi, bj] = 0

    return kernel


@functools.lru_cache(maxsize=None)
def sum_rows_kernel(dtype: str, RX: int, RY: int):
    """``out[e] = sum_r parts[r, e]`` in a fixed order (deterministic).

    Block (RX, RY): RX neighbouring columns (coalesced reads) times RY row
    lanes; lane ty sums rows ty, ty + RY, ...; the lanes are then added by a
    tree in shared memory (dynamic: RY x RX values, see :func:`tiled_conv_kernel`
    for why not a static array). Grid ceil(E / RX)."""
    dt = _nbtype(dtype)

    @cuda.jit
    def kernel(parts, out):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        e = cuda.blockIdx.x * RX + tx
        rows, E = parts.shape[0], parts.shape[1]
        red = cuda.shared.array(0, dt)      # red[lane * RX + column]
        s = dt(0)
        if e < E:
            for r in range(ty, rows, RY):
                s += parts[r, e]
        red[ty * RX + tx] = s
        cuda.syncthreads()
        h = RY // 2
        while h > 0:
            if ty < h:
                red[ty * RX + tx] += red[(ty + h) * RX + tx]
            cuda.syncthreads()
            h //= 2
        if ty == 0 and e < E:
            out[e] = red[tx]

    return kernel


@functools.lru_cache(maxsize=None)
def dense_grad_partials_kernel(dtype: str):
    """Per-patch partials of the dense conv weight/bias gradient.

    Grid (N, ceil((E + F) / threads)); ``parts`` (N, E + F) with E = F C K K:
    ``parts[n, (f,c,p,q)] = sum_{i,j} dout[n,f,i,j] x[n,c,i+p,j+q]``,
    ``parts[n, E + f] = sum_{i,j} dout[n,f,i,j]``. One thread per element."""
    dt = _nbtype(dtype)

    @cuda.jit
    def kernel(dout, x, K, parts):
        n = cuda.blockIdx.x       # patches along x: its grid limit is 2**31 - 1
        e = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        F, Ho, Wo = dout.shape[1], dout.shape[2], dout.shape[3]
        C = x.shape[1]
        E = F * C * K * K
        if e < E:
            f, c, p, q = _unravel4(e, C, K, K)
            s = dt(0)
            for i in range(Ho):
                for j in range(Wo):
                    s += dout[n, f, i, j] * x[n, c, i + p, j + q]
            parts[n, e] = s
        elif e < E + F:
            f = e - E
            s = dt(0)
            for i in range(Ho):
                for j in range(Wo):
                    s += dout[n, f, i, j]
            parts[n, e] = s

    return kernel


@functools.lru_cache(maxsize=None)
def dense_dx_kernel(dtype: str):
    """``dx[n,c,y,x] = sum_{f,p,q} dout[n,f,y-p,x-q] W[f,c,p,q]`` (inside the
    output). One thread per input pixel gathers; no atomics, no races."""
    dt = _nbtype(dtype)

    @cuda.jit
    def kernel(dout, W, dx):
        k = cuda.grid(1)
        N, C, H, Wd = dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3]
        F, K = W.shape[0], W.shape[2]
        Ho, Wo = dout.shape[2], dout.shape[3]
        if k < N * C * H * Wd:
            n, c, y, xx = _unravel4(k, C, H, Wd)
            p_lo = max(0, y - Ho + 1)      # i = y - p must lie in [0, Ho)
            p_hi = min(K - 1, y)
            q_lo = max(0, xx - Wo + 1)
            q_hi = min(K - 1, xx)
            s = dt(0)
            for f in range(F):
                for p in range(p_lo, p_hi + 1):
                    for q in range(q_lo, q_hi + 1):
                        s += dout[n, f, y - p, xx - q] * W[f, c, p, q]
            dx[n, c, y, xx] = s

    return kernel


@functools.lru_cache(maxsize=None)
def sparse_grad_partials_kernel(dtype: str):
    """Per-patch partials of the sparse weight/bias gradient of the fused
    conv + ReLU + global max pool.

    Grid (N, ceil((E + F) / threads)); ``parts`` (N, E + F), E = F C K K:
    ``parts[n, (f,c,p,q)] = g[n,f] x[n,c,i*+p,j*+q]`` with ``(i*, j*)`` the
    argmax of (n, f), and ``parts[n, E + f] = g[n, f]``."""

    @cuda.jit
    def kernel(g, argmax, x, K, parts):
        n = cuda.blockIdx.x
        e = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        F = g.shape[1]
        C, Wd = x.shape[1], x.shape[3]
        Wo = Wd - K + 1
        E = F * C * K * K
        if e < E:
            f, c, p, q = _unravel4(e, C, K, K)
            a = argmax[n, f]
            i = a // Wo
            j = a - i * Wo
            parts[n, e] = g[n, f] * x[n, c, i + p, j + q]
        elif e < E + F:
            parts[n, e] = g[n, e - E]

    return kernel


@functools.lru_cache(maxsize=None)
def sparse_dx_kernel(dtype: str):
    """``dx[n,c,y,x] = sum_f g[n,f] W[f,c,y-i*,x-j*]`` over the filters whose
    K x K window at their argmax covers (y, x). One thread per input pixel."""
    dt = _nbtype(dtype)

    @cuda.jit
    def kernel(g, argmax, W, dx):
        k = cuda.grid(1)
        N, C, H, Wd = dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3]
        F, K = W.shape[0], W.shape[2]
        Wo = Wd - K + 1
        if k < N * C * H * Wd:
            n, c, y, xx = _unravel4(k, C, H, Wd)
            s = dt(0)
            for f in range(F):
                a = argmax[n, f]
                p = y - a // Wo
                q = xx - a % Wo
                if p >= 0 and p < K and q >= 0 and q < K:
                    s += g[n, f] * W[f, c, p, q]
            dx[n, c, y, xx] = s

    return kernel


@functools.lru_cache(maxsize=None)
def conv1_grad_partials_kernel(dtype: str):
    """Per-window partials of conv1's weight and bias gradients (see the
    module docstring for the maths).

    Grid (N * F2, ceil((E1 + F1) / threads)): block column ``w = n * F2 + f2`` is
    the window of filter f2 in patch n; ``parts`` (N F2, E1 + F1) with
    E1 = F1 C0 K1 K1. ``x0`` (N, C0, H0, W0) the network input, ``a1``
    (N, F1, H1, W1) = relu(conv1), ``W2`` (F2, F1, K2, K2), ``g``/``argmax2``
    (N, F2) the conv2 pre-activation gradient and its position."""
    dt = _nbtype(dtype)

    @cuda.jit
    def kernel(g, argmax2, W2, a1, x0, K1, parts):
        w = cuda.blockIdx.x
        e = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        F2, F1, K2 = W2.shape[0], W2.shape[1], W2.shape[2]
        C0 = x0.shape[1]
        Wo2 = a1.shape[3] - K2 + 1
        n = w // F2
        f2 = w - n * F2
        E1 = F1 * C0 * K1 * K1
        if e >= E1 + F1:
            return
        gw = g[n, f2]
        if gw == 0:                  # ReLU closed or zero gradient: nothing flows
            parts[w, e] = 0
            return
        a = argmax2[n, f2]
        i = a // Wo2
        j = a - i * Wo2
        s = dt(0)
        if e < E1:
            f1, c, p, q = _unravel4(e, C0, K1, K1)
            for u in range(K2):
                for v in range(K2):
                    if a1[n, f1, i + u, j + v] > 0:
                        s += W2[f2, f1, u, v] * x0[n, c, i + u + p, j + v + q]
        else:
            f1 = e - E1
            for u in range(K2):
                for v in range(K2):
                    if a1[n, f1, i + u, j + v] > 0:
                        s += W2[f2, f1, u, v]
        parts[w, e] = gw * s

    return kernel
