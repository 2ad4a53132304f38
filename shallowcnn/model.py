"""ShallowCNN: the network of Luna-Lozoya et al. (paper section 3, Table 2).

    x (N, 1, H, W), H, W >= 17, 8-bit patch / 255
    conv1   6 filters 9x9, valid     -> (N, 6, H-8, W-8)       492 parameters
    ReLU
    conv2  16 filters 9x9, valid     -> (N, 16, H-16, W-16)  7,792 parameters
    ReLU
    global max pool                  -> (N, 16)
    dropout (p_drop = 0.2, training only)
    dense  16 -> 1                   -> (N,) logit               17 parameters
    sigmoid                          -> probability of a microcalcification cluster

The model returns *logits*; the loss fuses the sigmoid (losses.py) and
:meth:`ShallowCNN.predict_proba` applies it for users.

Two ways to compute the feature stack (conv1 ... global max pool):

* ``fused=False`` -- the textbook stack of five layers, each with its dense
  backward (the default with the numpy backend: the reference to read);
* ``fused=True`` (the default with numba and cuda) -- the whole stack in one
  call of the backend (:class:`BackendFeatures`; every backend provides
  ``features_forward/backward``, see :mod:`shallowcnn.kernels`). The numpy one
  runs the same layers in a row; numba sends the sparse gradient of the max
  pool straight into conv1's weights; cuda also keeps the activations on the GPU.
All give the same numbers (tests/test_model.py, tests/test_backends.py).
"""
from __future__ import annotations

import numpy as np

from . import __version__
from .constants import pixels_to_input
from .kernels import get_backend, resolve_backend_name
from .layers import Conv2D, Dense, Dropout, GlobalMaxPool2D, Layer, ReLU, sigmoid
from .recipe import PAPER
from .storage import StoreError, load_npz, save_npz

MODEL_KIND = "shallowcnn.model"
PARAM_NAMES = ("conv1.W", "conv1.b", "conv2.W", "conv2.b", "dense.W", "dense.b")
# Bounds checked before any weight is allocated (the paper: 9x9 kernels, 6 and 16 filters).
MAX_KERNEL_SIZE = 31
MAX_CHANNELS = 256
MODEL_MAX_BYTES = 64 << 20   # per array of a model file; the paper's model holds 33 KB
DTYPES = ("float32", "float64")


def check_architecture(channels, kernel_size, p_drop, dtype) -> tuple:
    """``(channels (c1, c2), kernel_size, p_drop, dtype)`` checked against the bounds above.

    Raises ValueError saying which value is wrong, before anything is allocated (a file
    claiming kernel_size 2000 would otherwise take gigabytes).
    """
    try:
        channels = tuple(channels)
    except TypeError:
        raise ValueError(f"channels {str(channels)[:40]} is not a pair of numbers") from None
    whole = [isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in channels]
    if len(channels) != 2 or not all(whole) or not all(1 <= c <= MAX_CHANNELS for c in channels):
        raise ValueError(f"channels {str(channels)[:40]} must be two whole numbers in 1..{MAX_CHANNELS}")
    if (not isinstance(kernel_size, (int, np.integer)) or isinstance(kernel_size, bool)
            or not 1 <= kernel_size <= MAX_KERNEL_SIZE):
        raise ValueError(f"kernel_size {str(kernel_size)[:40]} must be a whole number in 1..{MAX_KERNEL_SIZE}")
    if isinstance(p_drop, bool) or not isinstance(p_drop, (int, float, np.number)) or not 0 <= p_drop < 1:
        raise ValueError(f"p_drop {str(p_drop)[:40]} must be a number in [0, 1)")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype {str(dtype)[:40]} is not one of {', '.join(DTYPES)}") from None
    if dtype.name not in DTYPES:
        raise ValueError(f"dtype {dtype.name[:40]} is not one of {', '.join(DTYPES)}")
    return (int(channels[0]), int(channels[1])), int(kernel_size), float(p_drop), dtype


