"""Adam (Kingma & Ba, 2015), with the defaults of Keras, which the paper used.

For each parameter w with gradient g, at step t = 1, 2, ...::

    m <- beta1 m + (1 - beta1) g            first moment (running mean of g)
    v <- beta2 v + (1 - beta2) g^2          second moment (running mean of g^2)
    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)    bias correction
    w <- w - lr_t * m / (sqrt(v) + eps)

This is Keras' form (eps is added to sqrt(v) *after* folding the bias
correction into lr_t); with eps = 1e-7 it differs from the paper's form only
in the last digits. The moments live as long as the optimiser -- re-creating
them every batch, or skipping the bias correction, are the classic bugs.
"""
from __future__ import annotations

import numpy as np

from .recipe import PAPER


class Adam:
    """Adam over a dict of named parameter arrays, updated in place.

    ``params``: ``{name: array}`` (e.g. ``model.params``); ``step(grads)`` takes a
    dict with the same names and shapes.
    """

    def __init__(self, params: dict, lr=PAPER.lr, beta1=PAPER.beta1, beta2=PAPER.beta2, eps=PAPER.eps):
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads: dict):
        self.t += 1
        lr_t = self.lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        for name, w in self.params.items():
            g = grads[name]
            m, v = self.m[name], self.v[name]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            w -= (lr_t * m / (np.sqrt(v) + self.eps)).astype(w.dtype)

    def state_dict(self) -> dict:
        """Arrays to save in a checkpoint (moments and step count)."""
        state = {"adam.t": np.array(self.t)}
        for name in self.params:
            state[f"adam.m.{name}"] = self.m[name]
            state[f"adam.v.{name}"] = self.v[name]
        return state

    def load_state_dict(self, state: dict):
        self.t = int(state["adam.t"])
        for name in self.params:
            self.m[name][...] = state[f"adam.m.{name}"]
            self.v[name][...] = state[f"adam.v.{name}"]
