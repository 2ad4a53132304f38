"""Grading for the tutorial exercises: run a student's function, compare, say what is wrong.

Each ``check_*`` function below grades one exercise of ``tutorials/exercises/``: it calls the
student's function on small random inputs (float64, fixed seed), compares the answer with an
*oracle* computed here in a different way from the worked solution (sliding windows and
``einsum`` instead of loops, ``logaddexp`` instead of the fused formula, plain floats for
Adam), and returns quietly when it agrees. When it does not, it raises :class:`ExerciseFailed`
(an ``AssertionError``) whose message names the array, the first wrong index, the relative
error, how many entries are wrong, and -- when the answer equals a classic mistake computed
alongside (a flipped or transposed kernel, a missing 1/N, Adam without bias correction) --
the likely cause.

The module lives in the package, not beside the notebooks, so that a student notebook can
``from shallowcnn import grading`` wherever it is opened, so that ``shallowcnn grade`` calls
these same checks (never the notebook's own check cells), and so that the tests can plant
wrong answers and check the messages (``tests/test_exercises.py``).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RTOL = 1e-7          # float64 answers computed in another order agree to ~1e-15; this leaves room


class ExerciseFailed(AssertionError):
    """A graded answer is wrong; the message says where and, if it can, why."""


def _fail(exercise: str, lines) -> None:
    raise ExerciseFailed("\n".join([f"Exercise {exercise} is not right yet.", *lines]))


def _close(a, b, rtol=RTOL) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.isfinite(a))) and \
        bool(np.all(np.abs(a - b) <= rtol * np.maximum(np.abs(b), 1e-3 * (np.abs(b).max() + 1e-300))))


def compare(exercise: str, name: str, got, want, suspects=(), rtol: float = RTOL, hint: str = ""):
    """Grade ``got`` against the oracle ``want``; ``suspects``: (classic wrong answer, its cause) pairs.

    The relative error of an entry is |got - want| / max(|want|, a floor of 1e-3 times the
    largest |want|), so that entries that should be near zero are judged on the array's scale.
    """
    want = np.asarray(want, np.float64)
    if got is None:
        _fail(exercise, [f"{name}: your function returned None -- is a `return` missing?"])
    got_arr = np.asarray(got, np.float64)
    if got_arr.shape != want.shape:
        line = f"{name}: shape {got_arr.shape}, expected {want.shape}."
        if got_arr.shape == want.shape[::-1]:
            line += " It is the transpose of the right shape: did you transpose a product?"
        _fail(exercise, [line] + [hint] * bool(hint))
    bad = ~np.isfinite(got_arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        _fail(exercise, [(f"{name}: {int(bad.sum())} entries are NaN or infinite, the first at index {idx} "
                         f"(expected {want[idx]:.6g}). Something overflowed or divided by zero.")]
              + [hint] * bool(hint))
    scale = np.maximum(np.abs(want), 1e-3 * (np.abs(want).max() + 1e-300))
    rel = np.abs(got_arr - want) / scale
    wrong = rel > rtol
    if not wrong.any():
        return float(rel.max()) if rel.size else 0.0
    idx = tuple(int(i) for i in np.argwhere(wrong)[0])
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(rel)), rel.shape)) if rel.ndim else ()
    lines = [(f"{name}: {int(wrong.sum())} of {wrong.size} entries are wrong. The first at index {idx}: "
             f"got {got_arr[idx]:.8g}, expected {want[idx]:.8g}; largest relative error {rel.max():.2e} "
             f"at index {worst} (allowed {rtol:.0e}).")]
    causes = [cause for answer, cause in suspects if _close(got_arr, answer)]
    if causes:
        lines.append("Likely cause: " + causes[0])
    elif not got_arr.any() and want.any():
        lines.append("Likely cause: every entry is 0 -- nothing reached the result (an array that was never "
                     "filled in, or a computation on a copy that was then thrown away?).")
    elif got_arr.size > 1 and np.ptp(want) > 0 and _close(got_arr, want * _factor(got_arr, want)):
        lines.append(f"Likely cause: your answer is the right one times {_factor(got_arr, want):.6g}"
                     " -- a missing or extra factor (1/N? 2? a learning rate?).")
    if hint:
        lines.append(hint)
    _fail(exercise, lines)


def _factor(got, want) -> float:
    """The least-squares factor c with got ~ c * want."""
    return float(got.ravel() @ want.ravel() / (want.ravel() @ want.ravel()))


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# Notebook 2: the forward convolution


def conv2d_oracle(x, W, b):
    """Valid cross-correlation by sliding windows: x (N, C, H, W), W (F, C, K, K) -> (N, F, Ho, Wo)."""
    K = W.shape[2]
    windows = sliding_window_view(x, (K, K), axis=(2, 3))          # (N, C, Ho, Wo, K, K)
    return np.einsum("nchwpq,fcpq->nfhw", windows, W) + b[None, :, None, None]


def check_conv2d_forward(fn, exercise="2.1"):
    """``fn(x, W, b)`` -> out (N, F, H-K+1, W-K+1), on 2 images, 3 channels, 4 filters of 3 x 3."""
    rng = _rng(21)
    x, W, b = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    got = fn(x.copy(), W.copy(), b.copy())
    suspects = [(conv2d_oracle(x, W[:, :, ::-1, ::-1], b),
                 ("you flipped the kernel (a mathematician's convolution, x[i-p, j-q]); the layer computes "
                 "x[i+p, j+q] with the filter as it is.")),
                (conv2d_oracle(x, W.transpose(0, 1, 3, 2), b),
                 "the kernel is transposed: W[f, c, p, q] pairs with x[n, c, i+p, j+q] (p with rows, q with columns)."),
                (conv2d_oracle(x, W, 0 * b), "the bias b[f] is missing."),
                (conv2d_oracle(x, W, b) - b[None, :, None, None] + b.sum(), ("the bias of every filter is added "
                 "to every map (b.sum() instead of b[f]).")),
                (conv2d_oracle(x[:, :1].repeat(3, 1), W, b), "only channel 0 is used: sum over c as well.")]
    return compare(exercise, "out", got, conv2d_oracle(x, W, b), suspects)


# ---------------------------------------------------------------------------------------------
# Notebook 3: backward through convolution, ReLU and global max pooling


def conv2d_dW_oracle(dout, x, K):
    """dW[f, c, p, q] = sum over n, i, j of dout[n, f, i, j] x[n, c, i+p, j+q]."""
    return np.einsum("nfhw,nchwpq->fcpq", dout, sliding_window_view(x, (K, K), axis=(2, 3)))


def conv2d_dx_oracle(dout, W):
    """dx as a full cross-correlation of the zero-padded dout with the filters rotated by 180 degrees."""
    K = W.shape[2]
    padded = np.pad(dout, ((0, 0), (0, 0), (K - 1, K - 1), (K - 1, K - 1)))
    return np.einsum("nfhwpq,fcpq->nchw", sliding_window_view(padded, (K, K), axis=(2, 3)), W[:, :, ::-1, ::-1])


def _conv_problem(seed):
    rng = _rng(seed)
    x, W = rng.standard_normal((2, 3, 7, 8)), rng.standard_normal((4, 3, 3, 3))
    return x, W, rng.standard_normal((2, 4, 5, 6))


def check_conv2d_dW(fn, exercise="3.1"):
    """``fn(dout, x, W)`` -> (dW (F, C, K, K), db (F,))."""
    x, W, dout = _conv_problem(31)
    got = fn(dout.copy(), x.copy(), W.copy())
    if not isinstance(got, tuple) or len(got) != 2:
        _fail(exercise, ["return two arrays: dW, db"])
    dW, db = conv2d_dW_oracle(dout, x, 3), dout.sum(axis=(0, 2, 3))
    compare(exercise, "dW", got[0], dW, [
        (dW[:, :, ::-1, ::-1], "dW is flipped: dW[f, c, p, q] pairs dout[n, f, i, j] with x[n, c, i+p, j+q]."),
        (dW.transpose(0, 1, 3, 2), "dW is transposed in (p, q): p goes with the rows i, q with the columns j."),
        (dW / 2, "dW is divided by the batch size N: the gradient of a sum over the batch is a sum.")])
    compare(exercise, "db", got[1], db, [(db / (2 * 5 * 6), "db is a mean; it is the *sum* of dout over n, i, j.")])


def check_conv2d_dx(fn, exercise="3.2"):
    """``fn(dout, W, x_shape)`` -> dx (N, C, H, W)."""
    x, W, dout = _conv_problem(32)
    got = fn(dout.copy(), W.copy(), x.shape)
    dx = conv2d_dx_oracle(dout, W)
    return compare(exercise, "dx", got, dx, [
        (conv2d_dx_oracle(dout, W[:, :, ::-1, ::-1]),
         ("the filters are flipped: window (i, j) of dx receives dout[n, f, i, j] * W[f] exactly as W is "
         "(a flip appears only if you write dx as a correlation of the padded dout).")),
        (conv2d_dx_oracle(dout, W.transpose(0, 1, 3, 2)), "the kernel is transposed in (p, q).")])


def check_relu_backward(fn, exercise="3.3"):
    """``fn(dout, z)`` -> dz, with exact zeros in z (the package's slope there is 0)."""
    rng = _rng(33)
    z = rng.standard_normal((3, 5))
    z[0, :2] = 0.0
    dout = rng.standard_normal((3, 5))
    got = fn(dout.copy(), z.copy())
    return compare(exercise, "dz", got, dout * (z > 0), [
        (dout * (z >= 0), "at z == 0 the slope is taken as 0 (use z > 0, not z >= 0)."),
        ((z > 0).astype(float), "the mask alone: multiply it by the upstream gradient dout."),
        (dout * np.maximum(z, 0), "dout times relu(z): the backward pass needs the *slope* [z > 0], not the value.")])


def maxpool_backward_oracle(dpooled, x):
    """One-hot at the first (row-major) maximum of every map."""
    N, C, H, W = x.shape
    flat = x.reshape(N, C, H * W)
    dx = np.zeros_like(flat)
    np.put_along_axis(dx, flat.argmax(axis=2)[..., None], dpooled[..., None], axis=2)
    return dx.reshape(x.shape)


def check_global_maxpool_backward(fn, exercise="3.4"):
    """``fn(dpooled (N, C), x (N, C, H, W))`` -> dx (N, C, H, W), with a tie in one map."""
    rng = _rng(34)
    x = rng.standard_normal((2, 3, 4, 5))
    x[1, 2, 0, 3] = x[1, 2, 3, 1] = x[1, 2].max() + 1.0             # a tie: the first one wins
    dpooled = rng.standard_normal((2, 3))
    got = fn(dpooled.copy(), x.copy())
    want = maxpool_backward_oracle(dpooled, x)
    ties = (x == x.max(axis=(2, 3), keepdims=True)) * dpooled[:, :, None, None]
    return compare(exercise, "dx", got, want, [
        (ties, "every tied maximum receives the gradient; send it to the first one only (argmax)."),
        (np.broadcast_to(dpooled[:, :, None, None], x.shape), ("dpooled[n, c] went to every position of the "
         "map; only the position of the maximum influenced the output, so only it receives the gradient.")),
        (np.broadcast_to(dpooled[:, :, None, None] / 20, x.shape), "that is the backward of *average* pooling."),
        (maxpool_backward_oracle(np.ones_like(dpooled), x), "the one-hot mask alone: put dpooled[n, c] there.")])


def check_sparse_backward(fn, exercise="3.5"):
    """``fn(dpooled, x, W, argmax, pooled)`` -> (dx, dW, db) of conv + ReLU + global max pool."""
    rng = _rng(35)
    x, W, b = rng.standard_normal((3, 2, 8, 9)), rng.standard_normal((5, 2, 3, 3)), rng.standard_normal(5)
    z = conv2d_oracle(x, W, b)
    z[0, 1] = -np.abs(z[0, 1]) - 0.1                                 # one map the ReLU closes
    N, F, _, _ = z.shape
    argmax, pooled = z.reshape(N, F, -1).argmax(2), np.maximum(z.reshape(N, F, -1).max(2), 0)
    dpooled = rng.standard_normal((N, F))
    dz = maxpool_backward_oracle(dpooled * (pooled > 0), z)
    got = fn(dpooled.copy(), x.copy(), W.copy(), argmax.copy(), pooled.copy())
    if not isinstance(got, tuple) or len(got) != 3:
        _fail(exercise, ["return three arrays: dx, dW, db"])
    dz_open = maxpool_backward_oracle(dpooled, z)
    names = ("dx", "dW", "db")
    wants = (conv2d_dx_oracle(dz, W), conv2d_dW_oracle(dz, x, 3), dz.sum(axis=(0, 2, 3)))
    opened = (conv2d_dx_oracle(dz_open, W), conv2d_dW_oracle(dz_open, x, 3), dz_open.sum(axis=(0, 2, 3)))
    for name, g, w, o in zip(names, got, wants, opened):
        compare(exercise, name, g, w, [(o, ("a map whose maximum is <= 0 was closed by the ReLU: skip it "
                                           "(pooled[n, f] <= 0)."))])


# ---------------------------------------------------------------------------------------------
# Notebook 4: the dense layer and the loss


def check_dense_backward(fn, exercise="4.1"):
    """``fn(G (N, M), X (N, D), W (D, M))`` -> (dX, dW, db)."""
    rng = _rng(41)
    X, W, G = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    got = fn(G.copy(), X.copy(), W.copy())
    if not isinstance(got, tuple) or len(got) != 3:
        _fail(exercise, ["return three arrays: dX, dW, db"])
    dX = np.einsum("nm,dm->nd", G, W)
    dW = np.einsum("nd,nm->dm", X, G)
    db = np.einsum("nm->m", G)
    compare(exercise, "dX", got[0], dX, hint="dX has the shape of X, (N, D): G (N, M) times W transposed.")
    compare(exercise, "dW", got[1], dW, [(dW / 5, "dW is divided by N: the batch's 1/N is already in G.")],
            hint="dW has the shape of W, (D, M): X transposed times G.")
    compare(exercise, "db", got[2], db, [(db / 5, "db is a mean; it is the sum of G over the batch.")])


def _sigmoid_oracle(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))            # another formula than the package's


