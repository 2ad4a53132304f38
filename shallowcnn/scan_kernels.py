"""A fused Numba kernel for scanning: conv2 + ReLU + g x g block maxima in one pass.

Scanning needs, of the 16-channel conv2 map of a tile, only its g x g block maxima
(:mod:`shallowcnn.scan`). Computing the map with ``conv2d_forward`` and reducing it
afterwards writes and re-reads 16 x T x T floats (16 MB for a 512 x 512 tile); here each
output row is reduced while it is still in the cache, and the full map never exists.

    z[n, f, i, j]      = b[f] + sum_{c, p, q} W[f, c, p, q] x[n, c, i + p, j + q]
    out[n, f, bi, bj]  = relu( max_{0 <= u, v < g} z[n, f, bi*g + u, bj*g + v] )

How the work is split: one parallel task per (tile n, block row bi) -- disjoint outputs,
so no two threads ever write the same element. Within a task, for each of its g output
rows and each chunk of ``CHUNK`` columns, four filters are accumulated at once: every
input value loaded feeds four multiply-adds (DESIGN.md section 5: "four filters per pass
sharing each input row"), and the innermost loop runs along j, contiguous in memory, so
LLVM vectorises it. The chunk keeps the 4 x CHUNK accumulators in the L1 cache.

Tested against the reference (``conv2d_forward`` then block max) in tests/test_scan.py.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

CHUNK = 128   # output columns per accumulator chunk: 4 filters x 128 x 4 bytes = 2 KB


@njit(parallel=True, cache=True, fastmath={"contract"})
def _conv_relu_blockmax(x, W, b, g, out):
    # W and b are padded with zero filters to a multiple of 4; out has the real F.
    # "contract" lets LLVM fuse a * b + c into one FMA instruction (one rounding
    # instead of two: differences of ~1e-7, far below the 1e-5 the tests ask).
    N, C, H, Wd = x.shape
    K = W.shape[2]
    F = out.shape[1]
    Ho, Wo = H - K + 1, Wd - K + 1
    nbr, nbc = Ho // g, Wo // g
    for task in prange(N * nbr):
        n, bi = task // nbr, task % nbr
        # four separate 1-D accumulators (not rows of one 2-D array): LLVM then sees
        # that they cannot overlap each other or x, and vectorises the j loop
        a0 = np.empty(CHUNK, dtype=x.dtype)
        a1 = np.empty(CHUNK, dtype=x.dtype)
        a2 = np.empty(CHUNK, dtype=x.dtype)
        a3 = np.empty(CHUNK, dtype=x.dtype)
        best = np.full((W.shape[0], nbc), -np.inf, dtype=x.dtype)   # block maxima of this block row
        for i in range(bi * g, bi * g + g):                          # the g output rows of block row bi
            for f0 in range(0, W.shape[0], 4):
                for j0 in range(0, nbc * g, CHUNK):
                    width = min(CHUNK, nbc * g - j0)
                    a0[:] = b[f0]
                    a1[:] = b[f0 + 1]
                    a2[:] = b[f0 + 2]
                    a3[:] = b[f0 + 3]
                    for c in range(C):
                        for p in range(K):
                            row = x[n, c, i + p, j0:]                # input row i + p from column j0
                            for q in range(K):
                                w0 = W[f0, c, p, q]
                                w1 = W[f0 + 1, c, p, q]
                                w2 = W[f0 + 2, c, p, q]
                                w3 = W[f0 + 3, c, p, q]
                                for j in range(width):               # contiguous: vectorised
                                    v = row[j + q]
                                    a0[j] += w0 * v
                                    a1[j] += w1 * v
                                    a2[j] += w2 * v
                                    a3[j] += w3 * v
                    # fold the finished chunk of row i into its blocks (a chunk may split a block)
                    for j in range(width):
                        bj = (j0 + j) // g
                        if a0[j] > best[f0, bj]:
                            best[f0, bj] = a0[j]
                        if a1[j] > best[f0 + 1, bj]:
                            best[f0 + 1, bj] = a1[j]
                        if a2[j] > best[f0 + 2, bj]:
                            best[f0 + 2, bj] = a2[j]
                        if a3[j] > best[f0 + 3, bj]:
                            best[f0 + 3, bj] = a3[j]
        for f in range(F):
            for bj in range(nbc):
                top = best[f, bj]
                out[n, f, bi, bj] = top if top > 0 else 0                # ReLU after the max: same value


def conv_relu_blockmax(x, W, b, g: int) -> np.ndarray:
    """Valid convolution, ReLU and g x g block maxima, without storing the convolution.

    x (N, C, H, W), W (F, C, K, K), b (F,), g >= 1 ->
    out (N, F, (H-K+1) // g, (W-K+1) // g), ``out = relu(blockmax_g(conv(x, W) + b))``

    Rows and columns of the convolution beyond the last whole block are not computed.
    """
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    W = np.ascontiguousarray(W, dtype=dtype)
    b = np.ascontiguousarray(b, dtype=dtype)
    if x.ndim != 4 or W.ndim != 4 or x.shape[1] != W.shape[1]:
        raise ValueError(f"expected x (N, C, H, W) and W (F, C, K, K), got {x.shape} and {W.shape}")
    K = W.shape[2]
    Ho, Wo = x.shape[2] - K + 1, x.shape[3] - K + 1
    if Ho < g or Wo < g:
        raise ValueError(f"convolution output {Ho} x {Wo} holds no whole {g} x {g} block")
    F = W.shape[0]
    F4 = -(-F // 4) * 4                       # pad to whole groups of four filters
    W4 = np.zeros((F4,) + W.shape[1:], dtype=dtype)
    W4[:F] = W
    b4 = np.zeros(F4, dtype=dtype)
    b4[:F] = b
    out = np.empty((x.shape[0], F, Ho // g, Wo // g), dtype=dtype)
    _conv_relu_blockmax(x, W4, b4, int(g), out)
    return out
