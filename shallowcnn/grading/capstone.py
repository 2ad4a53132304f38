"""Grading of the capstone (notebook 10): a network made of the student's own pieces.

The capstone network is the paper's network with one convolution instead of two, small enough
to train in seconds with the student's NumPy functions::

    x (N, 1, S, S) -> conv F x K x K + ReLU + global max pool (N, F) -> dropout -> dense F -> 1 -> logit

with parameters ``{"W1": (F, 1, K, K), "b1": (F,), "Wd": (F, 1), "bd": (1,)}``. The oracle here
is written with this module's own pieces (sliding windows, ``np.add.at``, ``logaddexp``, Adam on
whole arrays), not with the package's layers; ``tests/test_exercises.py`` checks it against
centred differences.

Phantom patches: :func:`phantom_patches` writes a small phantom (four women), cuts its 144 x 144
patches split by patient and shrinks them to 36 x 36: each 4 x 4 block becomes its brightest pixel
less its mean, so that a microcalcification survives as a bright pixel and the smooth tissue
around it (whose brightness varies more from patch to patch than a calcification's) fades.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .checks import _fail, _rng, check_overfits, compare, conv2d_oracle

ACCURACY_TARGET = 0.75       # on the held-out patients' patches after TRAIN_EPOCHS epochs (the key reaches about 0.8)
TRAIN_EPOCHS = 8
TRAIN_LR = 1e-2
BATCH = 32
SHRINK = 4                   # 144 -> 36 pixels a side


def init_params(filters=8, kernel=5, seed=0) -> dict:
    """Glorot-uniform weights and zero biases, float64."""
    rng = np.random.default_rng(seed)
    fan_in, fan_out = kernel * kernel, filters * kernel * kernel
    limit = np.sqrt(6 / (fan_in + fan_out))
    return {"W1": rng.uniform(-limit, limit, (filters, 1, kernel, kernel)), "b1": np.zeros(filters),
            "Wd": rng.uniform(-np.sqrt(6 / (filters + 1)), np.sqrt(6 / (filters + 1)), (filters, 1)),
            "bd": np.zeros(1)}


def network_oracle(params, x, y, p_drop=0.0, rng=None):
    """-> (loss, grads): the mean fused BCE of the capstone network and its gradients.

    Dropout draws ``rng.random(pooled.shape)`` once (as the student's ``inverted_dropout``) and
    keeps ``u < 1 - p_drop``.
    """
    W1, b1, Wd, bd = params["W1"], params["b1"], params["Wd"], params["bd"]
    N, K = len(x), W1.shape[2]
    z = conv2d_oracle(x, W1, b1)                                   # (N, F, Ho, Wo)
    flat = z.reshape(N, z.shape[1], -1)
    argmax = flat.argmax(axis=2)
    pooled = np.maximum(flat.max(axis=2), 0.0)                     # ReLU then max == max then ReLU
    mask = np.ones_like(pooled) if p_drop == 0 else (rng.random(pooled.shape) < 1 - p_drop) / (1 - p_drop)
    h = pooled * mask
    logits = h @ Wd[:, 0] + bd[0]
    loss = float(np.mean(np.logaddexp(0.0, logits) - logits * y))
    dlogits = (0.5 * (1 + np.tanh(0.5 * logits)) - y) / N
    dh = np.outer(dlogits, Wd[:, 0])
    dpooled = dh * mask * (pooled > 0)
    grads = {"Wd": (h.T @ dlogits)[:, None], "bd": np.array([dlogits.sum()])}
    # The sparse backward: each map's gradient enters through the one window of its maximum.
    Wo = z.shape[3]
    rows, cols = np.divmod(argmax, Wo)                             # (N, F)
    windows = np.stack([x[n, :, rows[n, f]:rows[n, f] + K, cols[n, f]:cols[n, f] + K]
                        for n in range(N) for f in range(W1.shape[0])]).reshape(N, W1.shape[0], -1, K, K)
    grads["W1"] = np.einsum("nf,nfcpq->fcpq", dpooled, windows)
    grads["b1"] = dpooled.sum(axis=0)
    return loss, grads


def predict_oracle(params, x):
    """Probabilities (N,) of the capstone network, dropout off."""
    z = conv2d_oracle(x, params["W1"], params["b1"])
    pooled = np.maximum(z.reshape(len(x), z.shape[1], -1).max(axis=2), 0.0)
    return 0.5 * (1 + np.tanh(0.5 * (pooled @ params["Wd"][:, 0] + params["bd"][0])))


def _blobs(n=16, size=20, seed=0):
    """``n`` small patches, half of them with three bright dots: an easy batch to memorise."""
    rng = _rng(seed)
    x = 0.3 + 0.05 * rng.standard_normal((n, 1, size, size))
    y = np.arange(n) % 2 == 0
    yy, xx = np.mgrid[:size, :size]
    for i in np.flatnonzero(y):
        for cy, cx in rng.uniform(3, size - 3, (3, 2)):
            x[i, 0] += 0.4 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
    return x, y.astype(np.float64)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))) if a.size else 0.0


def check_network_gradients(fn, exercise="10.1"):
    """``fn(params, x, y, p_drop=0.0, rng=None)`` -> (loss, grads): checked as a whole by centred
    differences of its own loss, then against the oracle, without and with dropout."""
    x, y = _blobs(6, 12, seed=101)
    params = init_params(filters=4, kernel=3, seed=101)
    params["b1"][:] = [0.05, -0.02, 0.1, 0.0]
    got = fn({k: v.copy() for k, v in params.items()}, x.copy(), y.copy())
    if not isinstance(got, tuple) or len(got) != 2 or not isinstance(got[1], dict):
        _fail(exercise, ["return two things: the loss (a float) and a dict of gradients with keys W1, b1, Wd, bd"])
    loss, grads = got
    missing = sorted(set(params) - set(grads))
    if missing:
        _fail(exercise, [f"the gradients have no {', '.join(missing)}: return one per parameter, same keys."])
    # 1. The gradient check, of the whole network: centred differences of your own loss.
    h, worst = 1e-5, (0.0, "")
    pick = _rng(102)
    for k, w in params.items():
        if np.shape(grads[k]) != w.shape:
            _fail(exercise, [f"grads[{k!r}] has shape {np.shape(grads[k])}, the parameter {w.shape}."])
        for idx in [tuple(int(i) for i in np.unravel_index(j, w.shape))
                    for j in pick.choice(w.size, min(w.size, 6), replace=False)]:
            plus, minus = {a: b.copy() for a, b in params.items()}, {a: b.copy() for a, b in params.items()}
            plus[k][idx] += h
            minus[k][idx] -= h
            numeric = (float(fn(plus, x, y)[0]) - float(fn(minus, x, y)[0])) / (2 * h)
            err = _rel(grads[k][idx], numeric)
            if err > worst[0]:
                worst = (err, f"{k}{list(idx)}: yours {float(grads[k][idx]):.8g}, centred difference {numeric:.8g}")
    if worst[0] > 1e-5:
        _fail(exercise, [(f"the gradient check of the whole network fails: relative error {worst[0]:.2e} at {worst[1]} "
                         "(allowed 1e-5)."),
                         ("Check each piece's place in the chain: dense_backward gets dlogits as an (N, 1) array, "
                         "the sparse backward gets dpooled (times the dropout mask), and every gradient is returned.")])
    # 2. The same numbers as the oracle (a consistent but wrong loss would pass step 1).
    want_loss, want = network_oracle(params, x, y)
    compare(exercise, "loss", loss, want_loss, [(want_loss * len(y), "the loss is summed; average it.")])
    for k in params:
        compare(exercise, f"grads[{k!r}]", grads[k], want[k])
    # 3. With dropout: the mask of inverted_dropout, drawn once, multiplies the features and their gradient.
    loss_d, grads_d = fn({k: v.copy() for k, v in params.items()}, x, y, p_drop=0.5, rng=np.random.default_rng(5))
    want_loss, want = network_oracle(params, x, y, p_drop=0.5, rng=np.random.default_rng(5))
    hint = ("With dropout: draw the mask once, mask = inverted_dropout(np.ones_like(pooled), p_drop, rng); the "
            "features are pooled * mask and their gradient is dh * mask.")
    compare(exercise, "loss with p_drop = 0.5", loss_d, want_loss, hint=hint)
    for k in params:
        compare(exercise, f"grads[{k!r}] with p_drop = 0.5", grads_d[k], want[k], hint=hint)


def check_network_overfits(fn, exercise="10.2", steps=150, target=0.05):
    """``fn(params, x, y, epochs, lr, batch_size, p_drop, seed)`` -> the list of batch losses; with one
    batch of 16 small patches and dropout off, the loss must fall below ``target``."""
    x, y = _blobs(16, 20, seed=102)
    params = init_params(filters=4, kernel=5, seed=3)
    start = {k: v.copy() for k, v in params.items()}
    losses = fn(params, x, y, epochs=steps, lr=3e-2, batch_size=16, p_drop=0.0, seed=0)
    if losses is None or len(losses) == 0:
        _fail(exercise, ["train_network returned no losses: return the list of the batch losses, one per step."])
    if all(np.array_equal(params[k], start[k]) for k in params):
        _fail(exercise, [("no parameter moved: adam_step must update params[k] in place, with the moments m[k] "
                         "and v[k] kept between steps and t counting the steps from 1.")])
    if len(losses) != steps:
        _fail(exercise, [f"{len(losses)} losses for {steps} epochs of one batch: return one loss per step."])
    first = network_oracle(start, x, y)[0]
    if abs(float(losses[0]) - first) > 1e-9 * max(1.0, first):
        _fail(exercise, [(f"the first loss is {float(losses[0]):.8g}, the network's loss at the start is {first:.8g}: "
                         "return the loss computed before each update (as network_loss_and_grads gives it).")])
    return check_overfits(losses, target=target, exercise=exercise)


def phantom_patches(seed=0, cases=4):
    """-> (x_train, y_train, x_test, y_test): phantom patches split by patient, shrunk to 36 x 36, float64."""
    from ..data.patches import make_patches
    from ..data.phantom import generate_phantom

    with tempfile.TemporaryDirectory(prefix="shallowcnn-capstone-") as work:
        generate_phantom(Path(work) / "phantom", cases=cases, seed=seed, size="600x800", verbose=False)
        store = make_patches(Path(work) / "phantom", seed=seed, verbose=False, fractions=(0.5, 0.0, 0.5))
        out = []
        for split in ("train", "test"):
            x, y = store.arrays(split)
            n, c, s, _ = x.shape
            blocks = x.reshape(n, c, s // SHRINK, SHRINK, s // SHRINK, SHRINK)
            x = blocks.max(axis=(3, 5)) - blocks.mean(axis=(3, 5))     # how far a block's brightest pixel stands out
            x = x / 0.05
            out += [x.astype(np.float64), y.astype(np.float64)]
    return tuple(out)


def check_phantom_accuracy(train, predict, exercise="10.3", data=None):
    """Train with the student's ``train`` and measure with the student's ``predict`` on the held-out
    patients' patches: the accuracy must reach :data:`ACCURACY_TARGET`. ``predict`` is first
    compared with the oracle."""
    x_tr, y_tr, x_te, y_te = data if data is not None else phantom_patches()
    params = init_params(seed=0)
    compare(exercise, "predict", predict({k: v.copy() for k, v in params.items()}, x_te[:8]),
            predict_oracle(params, x_te[:8]), hint="predict: the forward pass without dropout, then the sigmoid.")
    losses = train(params, x_tr, y_tr, epochs=TRAIN_EPOCHS, lr=TRAIN_LR, batch_size=BATCH, p_drop=0.2, seed=0)
    p = np.asarray(predict(params, x_te), np.float64)
    accuracy = float(np.mean((p > 0.5) == (y_te > 0.5)))
    if not accuracy >= ACCURACY_TARGET:
        _fail(exercise, [(f"accuracy {accuracy:.3f} on {len(y_te)} patches of unseen patients after {TRAIN_EPOCHS} "
                         f"epochs (needed {ACCURACY_TARGET}); the training loss went from "
                         f"{float(losses[0]):.3f} to {float(np.mean(losses[-5:])):.3f}."),
                         ("If 10.1 and 10.2 pass, look at the batches: a new permutation every epoch, and "
                         "every patch used once per epoch.")])
    return accuracy