def check_bce_with_logits(fn, exercise="4.2"):
    """``fn(z (N,), y (N,))`` -> (loss, dz), on moderate logits and on -800, -110, 17 and 800."""
    z = np.array([-2.0, 0.3, 4.0, -800.0, -110.0, 17.0, 800.0, 0.0])
    y = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    with np.errstate(all="ignore"):
        got = fn(z.copy(), y.copy())
    if not isinstance(got, tuple) or len(got) != 2:
        _fail(exercise, ["return two things: the loss (a float) and dz (an array like z)"])
    N = len(z)
    loss = float(np.mean(np.logaddexp(0.0, z) - z * y))
    dz = (_sigmoid_oracle(z) - y) / N
    stable = "Use the stable form max(z, 0) - z y + log(1 + exp(-|z|)), whose exponent is never positive."
    p = _sigmoid_oracle(z)
    clipped = [(float(np.mean(-(y * np.log(np.clip(p, eps, 1 - eps))
                               + (1 - y) * np.log(np.clip(1 - p, eps, 1 - eps))))),
                f"that is the textbook loss on p = sigmoid(z) clipped to [{eps:g}, 1 - {eps:g}]: finite, but wrong "
                "(and with zero gradient) for the very patches the network gets most wrong. " + stable)
               for eps in (1e-7, 1e-8, 1e-12, 1e-15, 1e-16, 1e-300)]
    clipped += [(float(np.mean(-(y * np.log(np.clip(p, eps, 1 - eps))
                                + (1 - y) * np.log(1 - np.clip(p, eps, 1 - eps))))),
                 f"that is the textbook loss on p = sigmoid(z) clipped to [{eps:g}, 1 - {eps:g}]: finite, but wrong "
                 "(and with zero gradient) for the very patches the network gets most wrong. " + stable)
                for eps in (1e-7, 1e-8, 1e-12, 1e-15, 1e-16)]
    compare(exercise, "loss", got[0], loss,
            [(loss * N, "the loss is summed; the paper's Eq. 5 averages it (1/N).")] + clipped,
            hint=stable if not np.isfinite(np.asarray(got[0], float)).all() else "")
    compare(exercise, "dz", got[1], dz, [
        (dz * N, "dz is missing the 1/N of the mean: (sigmoid(z) - y) / N."),
        (-dz, "the sign is flipped: the gradient is prediction minus label, sigmoid(z) - y."),
        (np.where(np.abs(z) > 50, 0.0, dz), "the gradient vanishes for large |z|: was p clipped before the log?")],
        hint=stable if not np.isfinite(np.asarray(got[1], float)).all() else "")