class BackendFeatures(Layer):
    """The whole feature stack (conv1, ReLU, fused conv2 + ReLU + max pool) in one
    call of the backend: x (N, 1, H, W) -> pooled (N, 16).

    The backend's ``features_forward`` / ``features_backward`` see all of it, so
    they can go further than layer by layer (numpy does not: it is the reference): numba sends the sparse gradient
    straight to conv1's weights without building the dense (N, 6, 136, 136)
    gradient of conv1's output; cuda also keeps the activations on the GPU, so
    only the pooled features and the weight gradients cross to the host.
    """

    def __init__(self, conv1: Conv2D, conv2: Conv2D):
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.kernels = conv1.kernels

    def forward(self, x, training=False):
        p1, p2 = self.conv1.params, self.conv2.params
        pooled, self._ctx = self.kernels.features_forward(x, p1["W"], p1["b"], p2["W"], p2["b"])
        return pooled

    def backward(self, dout):
        dW1, db1, dW2, db2 = self.kernels.features_backward(dout, self._ctx)
        self.conv1.grads["W"][...] = dW1
        self.conv1.grads["b"][...] = db1
        self.conv2.grads["W"][...] = dW2
        self.conv2.grads["b"][...] = db2
        return None


class ShallowCNN:
    """The paper's network with explicit forward and backward passes.

    Parameters
    ----------
    backend : "numpy" | "numba" | "cuda" | "auto"
        Which kernels compute the convolutions (never a silent fallback).
    seed : int
        Seeds Glorot-uniform initialisation (zero biases) and the dropout masks.
    p_drop : float
        Dropout probability (the paper keeps 80%: 0.2).
    dtype : np.float32 (training) or np.float64 (gradient checks).
    fused : bool or None
        The whole feature stack in one backend call; None picks it for every backend but numpy.
    channels, kernel_size : the paper's (6, 16) and 9; other values make a
        smaller network for experiments.

    Parameters and gradients are reachable by name in :attr:`params` and
    :attr:`grads` (``"conv1.W"``, ``"conv1.b"``, ``"conv2.W"``, ``"conv2.b"``,
    ``"dense.W"``, ``"dense.b"``); the arrays are the layers' own, so writing
    into them (``model.params["conv1.W"][...] = W``) changes the model.
    """

    def __init__(self, backend="numpy", seed=0, p_drop=PAPER.p_drop, dtype=np.float32, fused=None,
                 channels=PAPER.channels, kernel_size=PAPER.kernel_size):
        channels, kernel_size, p_drop, dtype = check_architecture(channels, kernel_size, p_drop, dtype)
        self.backend = resolve_backend_name(backend)
        self.kernels = get_backend(self.backend)
        self.dtype = dtype
        self.seed = seed
        self.p_drop = p_drop
        self.channels = channels
        self.kernel_size = kernel_size
        self.fused = (self.backend != "numpy") if fused is None else bool(fused)
        init_rng, dropout_rng = np.random.default_rng(seed).spawn(2)

        c1, c2 = self.channels
        K = self.kernel_size
        self.conv1 = Conv2D(1, c1, K, rng=init_rng, dtype=self.dtype, backend=self.backend, need_dx=False)
        self.relu1 = ReLU()
        self.conv2 = Conv2D(c1, c2, K, rng=init_rng, dtype=self.dtype, backend=self.backend)
        self.relu2 = ReLU()
        self.pool = GlobalMaxPool2D()
        self.dropout = Dropout(p_drop, rng=dropout_rng)
        self.dense = Dense(c2, 1, rng=init_rng, dtype=self.dtype)

        if self.fused:
            self.features = [BackendFeatures(self.conv1, self.conv2)]
        else:
            self.features = [self.conv1, self.relu1, self.conv2, self.relu2, self.pool]
        self.head = [self.dropout, self.dense]

        named = {"conv1": self.conv1, "conv2": self.conv2, "dense": self.dense}
        self.params = {f"{ln}.{pn}": layer.params[pn] for ln, layer in named.items() for pn in ("W", "b")}
        self.grads = {f"{ln}.{pn}": layer.grads[pn] for ln, layer in named.items() for pn in ("W", "b")}

    # ---------------------------------------------------------------- shapes
    @property
    def min_input_size(self) -> int:
        """Smallest H and W the network accepts: two valid KxK convolutions need 2K - 1."""
        return 2 * self.kernel_size - 1

    def as_input(self, x) -> np.ndarray:
        """Check and convert an input batch to (N, 1, H, W) in the model's dtype.

        uint8 input is taken as 8-bit pixels and divided by 255
        (:func:`shallowcnn.constants.pixels_to_input`, the paper's scaling).
        """
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected input of shape (N, 1, H, W) or (N, H, W), got {x.shape}")
        if x.shape[2] < self.min_input_size or x.shape[3] < self.min_input_size:
            raise ValueError(f"input {x.shape[2]}x{x.shape[3]} is smaller than the "
                             f"{self.min_input_size}x{self.min_input_size} minimum of this network")
        if x.dtype == np.uint8:
            x = pixels_to_input(x, self.dtype)
        return np.ascontiguousarray(x, dtype=self.dtype)

    # ------------------------------------------------------ forward/backward
    def features_forward(self, x, training=False) -> np.ndarray:
        """x (N, 1, H, W) -> the 16 globally max-pooled features (N, 16)."""
        h = self.as_input(x)
        for layer in self.features:
            h = layer.forward(h, training)
        return h

    def head_forward(self, features, training=False) -> np.ndarray:
        """Pooled features (..., F) -> logits (...) through dropout and the dense layer.

        ``logit = sum_f dense.W[f, 0] * feature[f] + dense.b[0]`` (dropout is the identity
        unless ``training``). Any leading shape: the scan feeds (windows, F).
        """
        features = np.asarray(features)
        h = features.reshape(-1, features.shape[-1])
        for layer in self.head:
            h = layer.forward(h, training)
        return h[:, 0].reshape(features.shape[:-1])

    def forward(self, x, training=False) -> np.ndarray:
        """x (N, 1, H, W) -> logits (N,). ``training`` switches dropout on."""
        return self.head_forward(self.features_forward(x, training), training)

    def backward(self, dlogits) -> None:
        """dL/dlogits (N,) -> fills :attr:`grads` (overwritten, never accumulated)."""
        d = np.asarray(dlogits, dtype=self.dtype)[:, None]
        for layer in reversed(self.features + self.head):
            d = layer.backward(d)

    def predict_proba(self, x, batch_size=64) -> np.ndarray:
        """Probabilities of "cluster present", (N,), in batches to bound memory."""
        x = np.asarray(x)
        if x.ndim not in (3, 4):
            raise ValueError(f"expected input of shape (N, 1, H, W) or (N, H, W), got {x.shape}")
        out = [sigmoid(self.forward(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, dtype=self.dtype)

    def predict(self, x, threshold=PAPER.threshold, batch_size=64) -> np.ndarray:
        """Class labels (N,) uint8: 1 where the probability is >= threshold (the paper's 0.5)."""
        return (self.predict_proba(x, batch_size) >= threshold).astype(np.uint8)

    # ------------------------------------------------------------ parameters
    def n_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def set_params(self, params: dict) -> None:
        """Copy named arrays into the model (shapes must match; dtype is converted)."""
        for name, value in params.items():
            if name not in self.params:
                raise KeyError(f"unknown parameter {name!r}; expected one of {', '.join(self.params)}")
            value = np.asarray(value)
            if value.shape != self.params[name].shape:
                raise ValueError(f"{name}: shape {value.shape} does not match {self.params[name].shape}")
            self.params[name][...] = value

    def summary(self, input_size=144) -> str:
        """The per-layer table of the paper's Table 2, with output shapes."""
        K = self.kernel_size
        s1, s2 = input_size - K + 1, input_size - 2 * (K - 1)
        c1, c2 = self.channels
        rows = [
            ("Input", f"(N, 1, {input_size}, {input_size})", 0),
            (f"Convolution 1 ({c1} x {K}x{K})", f"(N, {c1}, {s1}, {s1})", self.conv1.params["W"].size + c1),
            ("ReLU", f"(N, {c1}, {s1}, {s1})", 0),
            (f"Convolution 2 ({c2} x {K}x{K})", f"(N, {c2}, {s2}, {s2})", self.conv2.params["W"].size + c2),
            ("ReLU", f"(N, {c2}, {s2}, {s2})", 0),
            ("Global max pooling", f"(N, {c2})", 0),
            (f"Dropout (p_drop {self.p_drop:g})", f"(N, {c2})", 0),
            (f"Dense ({c2} -> 1)", "(N, 1)", self.dense.params["W"].size + 1),
            ("Sigmoid", "(N, 1)", 0),
        ]
        w = max(len(r[0]) for r in rows) + 2
        lines = [f"{'Type of layer':<{w}}{'Output shape':<22}{'Parameters':>10}", "-" * (w + 32)]
        lines += [f"{name:<{w}}{shape:<22}{n:>10,}" for name, shape, n in rows]
        lines += ["-" * (w + 32), f"{'Total':<{w}}{'':<22}{self.n_params():>10,}",
                  f"backend: {self.backend}{' (fused conv2 + ReLU + max pool)' if self.fused else ''}, "
                  f"dtype: {self.dtype.name}"]
        return "\n".join(lines)

    def __repr__(self):
        return (f"ShallowCNN(backend={self.backend!r}, channels={self.channels}, "
                f"kernel_size={self.kernel_size}, params={self.n_params():,})")

    # -------------------------------------------------------------- save/load
    def architecture(self) -> dict:
        return {"name": "ShallowCNN", "channels": list(self.channels), "kernel_size": self.kernel_size,
                "p_drop": self.p_drop, "dtype": self.dtype.name, "n_params": self.n_params()}

    def save(self, path, metadata: dict | None = None):
        """Write the weights to ``path`` (.npz, atomically) with JSON metadata:
        architecture, package version and whatever ``metadata`` adds (e.g. the
        training settings). Weights that are not all finite are refused (ValueError)."""
        bad = [name for name, value in self.params.items() if not np.all(np.isfinite(value))]
        if bad:
            raise ValueError(f"{path}: not saved, weights {', '.join(bad)} hold NaN or infinite values")
        meta = {"kind": MODEL_KIND, "version": __version__, "architecture": self.architecture(),
                "seed": self.seed}
        meta.update(metadata or {})
        return save_npz(path, self.params, meta)

    @classmethod
    def load(cls, path, backend="numpy", fused=None):
        """Read a model written by :meth:`save`; refuses foreign or damaged files
        with a :class:`~shallowcnn.storage.StoreError` naming the file."""
        arrays, meta = load_npz(path, kind=MODEL_KIND, max_bytes=MODEL_MAX_BYTES)
        arch = meta.get("architecture")
        if not isinstance(arch, dict):
            raise StoreError(f"{path}: metadata has no 'architecture' object")
        try:
            missing = [k for k in ("channels", "kernel_size", "p_drop", "dtype") if k not in arch]
            if missing:
                raise ValueError(f"it lacks {', '.join(missing)}")
            seed = meta.get("seed", 0)
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                raise ValueError(f"seed {str(seed)[:40]} is not a non-negative whole number")
            model = cls(backend=backend, seed=seed, p_drop=arch["p_drop"], dtype=arch["dtype"], fused=fused,
                        channels=arch["channels"], kernel_size=arch["kernel_size"])
        except ValueError as e:
            raise StoreError(f"{path}: architecture metadata is invalid: {e}") from None
        check_weights(path, arrays, model)
        model.set_params({n: arrays[n] for n in PARAM_NAMES})
        model.metadata = meta
        return model


def check_weights(path, arrays: dict, model: ShallowCNN, prefix: str = "") -> None:
    """Refuse (StoreError naming ``path``) weights that are missing, of the wrong shape,
    not numbers, or not finite once stored in the model's dtype (a float64 1e48 becomes
    inf in float32). ``prefix``: "model." or "best." in a checkpoint."""
    missing = [prefix + n for n in PARAM_NAMES if prefix + n not in arrays]
    if missing:
        raise StoreError(f"{path}: missing parameters {', '.join(missing)}")
    for name in PARAM_NAMES:
        value = arrays[prefix + name]
        if value.shape != model.params[name].shape:
            raise StoreError(f"{path}: {prefix}{name} has shape {value.shape}, "
                             f"expected {model.params[name].shape}")
        if value.dtype.kind not in "fiu":
            raise StoreError(f"{path}: {prefix}{name} holds {value.dtype} values, not numbers")
        with np.errstate(over="ignore", invalid="ignore"):
            stored = value.astype(model.dtype)
        if not np.all(np.isfinite(stored)):
            raise StoreError(f"{path}: {prefix}{name} holds NaN or infinite values "
                             f"(in {model.dtype.name})")
