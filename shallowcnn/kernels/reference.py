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

from . import check_shapes


def conv2d_forward(x, W, b, relu=False):
    """Valid cross-correlation; with ``relu=True`` its ReLU.

    x (N, C, H, W), W (F, C, K, K), b (F,) -> out (N, F, H-K+1, W-K+1)
    ``out[n,f,i,j] = b[f] + sum_{c,p,q} W[f,c,p,q] x[n,c,i+p,j+q]`` (``max(out, 0)`` when relu)
    """
    check_shapes(x, W)
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
    if relu:
        np.maximum(out, 0, out=out)
    return out


def conv2d_backward(dout, x, W, need_dx=True):
    """Gradients of the valid cross-correlation.

    dout (N, F, Ho, Wo), x (N, C, H, W), W (F, C, K, K) ->
    dx (N, C, H, W) or None, dW (F, C, K, K), db (F,)

    ``dW[f,c,p,q] = sum_{n,i,j} dout[n,f,i,j] x[n,c,i+p,j+q]``
    ``dx[n,c,i+p,j+q] += sum_f dout[n,f,i,j] W[f,c,p,q]`` (a "full" convolution)
    ``db[f] = sum_{n,i,j} dout[n,f,i,j]``
    """
    check_shapes(x, W)
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


def features_forward(x, W1, b1, W2, b2):
    """The network's feature stack, layer after layer (the truth for the fast ones).

    x (N, C0, H, W), W1 (F1, C0, K1, K1), b1 (F1,), W2 (F2, F1, K2, K2), b2 (F2,) ->
    pooled (N, F2), ctx

    ``h1 = relu(conv1(x))``; ``pooled = max_{i,j} relu(conv2(h1))``. ``ctx`` keeps
    x, h1, the argmax and pooled for :func:`features_backward`.
    """
    check_shapes(x, W1)
    h1 = np.maximum(conv2d_forward(x, W1, b1), 0)
    pooled, argmax = conv_relu_maxpool_forward(h1, W2, b2)
    ctx = {"x": x, "h1": h1, "W1": W1, "W2": W2, "argmax": argmax, "pooled": pooled}
    return pooled, ctx


def features_backward(dpooled, ctx):
    """Gradients of :func:`features_forward`: dpooled (N, F2) -> dW1, db1, dW2, db2.

    The chain rule backwards through the stack: the max pool's gradient (dense,
    see :func:`conv_relu_maxpool_backward`), conv1's ReLU (gradient only where
    h1 > 0), then conv1 (no dx: the input needs none).
    """
    x, h1 = ctx["x"], ctx["h1"]
    dh1, dW2, db2 = conv_relu_maxpool_backward(dpooled, h1, ctx["W2"], ctx["argmax"], ctx["pooled"])
    dz1 = dh1 * (h1 > 0)
    _, dW1, db1 = conv2d_backward(dz1, x, ctx["W1"], need_dx=False)
    return dW1, db1, dW2, db2


def conv_relu_blockmax(x, W, b, g):
    """Convolution, ReLU and g x g block maxima (what scanning needs of conv2).

    x (N, C, H, W), W (F, C, K, K), b (F,), g >= 1 -> out (N, F, Ho // g, Wo // g)
    ``out[n,f,bi,bj] = relu(max_{0<=u,v<g} z[n,f,bi*g+u,bj*g+v])``, z the convolution;
    rows and columns of z past the last whole block are dropped. Here z is computed
    whole and reduced by a reshape; the fast backends never store it.
    """
    z = conv2d_forward(x, W, b)
    N, F, Ho, Wo = z.shape
    g = int(g)
    if Ho < g or Wo < g:
        raise ValueError(f"convolution output {Ho} x {Wo} holds no whole {g} x {g} block")
    nr, nc = Ho // g, Wo // g
    out = z[:, :, :nr * g, :nc * g].reshape(N, F, nr, g, nc, g).max(axis=(3, 5))
    return np.maximum(out, 0, out=out)      # ReLU after the max: the same value