# ---------------------------------------------------------------------------------------------
# Notebook 5: gradient checking


def check_rel_error(fn, exercise="5.1"):
    """``fn(a, b)`` -> the largest |a - b| / max(1e-8, |a| + |b|)."""
    cases = [((1.0, 1.001), 0.001 / 2.001), ((0.0, 0.0), 0.0), ((1e-10, 2e-10), 0.01),
             ((np.array([1.0, 3.0, -2.0]), np.array([1.0, 3.3, -2.0])), 0.3 / 6.3),
             ((np.array([1.0, 0.5, -3.0]), np.array([-1.0, 0.5, -3.5])), 1.0)]     # opposite signs: |a+b| = 0
    for (a, b), want in cases:
        with np.errstate(all="ignore"):
            got = fn(a, b)
        if got is None or not np.isscalar(got) and np.ndim(got) != 0:
            _fail(exercise, [f"rel_error({a!r}, {b!r}) must return one number (the worst entry), got {got!r}."])
        if not np.isfinite(got):
            _fail(exercise, [(f"rel_error({a!r}, {b!r}) = {got}: the floor max(1e-8, |a| + |b|) keeps the "
                             "denominator away from zero.")])
        if abs(got - want) > 1e-12 * max(1.0, want):
            a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
            d = np.abs(a_ - b_)
            causes = [(np.max(d / np.maximum(1e-8, np.abs(a_ + b_))),
                       "you divided by |a + b|; divide by |a| + |b| (with opposite signs |a + b| can be 0)."),
                      (np.max(d / np.maximum(1e-8, np.abs(a_))), "you divided by |a| only; divide by |a| + |b|."),
                      (np.max(d / np.maximum(1e-8, np.maximum(np.abs(a_), np.abs(b_)))),
                       "you divided by max(|a|, |b|); divide by their sum |a| + |b|."),
                      (np.mean(d / np.maximum(1e-8, np.abs(a_) + np.abs(b_))),
                       "you took the mean over the entries; take the largest (np.max).")]
            cause = next((c for v, c in causes if abs(got - v) <= 1e-9 * max(1.0, abs(v))), "")
            _fail(exercise, [f"rel_error({a!r}, {b!r}) = {got!r}, expected {want!r}."]
                  + ([f"Likely cause: {cause}"] if cause else []))


