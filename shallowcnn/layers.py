"""The network's layers, each with an explicit forward and backward pass.

The contract (shared by every layer; docs/design.md, "Layers"):

* ``params`` and ``grads`` are dicts with the same keys (empty for layers
  without parameters);
* ``forward(x, training=False)`` returns the output and stores what the
  backward pass needs;
* ``backward(dout)`` takes dL/d(output), returns dL/d(input) and *overwrites*
  (never accumulates) ``grads``.

Tensors are NCHW like PyTorch and CS231n. Every layer works in float32 (for
training) and float64 (for gradient checks): the dtype of the input is kept.
"""
from __future__ import annotations

import numpy as np

from .kernels import get_backend
from .recipe import PAPER


def glorot_uniform(rng: np.random.Generator, shape, fan_in: int, fan_out: int, dtype=np.float32):
    """Keras' default initialiser: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


class Layer:
    """Base class: no parameters, nothing cached."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x, training=False):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class Conv2D(Layer):
    """Valid 2-D cross-correlation, stride 1, with bias.

    x (N, C, H, W) -> out (N, F, H-K+1, W-K+1);
    ``out[n,f,i,j] = b[f] + sum_{c,p,q} W[f,c,p,q] x[n,c,i+p,j+q]``

    Parameters: ``W`` (F, C, K, K), ``b`` (F,). The arithmetic is done by the
    kernels of ``backend`` (numpy, numba, cuda, auto). ``need_dx=False`` (first
    layer of a network) skips the input gradient, which nobody uses.
    """

    def __init__(self, in_channels, out_channels, kernel_size=9, rng=None, dtype=np.float32,
                 backend="numpy", need_dx=True):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        K = kernel_size
        # Keras' Glorot for convolutions: fan_in = C*K*K, fan_out = F*K*K.
        self.params["W"] = glorot_uniform(rng, (out_channels, in_channels, K, K),
                                          in_channels * K * K, out_channels * K * K, dtype)
        self.params["b"] = np.zeros(out_channels, dtype=dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.kernels = get_backend(backend)
        self.need_dx = need_dx
        self._x = None

    @property
    def kernel_size(self):
        return self.params["W"].shape[2]

    def forward(self, x, training=False):
        self._x = x
        return self.kernels.conv2d_forward(x, self.params["W"], self.params["b"])

    def backward(self, dout):
        dx, dW, db = self.kernels.conv2d_backward(dout, self._x, self.params["W"], need_dx=self.need_dx)
        self.grads["W"][...] = dW
        self.grads["b"][...] = db
        return dx

    def __repr__(self):
        F, C, K, _ = self.params["W"].shape
        return f"Conv2D({C} -> {F}, {K}x{K})"


class ReLU(Layer):
    """out = max(x, 0); dL/dx = dL/dout where x > 0, else 0."""

    def forward(self, x, training=False):
        self._out = np.maximum(x, 0)          # keeps x's dtype
        return self._out

    def backward(self, dout):
        # out > 0 exactly where x > 0. Multiplying by the boolean mask is one fast
        # pass (np.where with a scalar 0 is several times slower on large arrays).
        return dout * (self._out > 0)


class GlobalMaxPool2D(Layer):
    """Maximum over all positions of each feature map.

    x (N, C, H, W) -> out (N, C); ``out[n,c] = max_{i,j} x[n,c,i,j]``.
    The gradient goes to the first maximum (row-major), and only there: the
    backward pass is a scatter of N * C numbers.
    """

    def forward(self, x, training=False):
        N, C, H, W = x.shape
        flat = x.reshape(N, C, H * W)
        self._shape = x.shape
        self._argmax = flat.argmax(axis=2)                       # (N, C) first maximum
        return np.take_along_axis(flat, self._argmax[:, :, None], axis=2)[:, :, 0]

    def backward(self, dout):
        N, C, H, W = self._shape
        dx = np.zeros((N, C, H * W), dtype=dout.dtype)
        np.put_along_axis(dx, self._argmax[:, :, None], dout[:, :, None], axis=2)
        return dx.reshape(self._shape)


class ConvReLUGlobalMaxPool(Layer):
    """Conv2D, ReLU and GlobalMaxPool2D fused into one layer.

    x (N, C, H, W) -> out (N, F); ``out[n,f] = max_{i,j} relu(conv(x)[n,f,i,j])``.

    It shares ``params`` and ``grads`` with the :class:`Conv2D` it wraps, so it
    can stand in for conv2, ReLU and the pool in a stack of layers. Only the maximum
    and its position are kept -- the (N, F, Ho, Wo) map is never stored -- and the
    backward pass follows one position per (n, f): that is where the fast
    backends win (docs/design.md, "Where the speed comes from").
    """

    def __init__(self, conv: Conv2D):
        super().__init__()
        self.conv = conv
        self.params = conv.params
        self.grads = conv.grads

    def forward(self, x, training=False):
        self._x = x
        self._pooled, self._argmax = self.conv.kernels.conv_relu_maxpool_forward(
            x, self.params["W"], self.params["b"])
        return self._pooled

    def backward(self, dout):
        dx, dW, db = self.conv.kernels.conv_relu_maxpool_backward(
            dout, self._x, self.params["W"], self._argmax, self._pooled, need_dx=self.conv.need_dx)
        self.grads["W"][...] = dW
        self.grads["b"][...] = db
        return dx

    def __repr__(self):
        return f"ConvReLUGlobalMaxPool({self.conv!r})"


class Dropout(Layer):
    """Inverted dropout: keep each unit with probability ``1 - p_drop``.

    Training: ``out = x * mask / (1 - p_drop)`` with ``mask ~ Bernoulli(1 - p_drop)``,
    so the expected output equals x and inference needs no rescaling.
    Inference: identity. The mask comes from ``rng`` (an ``np.random.Generator``).
    """

    def __init__(self, p_drop=PAPER.p_drop, rng=None):
        super().__init__()
        if not 0.0 <= p_drop < 1.0:
            raise ValueError(f"p_drop must be in [0, 1), got {p_drop}")
        self.p_drop = p_drop
        self.rng = np.random.default_rng(0) if rng is None else rng
        self._scale = None

    def forward(self, x, training=False):
        if not training or self.p_drop == 0.0:
            self._scale = None
            return x
        keep = 1.0 - self.p_drop
        mask = self.rng.random(x.shape) < keep
        self._scale = (mask / keep).astype(x.dtype)
        return x * self._scale

    def backward(self, dout):
        return dout if self._scale is None else dout * self._scale

    def __repr__(self):
        return f"Dropout(p_drop={self.p_drop})"


class Dense(Layer):
    """Fully connected layer: x (N, D) -> out (N, M); ``out = x @ W + b``.

    ``W`` is (D, M) as in Keras (PyTorch stores its transpose), ``b`` is (M,).
    """

    def __init__(self, in_features, out_features, rng=None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(0) if rng is None else rng
        self.params["W"] = glorot_uniform(rng, (in_features, out_features), in_features, out_features, dtype)
        self.params["b"] = np.zeros(out_features, dtype=dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x, training=False):
        self._x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads["W"][...] = self._x.T @ dout                  # (D, N) @ (N, M)
        self.grads["b"][...] = dout.sum(axis=0)
        return dout @ self.params["W"].T                          # (N, M) @ (M, D)

    def __repr__(self):
        D, M = self.params["W"].shape
        return f"Dense({D} -> {M})"


def sigmoid(z):
    """Numerically stable logistic function 1 / (1 + exp(-z)), any shape.

    For z < 0 we use exp(z) / (1 + exp(z)) so that exp never overflows.
    """
    z = np.asarray(z)
    e = np.exp(-np.abs(z))                                        # in (0, 1]: never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


class Sigmoid(Layer):
    """out = sigmoid(x); dL/dx = dL/dout * out * (1 - out)."""

    def forward(self, x, training=False):
        self._out = sigmoid(x)
        return self._out

    def backward(self, dout):
        return dout * self._out * (1 - self._out)
