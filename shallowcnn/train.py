"""Training on in-memory arrays: mini-batches, shuffling, Adam, per-epoch metrics.

One step, the heart of it all::

    logits = model.forward(xb, training=True)     # dropout on
    loss   = bce.forward(logits, yb)              # sigmoid fused into the loss
    model.backward(bce.backward())                # fills model.grads
    adam.step(model.grads)                        # updates model.params in place
"""
from __future__ import annotations

import sys

import numpy as np
from tqdm.auto import tqdm

from .layers import sigmoid
from .losses import BinaryCrossEntropyWithLogits
from .optim import Adam


def train_step(model, optimizer, xb, yb, loss_fn=None):
    """One forward + backward + Adam step on a batch; returns (loss, logits)."""
    loss_fn = loss_fn or BinaryCrossEntropyWithLogits()
    logits = model.forward(xb, training=True)
    loss = loss_fn.forward(logits, yb.astype(logits.dtype, copy=False))
    model.backward(loss_fn.backward())
    optimizer.step(model.grads)
    return loss, logits


def evaluate_arrays(model, x, y, batch_size=64):
    """Mean loss and accuracy (threshold 0.5) of ``model`` on (x, y), no dropout."""
    loss_fn = BinaryCrossEntropyWithLogits()
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model.forward(x[i:i + batch_size])
        yb = np.asarray(y[i:i + batch_size], dtype=logits.dtype)
        total_loss += loss_fn.forward(logits, yb) * len(yb)
        correct += int(np.sum((sigmoid(logits) >= 0.5) == (yb >= 0.5)))
    n = max(len(x), 1)
    return total_loss / n, correct / n


def fit(model, x, y, epochs=10, batch_size=64, lr=1e-3, seed=0, x_val=None, y_val=None,
        optimizer=None, verbose=True):
    """Train ``model`` on x (N, 1, H, W), y (N,) in {0, 1}.

    Each epoch visits the samples in a new order drawn from ``seed``. Returns the
    history: ``{"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}`` lists
    (the validation lists stay empty without a validation set). Training
    loss/accuracy are running means over the epoch's batches (with dropout).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    optimizer = optimizer or Adam(model.params, lr=lr)
    rng = np.random.default_rng(seed)
    loss_fn = BinaryCrossEntropyWithLogits()
    history = {"epoch": [], "loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(0, len(x), batch_size), desc=f"epoch {epoch}/{epochs}", unit="batch",
                   disable=not verbose, leave=False, file=sys.stderr)
        for start in bar:
            idx = order[start:start + batch_size]
            yb = y[idx]
            loss, logits = train_step(model, optimizer, x[idx], yb, loss_fn)
            seen += len(idx)
            loss_sum += loss * len(idx)
            correct += int(np.sum((logits >= 0) == (yb >= 0.5)))
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        history["epoch"].append(epoch)
        history["loss"].append(loss_sum / seen)
        history["accuracy"].append(correct / seen)
        line = f"epoch {epoch}/{epochs}: loss {loss_sum / seen:.4f} acc {correct / seen:.3f}"
        if x_val is not None:
            val_loss, val_acc = evaluate_arrays(model, x_val, y_val, batch_size)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
            line += f" | val_loss {val_loss:.4f} val_acc {val_acc:.3f}"
        if verbose:
            print(line)
    return history