def check_numerical_gradient(fn, exercise="5.2"):
    """``fn(f, x, h)`` -> the centred-difference gradient of the scalar ``f()`` w.r.t. x (perturbed in place)."""
    rng = _rng(52)
    x = rng.standard_normal((3, 4))
    R = rng.standard_normal((3, 4))
    x0 = x.copy()
    f = lambda: float(np.sum(np.sin(x) * R))
    h = 1e-5
    got = fn(f, x, h)
    if not np.array_equal(x, x0):
        _fail(exercise, [("x is not restored after the gradient: set x[idx] back to its old value after "
                         "the two evaluations (the caller's array must be left as it was).")])
    exact = np.cos(x0) * R
    if got is not None and np.shape(got) == x0.shape and not np.any(got):
        _fail(exercise, ["gradient: every entry is 0, so the loss never changed when you nudged x.",
                         ("Likely cause: you nudged a copy (x.copy(), np.array(x), x + h, ...); f() reads the "
                         "caller's array, so change x[idx] itself, in place, and put it back afterwards.")])
    one_sided = np.zeros_like(x0)
    for idx in np.ndindex(x0.shape):
        xp = x0.copy()
        xp[idx] += h
        one_sided[idx] = (np.sum(np.sin(xp) * R) - np.sum(np.sin(x0) * R)) / h
    return compare(exercise, "gradient", got, exact, [
        (2 * exact, "the difference is divided by h instead of 2h."),
        (one_sided, "that is the one-sided difference (f(x+h) - f(x)) / h; use (f(x+h) - f(x-h)) / 2h.")],
        rtol=1e-8)


