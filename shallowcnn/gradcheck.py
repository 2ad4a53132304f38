"""Gradient checking: compare each backward pass with centred differences.

For a scalar function L(w), the centred difference

    dL/dw_i  ~  (L(w + h e_i) - L(w - h e_i)) / (2 h)

has error O(h^2) (the one-sided difference has O(h)). In float64 with
h = 1e-5 the truncation error (~h^2 = 1e-10) and the rounding error
(~1e-16 / h = 1e-11) are both tiny, so a correct analytic gradient agrees to
about 1e-8 or better in relative error

    rel_error(a, b) = max_i |a_i - b_i| / max(1e-8, |a_i| + |b_i|)

(CS231n's measure). Where ReLU or max are involved a perturbation can cross a
kink, so we accept up to 1e-5 there. In float32 the rounding error alone is
about 1e-7 / h: never gradient-check in float32.

To check a layer with output ``out`` we use the scalar ``L = sum(out * R)`` for
a fixed random ``R``: then dL/dout = R, which is what we feed to ``backward``.
"""
from __future__ import annotations

import sys

import numpy as np

from .layers import (Conv2D, ConvReLUGlobalMaxPool, Dense, Dropout, GlobalMaxPool2D, ReLU, Sigmoid)
from .losses import BinaryCrossEntropy, BinaryCrossEntropyWithLogits
from .model import ShallowCNN
from .options import non_negative_int, whole_number_in

SMOOTH_BOUND = 1e-7   # linear and smooth functions
KINK_BOUND = 1e-5     # functions with ReLU or max inside


def rel_error(a, b) -> float:
    """Largest elementwise relative error |a - b| / max(1e-8, |a| + |b|)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f, x: np.ndarray, indices=None, h=1e-5) -> np.ndarray:
    """Centred-difference gradient of the scalar function ``f()`` w.r.t. ``x``.

    ``x`` is perturbed in place (and restored), so ``f`` must read it. With
    ``indices`` (a list of flat indices) only those entries are computed and an
    array of len(indices) is returned; otherwise the full gradient, shaped as x.
    """
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64, got {x.dtype}")
    flat = x.reshape(-1)  # a view: writing into it changes x
    chosen = range(flat.size) if indices is None else indices
    grad = np.zeros(len(chosen), dtype=np.float64)
    for k, i in enumerate(chosen):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        grad[k] = (plus - minus) / (2 * h)
    return grad.reshape(x.shape) if indices is None else grad


def _sample(rng, size, max_entries):
    if max_entries is None or size <= max_entries:
        return list(range(size))
    return sorted(rng.choice(size, max_entries, replace=False).tolist())


def check_layer(layer, x, seed=0, max_entries=None, reset=None) -> dict:
    """Relative errors of a layer's input and parameter gradients.

    layer: any layer of :mod:`shallowcnn.layers` holding float64 parameters;
    x: float64 input. ``reset`` (optional) is called before every forward pass,
    e.g. to give Dropout the same mask each time. Returns ``{"x": err,
    "W": err, ...}`` (``"x"`` is left out when the layer returns no dx).
    """
    rng = np.random.default_rng(seed)
    reset = reset or (lambda: None)
    reset()
    out = layer.forward(x, training=True)
    R = rng.standard_normal(out.shape)

    def loss():
        reset()
        return float(np.sum(layer.forward(x, training=True) * R))

    reset()
    layer.forward(x, training=True)
    dx = layer.backward(R)
    analytic = {name: g.copy() for name, g in layer.grads.items()}
    errors = {}
    targets = ([("x", x, dx)] if dx is not None else []) + \
              [(name, layer.params[name], analytic[name]) for name in layer.params]
    for name, array, grad in targets:
        idx = _sample(rng, array.size, max_entries)
        num = numerical_gradient(loss, array, idx)
        errors[name] = rel_error(grad.reshape(-1)[idx], num)
    return errors


def check_loss(loss, pred, y) -> float:
    """Relative error of a loss's gradient w.r.t. its prediction input."""
    loss.forward(pred, y)
    analytic = loss.backward()
    num = numerical_gradient(lambda: loss.forward(pred, y), pred)
    return rel_error(analytic, num)


def check_model(model, x, y, seed=0, max_entries=None) -> dict:
    """Relative error of every named parameter's gradient of the model's loss
    (binary cross-entropy on logits, dropout on with a fixed mask)."""
    if model.dtype != np.float64:
        raise TypeError("build the model with dtype=np.float64 for a gradient check")
    rng = np.random.default_rng(seed)
    bce = BinaryCrossEntropyWithLogits()

    def reset():
        model.dropout.rng = np.random.default_rng(seed)

    def loss():
        reset()
        return bce.forward(model.forward(x, training=True), y)

    loss()
    model.backward(bce.backward())
    analytic = {name: g.copy() for name, g in model.grads.items()}
    errors = {}
    for name, param in model.params.items():
        idx = _sample(rng, param.size, max_entries)
        errors[name] = rel_error(analytic[name].reshape(-1)[idx], numerical_gradient(loss, param, idx))
    return errors


