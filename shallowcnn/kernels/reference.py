"""The reference kernels: plain NumPy, written to be read, and the truth that
every fast path is tested against.

Convolution here is what deep-learning frameworks call it: a *valid*
cross-correlation, stride 1, no padding::

    out[n, f, i, j] = b[f] + sum_{c, p, q} W[f, c, p, q] * x[n, c, i + p, j + q]

Instead of seven nested Python loops (far too slow) we loop over the K * K
kernel offsets ``(p, q)`` and, for each, multiply a shifted view of the whole
input by the (F, C) matrix ``W[:, :, p, q]`` -- one matrix product per offset.
"""
from __future__ import annotations

import numpy as np


def _check_shapes(x, W):
    """Shape checks shared by every backend (len(shape), so device arrays pass too)."""
    if len(x.shape) != 4 or len(W.shape) != 4:
        raise ValueError(f"expected x (N, C, H, W) and W (F, C, K, K), got {x.shape} and {W.shape}")
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels but W expects {W.shape[1]}")
    if W.shape[2] != W.shape[3]:
        raise ValueError(f"kernels must be square, got {W.shape[2]}x{W.shape[3]}")
    K = W.shape[2]
    if x.shape[2] < K or x.shape[3] < K:
        raise ValueError(f"input {x.shape[2]}x{x.shape[3]} is smaller than the {K}x{K} kernel")


def conv2d_forward(x, W, b):
    """Valid cross-correlation.

    x (N, C, H, W), W (F, C, K, K), b (F,) -> out (N, F, H-K+1, W-K+1)
    ``out[n,f,i,j] = b[f] + sum_{c,p,q} W[f,c,p,q] x[n,c,i+p,j+q]``
    """
    _check_shapes(x, W)
    N, C, H, Wd = x.shape
    F, _, K, _ = W.shape
    Ho, Wo = H - K + 1, Wd - K + 1
    out = np.zeros((N, F, Ho, Wo), dtype=np.result_type(x, W))
    for p in range(K):
        for q in range(K):
            window = x[:, :, p:p + Ho, q:q + Wo]                  # (N, C, Ho, Wo)
            # sum over c of W[f, c, p, q] * window[n, c, i, j]
            out += np.einsum("fc,nchw->nfhw", W[:, :, p, q], window, optimize=True)
    out += b.reshape(1, F, 1, 1)
    return out


def conv2d_backward(dout, x, W, need_dx=True):
    """Gradients of the valid cross-correlation.

    dout (N, F, Ho, Wo), x (N, C, H, W), W (F, C, K, K) ->
    dx (N, C, H, W) or None, dW (F, C, K, K), db (F,)

    ``dW[f,c,p,q] = sum_{n,i,j} dout[n,f,i,j] x[n,c,i+p,j+q]``
    ``dx[n,c,i+p,j+q] += sum_f dout[n,f,i,j] W[f,c,p,q]`` (a "full" convolution)
    ``db[f] = sum_{n,i,j} dout[n,f,i,j]``
    """
    _check_shapes(x, W)
    F, C, K, _ = W.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    dW = np.zeros_like(W)
    dx = np.zeros_like(x) if need_dx else None
    for p in range(K):
        for q in range(K):
            window = x[:, :, p:p + Ho, q:q + Wo]
            dW[:, :, p, q] = np.einsum("nfhw,nchw->fc", dout, window, optimize=True)
            if need_dx:
                dx[:, :, p:p + Ho, q:q + Wo] += np.einsum("fc,nfhw->nchw", W[:, :, p, q], dout, optimize=True)
    db = dout.sum(axis=(0, 2, 3))
    return dx, dW, db


def conv_relu_maxpool_forward(x, W, b):
    """Convolution, ReLU and global max pooling in one call (dense, for reference).

    x (N, C, H, W), W (F, C, K, K), b (F,) -> pooled (N, F), argmax (N, F) int64

    ``pooled[n,f] = max_{i,j} relu(z[n,f,i,j])`` with z the convolution;
    ``argmax[n,f]`` is the flat index ``i * Wo + j`` of the first maximum of z.
    Since relu is monotonic, max(relu(z)) = relu(max(z)).
    """
    z = conv2d_forward(x, W, b)
    N, F = z.shape[:2]
    flat = z.reshape(N, F, -1)
    argmax = flat.argmax(axis=2).astype(np.int64)
    zmax = np.take_along_axis(flat, argmax[:, :, None], axis=2)[:, :, 0]
    return np.maximum(zmax, 0), argmax


def conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled, need_dx=True):
    """Backward of :func:`conv_relu_maxpool_forward`.

    dpooled (N, F), x (N, C, H, W), W (F, C, K, K), argmax and pooled (N, F) ->
    dx (N, C, H, W) or None, dW (F, C, K, K), db (F,)

    The gradient reaches z only at the argmax of each (n, f) and only where the
    ReLU was open (pooled > 0). Here we build that (mostly zero) dz densely and
    reuse :func:`conv2d_backward`; the fast backends exploit the sparsity.
    """
    N, C, H, Wd = x.shape
    F, _, K, _ = W.shape
    Ho, Wo = H - K + 1, Wd - K + 1
    dz = np.zeros((N, F, Ho * Wo), dtype=np.result_type(dpooled, x))
    open_ = pooled > 0
    n_idx, f_idx = np.nonzero(open_)
    dz[n_idx, f_idx, argmax[n_idx, f_idx]] = dpooled[n_idx, f_idx]
    return conv2d_backward(dz.reshape(N, F, Ho, Wo), x, W, need_dx=need_dx)