# ---------------------------------------------------------------------------------------------
# Notebook 6: Adam and dropout


def adam_oracle(w, grads, lr, b1, b2, eps, bias_correction=True, eps_inside=False, first_t=1):
    """Adam on one float per coordinate, with Python floats (and three classic variants: no bias
    correction, epsilon in the paper's place, and a step count shifted by ``first_t``)."""
    w, m, v = [float(a) for a in np.ravel(w)], None, None
    out = []
    for t, g in enumerate(grads, start=first_t):
        g = [float(a) for a in np.ravel(g)]
        m = [(1 - b1) * gi + b1 * (m[i] if m else 0.0) for i, gi in enumerate(g)]
        v = [(1 - b2) * gi * gi + b2 * (v[i] if v else 0.0) for i, gi in enumerate(g)]
        for i in range(len(w)):
            if not bias_correction:
                w[i] -= lr * m[i] / (v[i] ** 0.5 + eps)
            elif eps_inside:                                   # the paper's form: m_hat / (sqrt(v_hat) + eps)
                w[i] -= lr * (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)) ** 0.5 + eps)
            else:                                              # Keras' form
                w[i] -= lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t) * m[i] / (v[i] ** 0.5 + eps)
        out.append(list(w))
    return np.array(out)


def check_adam_step(fn, exercise="6.1"):
    """``fn(w, g, m, v, t, lr, beta1, beta2, eps)`` updates w, m, v in place (t = 1, 2, ...)."""
    rng = _rng(61)
    shape, lr, b1, b2, eps = (2, 3), 0.01, 0.9, 0.999, 1e-3
    w0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) * s for s in (1.0, 0.5, 2.0, 0.1)]
    w, m, v = w0.copy(), np.zeros(shape), np.zeros(shape)
    path = []
    for t, g in enumerate(grads, start=1):
        fn(w, g.copy(), m, v, t, lr, b1, b2, eps)
        path.append(w.copy())
    want = adam_oracle(w0, grads, lr, b1, b2, eps).reshape(len(grads), *shape)
    variants = [(adam_oracle(w0, grads, lr, b1, b2, eps, bias_correction=False),
                 ("no bias correction: multiply the step by sqrt(1 - beta2^t) / (1 - beta1^t); without it the "
                 "first step is 3.2 times too large.")),
                (adam_oracle(w0, grads, lr, b1, b2, eps, eps_inside=True),
                 ("epsilon sits in the paper's place, m_hat / (sqrt(v_hat) + eps); use Keras' form "
                 "lr_t * m / (sqrt(v) + eps), as the package does.")),
                (adam_oracle(w0, grads, lr, b1, b2, eps, first_t=2),
                 ("the bias correction uses t + 1: the caller already counts the steps from t = 1, so use "
                 "beta1 ** t and beta2 ** t as they are."))]
    got = np.array(path)
    if np.array_equal(got[-1], w0):
        _fail(exercise, ["w did not change: update it in place (w -= step), since the caller keeps its array."])
    suspects = [(a.reshape(got.shape), c) for a, c in variants]
    if np.allclose(m, 0) and np.allclose(v, 0):
        _fail(exercise, [("m and v are still zero after four steps: update the moment arrays in place "
                         "(m *= beta1; m += (1 - beta1) * g), so that they survive between steps.")])
    return compare(exercise, "w after steps 1-4", got, want, suspects, rtol=1e-9,
                   hint="" if np.isfinite(got).all() else "With t = 1 the correction divides by 1 - beta1 ** t = 0.1; "
                   "a division by zero means t - 1 somewhere.")