def run_all(backend="numpy", seed=0, max_entries=40, size=21):
    """Check every layer, both losses and the whole model in float64.

    Returns rows ``(component, quantity, rel_error, bound)``. Shapes are small
    (``size`` x ``size`` inputs) so that the check takes seconds.
    """

    rng = np.random.default_rng(seed)
    f64 = np.float64
    rows = []

    def add(component, errors, bound):
        rows.extend((component, name, err, bound) for name, err in errors.items())

    x_img = rng.random((2, 1, size, size))
    conv1 = Conv2D(1, 6, 9, rng=rng, dtype=f64, backend=backend)
    add(f"Conv2D 1->6 9x9 ({backend})", check_layer(conv1, x_img, seed, max_entries), SMOOTH_BOUND)
    h1 = rng.standard_normal((2, 6, size - 8, size - 8))
    conv2 = Conv2D(6, 16, 9, rng=rng, dtype=f64, backend=backend)
    add(f"Conv2D 6->16 9x9 ({backend})", check_layer(conv2, h1, seed, max_entries), SMOOTH_BOUND)
    add(f"Conv+ReLU+GlobalMaxPool ({backend})",
        check_layer(ConvReLUGlobalMaxPool(conv2), h1, seed, max_entries), KINK_BOUND)
    # Keep ReLU inputs away from the kink at 0 so that x +- h never crosses it.
    z = rng.standard_normal((3, 4, 5, 5))
    z = np.where(np.abs(z) < 1e-3, 0.5, z)
    add("ReLU", check_layer(ReLU(), z, seed, max_entries), KINK_BOUND)
    add("GlobalMaxPool2D", check_layer(GlobalMaxPool2D(), rng.standard_normal((3, 4, 5, 5)), seed), KINK_BOUND)
    dropout = Dropout(0.2)

    def same_mask():
        dropout.rng = np.random.default_rng(seed)
    add("Dropout (p_drop 0.2)", check_layer(dropout, rng.standard_normal((5, 16)), seed, reset=same_mask),
        SMOOTH_BOUND)
    add("Dense 16->1", check_layer(Dense(16, 1, rng=rng, dtype=f64), rng.standard_normal((5, 16)), seed),
        SMOOTH_BOUND)
    add("Sigmoid", check_layer(Sigmoid(), rng.standard_normal((5, 3)) * 3, seed), SMOOTH_BOUND)
    y = (rng.random(6) < 0.5).astype(f64)
    rows.append(("BinaryCrossEntropy (probabilities)", "p",
                 check_loss(BinaryCrossEntropy(), rng.uniform(0.05, 0.95, 6), y), SMOOTH_BOUND))
    rows.append(("BinaryCrossEntropy (fused, logits)", "z",
                 check_loss(BinaryCrossEntropyWithLogits(), rng.standard_normal(6) * 4, y), SMOOTH_BOUND))
    model = ShallowCNN(backend=backend, seed=seed, dtype=f64)
    x = rng.random((2, 1, size, size))
    add(f"ShallowCNN ({backend}{', fused' if model.fused else ''})",
        check_model(model, x, np.array([0.0, 1.0]), seed, max_entries), KINK_BOUND)
    return rows


def format_report(rows) -> str:
    w = max(len(r[0]) for r in rows) + 2
    lines = [f"{'component':<{w}}{'gradient':<10}{'rel. error':>12}{'bound':>10}  result"]
    for component, name, err, bound in rows:
        lines.append(f"{component:<{w}}{name:<10}{err:>12.2e}{bound:>10.0e}  {'ok' if err <= bound else 'FAIL'}")
    return "\n".join(lines)


def add_command(subparsers):
    p = subparsers.add_parser(
        "gradcheck", help="check every backward pass against centred differences (float64)",
        description="Gradient check of every layer, both losses and every parameter of the "
                    "model, in float64 with centred differences. Exits with status 1 if any "
                    "relative error exceeds its bound (1e-7 smooth, 1e-5 with ReLU or max).")
    p.add_argument("--backend", default="numpy", choices=("numpy", "numba", "cuda", "auto"),
                   help="kernels to check: numpy, numba, cuda or auto (default numpy)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for inputs and weights, >= 0 (default 0)")
    p.add_argument("--entries", type=non_negative_int, default=40,
                   help="entries checked per array, chosen at random (default 40; 0 = all)")
    p.add_argument("--size", type=whole_number_in(17, 256, "input side"), default=21,
                   help="input height and width, 17..256 (default 21)")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    from .kernels import BackendUnavailable

    if args.size < 17:
        print("shallowcnn gradcheck: error: argument --size: must be at least 17 (two valid 9x9 convolutions)",
              file=sys.stderr)
        return 2
    try:
        rows = run_all(args.backend, args.seed, args.entries or None, args.size)
    except BackendUnavailable as e:
        print(f"shallowcnn gradcheck: error: {e}", file=sys.stderr)
        return 2
    print(format_report(rows))
    failed = [r for r in rows if not r[2] <= r[3]]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
