"""Binary cross-entropy, mean over the batch.

Two versions, as in every framework:

* :class:`BinaryCrossEntropy` takes probabilities p = sigmoid(z). It is the
  textbook formula ``L = -mean(y log p + (1 - y) log(1 - p))`` and the one to
  learn from, but ``log(p)`` is -inf once p rounds to 0 (z below about -17 in
  float32), so p is clipped to [eps, 1 - eps] as Keras does.
* :class:`BinaryCrossEntropyWithLogits` takes the logit z itself and uses the
  identity ``-y log s(z) - (1-y) log(1 - s(z)) = max(z, 0) - z y + log(1 + exp(-|z|))``,
  which never overflows, and whose gradient is simply ``(s(z) - y) / N``.
  The model trains with this one.

Both: ``forward(pred, y) -> scalar loss``; ``backward() -> dL/dpred`` (shape of pred).
"""
from __future__ import annotations

import numpy as np

from .layers import sigmoid


def _check(pred, y):
    pred = np.asarray(pred)
    y = np.asarray(y, dtype=pred.dtype)
    if pred.shape != y.shape:
        raise ValueError(f"predictions {pred.shape} and labels {y.shape} differ in shape")
    return pred, y


class BinaryCrossEntropy:
    """Mean binary cross-entropy of probabilities p (N,) against labels y (N,) in {0, 1}."""

    def __init__(self, eps=1e-7):
        self.eps = eps

    def forward(self, p, y):
        p, y = _check(p, y)
        self._p, self._y = p, y
        pc = np.clip(p, self.eps, 1 - self.eps)
        return float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))

    def backward(self):
        p, y = self._p, self._y
        pc = np.clip(p, self.eps, 1 - self.eps)
        # d/dp of -(y log p + (1-y) log(1-p)) = -y/p + (1-y)/(1-p); zero where clipped.
        inside = (p > self.eps) & (p < 1 - self.eps)
        return np.where(inside, (-y / pc + (1 - y) / (1 - pc)) / p.shape[0], 0).astype(p.dtype)


class BinaryCrossEntropyWithLogits:
    """Mean binary cross-entropy of logits z (N,) against labels y (N,), fused with the sigmoid."""

    def forward(self, z, y):
        z, y = _check(z, y)
        self._z, self._y = z, y
        losses = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        return float(np.mean(losses))

    def backward(self):
        return ((sigmoid(self._z) - self._y) / self._z.shape[0]).astype(self._z.dtype)