def check_dropout(fn, exercise="6.2"):
    """``fn(x, p_drop, rng)`` -> out: keep where rng.random(x.shape) < 1 - p_drop, and scale by 1 / (1 - p_drop)."""
    rng = _rng(62)
    x = rng.standard_normal((4, 16))
    p = 0.25
    got = fn(x.copy(), p, np.random.default_rng(7))
    u = np.random.default_rng(7).random(x.shape)
    keep = u < 1 - p
    return compare(exercise, "out", got, np.where(keep, x / (1 - p), 0.0), [
        (np.where(keep, x, 0.0), ("the survivors are not scaled: inverted dropout divides them by 1 - p_drop, "
                                 "so that the expected output equals x and inference needs no change.")),
        (np.where(keep, x / p, 0.0), "the survivors are divided by p_drop; divide by the keep probability 1 - p_drop."),
        (np.where(u < p, x / (1 - p), 0.0), "you keep the units with u < p_drop: keep those with u < 1 - p_drop."),
        (np.where(u >= p, x / (1 - p), 0.0), ("you keep the units with u >= p_drop: right in distribution, but not "
         "the same units as the layer's u < 1 - p_drop, so the same generator gives another mask (and every "
         "comparison with the package fails). Keep u < 1 - p_drop.")),
        (np.where(keep, x * (1 - p), 0.0), ("that is 'standard' dropout's inference scaling; inverted dropout "
                                           "divides by 1 - p_drop during training."))])


# ---------------------------------------------------------------------------------------------
# Notebook 7: one training step, and a network that can overfit one batch


def check_training_step(fn, exercise="7.1"):
    """``fn(model, opt, loss_fn, xb, yb)`` -> loss; must equal ``shallowcnn.train.train_step`` exactly."""
    from ..losses import BinaryCrossEntropyWithLogits
    from ..model import ShallowCNN
    from ..optim import Adam
    from ..train import train_step

    rng = _rng(71)
    xb, yb = rng.random((4, 1, 24, 24)), np.array([1.0, 0.0, 1.0, 0.0])
    make = lambda: ShallowCNN(dtype=np.float64, seed=3, channels=(3, 4), kernel_size=5)

    def step_first(model, opt, loss_fn, xb, yb):          # the classic slip: the update uses stale gradients
        loss = loss_fn.forward(model.forward(xb, training=True), yb)
        opt.step(model.grads)
        model.backward(loss_fn.backward())
        return loss

    def no_dropout(model, opt, loss_fn, xb, yb):
        loss = loss_fn.forward(model.forward(xb, training=False), yb)
        model.backward(loss_fn.backward())
        opt.step(model.grads)
        return loss

    def two_steps(step):
        model = make()
        opt = Adam(model.params, lr=1e-2)
        losses = [step(model, opt, BinaryCrossEntropyWithLogits(), xb, yb) for _ in range(2)]
        return model, losses

    mine, theirs = make(), make()
    start = {k: v.copy() for k, v in mine.params.items()}
    opt_mine, opt_theirs = Adam(mine.params, lr=1e-2), Adam(theirs.params, lr=1e-2)
    losses = [(fn(mine, opt_mine, BinaryCrossEntropyWithLogits(), xb, yb), train_step(theirs, opt_theirs, xb, yb)[0])
              for _ in range(2)]
    if all(np.array_equal(mine.params[k], start[k]) for k in start):
        _fail(exercise, ["no parameter moved: call model.backward(loss_fn.backward()) and then opt.step(model.grads)."])
    wrong = [(two_steps(step_first), ("the optimiser step comes before backward, so every update uses the "
                                     "previous batch's gradients (the first one none at all): backward first, then "
                                     "opt.step(model.grads).")),
             (two_steps(no_dropout), ("the forward pass ran with training=False, so dropout was off: a training "
                                     "step calls model.forward(xb, training=True)."))]
    compare(exercise, "the losses of two steps", [l for l, _ in losses], [l for _, l in losses],
            [(w_losses, cause) for (_, w_losses), cause in wrong],
            hint="The loss is loss_fn.forward(model.forward(xb, training=True), yb), computed before the update; "
                 "return it.")
    for k in start:
        compare(exercise, f"{k} after two steps", mine.params[k], theirs.params[k],
                [(w_model.params[k], cause) for (w_model, _), cause in wrong],
                hint="forward with training=True (dropout on), loss, backward, then one opt.step(model.grads).")


def check_overfits(losses, target=0.05, exercise="7.2"):
    """The loss on one small batch, step after step, must fall below ``target``."""
    losses = [float(l) for l in losses]
    if not losses or not np.isfinite(losses).all():
        _fail(exercise, [f"the losses are not finite: {losses[-5:]}"])
    if min(losses) >= target:
        trend = "it does not fall at all" if losses[-1] >= 0.98 * losses[0] else "it falls, but too slowly"
        _fail(exercise, [(f"the loss on the batch went from {losses[0]:.4f} to {losses[-1]:.4f} in {len(losses)} steps "
                         f"(lowest {min(losses):.4f}, needed < {target}): {trend}."),
                         ("A network that cannot memorise 16 patches has a broken step: check the sign of the "
                         "update, that backward runs before the optimiser step, and the learning rate.")])
    return min(losses)
