"""Where the network saw the finding: the global max pool as a pointer.

The network ends in a *global* max pool: each of conv2's 16 filters contributes one
number to the decision, its largest response anywhere in the 144 x 144 window, and that
maximum sits at one position of the 128 x 128 conv2 map (its argmax). A conv2 position
(i, j) sees the 17 x 17 window pixels ``[i, i + 17) x [j, j + 17)`` (two 9 x 9
convolutions: 9 + 9 - 1), so every filter's maximum *points* at one 17 x 17 patch of
the mammogram. The logit is

    logit = dense.b + sum_f dense.W[f] * max_f

so filter f adds ``contribution_f = dense.W[f] * max_f`` to it. For a detection we report

* its **evidence**: for every filter, the centre of its maximum's receptive field
  (original image pixels), the maximum, the dense weight and the contribution;
* its **position**: the evidence point with the largest contribution -- the place that
  pushed the window's score up the most.

Both come from the detection's own window only (the peak window that non-maximum
suppression kept), so a position always lies inside its own window and never depends
on the windows of another detection.

**Ties.** ``argmax`` is the first maximum in row-major order (the smallest ``i * 128 + j``),
as in :func:`numpy.argmax` and every backend's ``conv_relu_maxpool_forward``; two filters
with the same contribution are broken by the lower filter index. A filter whose ReLU is
shut everywhere (max 0) contributes 0; its argmax is still reported (where its
pre-activation was highest) but it does not point at anything the network used.

**Coordinates.** Positions are pixel coordinates with pixel centres at whole numbers, in
the *original* image (as the annotations are): a scanned pixel p (0.07 mm) is the
original coordinate ``(p + 0.5) * scale - 0.5`` (:func:`to_original`), with
``scale = ScanImage.scale`` (original pixels per scanned pixel; resampling maps pixel
centres this way).

    evidence = window_evidence(model, image.pixels, [(top, left), ...], image.scale)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import PATCH_SIZE, pixels_to_input


def to_original(scanned, scale: float):
    """Scanned pixel coordinate(s) -> original pixel coordinate(s): ``(p + 0.5) * scale - 0.5``."""
    return (np.asarray(scanned, dtype=np.float64) + 0.5) * scale - 0.5


def receptive_field(kernel_size: int) -> int:
    """Side of the image patch one conv2 position sees: 2 K - 1 (17 for K = 9)."""
    return 2 * kernel_size - 1


@dataclass
class Evidence:
    """One filter's maximum in a window.

    filter        conv2 filter index f
    row, col      centre of the maximum's receptive field, original image pixels
    activation    max_f = max over the window of relu(conv2[f]) (>= 0)
    weight        dense.W[f]
    contribution  weight * activation: what this filter adds to the window's logit
    """

    filter: int
    row: float
    col: float
    activation: float
    weight: float
    contribution: float

    def to_dict(self) -> dict:
        return {"filter": self.filter, "row": round(self.row, 2), "col": round(self.col, 2),
                "x": round(self.col, 2), "y": round(self.row, 2), "activation": round(self.activation, 6),
                "weight": round(self.weight, 6), "contribution": round(self.contribution, 6)}


def window_maxima(model, windows_u8: np.ndarray, batch_size: int = 64) -> tuple:
    """Each filter's global maximum and its position, for windows cut from an image.

    model       :class:`~shallowcnn.model.ShallowCNN` (its backend's ``conv2d_forward`` and
                fused ``conv_relu_maxpool_forward``: the same argmax the backward pass uses)
    windows_u8  (N, S, S) uint8 windows (S = 144)
    returns     ``(pooled (N, F) float, rows (N, F) int64, cols (N, F) int64)``: the maximum of
                relu(conv2[f]) and its conv2 position (i, j), 0 <= i, j < S - 2 (K - 1);
                ties go to the first position in row-major order
    """
    windows_u8 = np.asarray(windows_u8)
    if windows_u8.ndim != 3:
        raise ValueError(f"expected windows of shape (N, S, S), got {windows_u8.shape}")
    kernels = model.kernels
    W1, b1 = model.params["conv1.W"], model.params["conv1.b"]
    W2, b2 = model.params["conv2.W"], model.params["conv2.b"]
    F = model.channels[1]
    pooled = np.zeros((len(windows_u8), F), dtype=np.float64)
    flat = np.zeros((len(windows_u8), F), dtype=np.int64)
    width = windows_u8.shape[2] - 2 * (model.kernel_size - 1)           # conv2 map width
    for start in range(0, len(windows_u8), batch_size):
        x = pixels_to_input(windows_u8[start:start + batch_size, None], model.dtype)
        h1 = kernels.conv2d_forward(x, W1, b1)
        np.maximum(h1, 0, out=h1)                                         # ReLU
        p, a = kernels.conv_relu_maxpool_forward(h1, W2, b2)
        pooled[start:start + batch_size], flat[start:start + batch_size] = p, a
    return pooled, flat // width, flat % width


def window_evidence(model, image_u8: np.ndarray, corners, scale: float = 1.0,
                    size: int = PATCH_SIZE) -> list:
    """The evidence of each window: one :class:`Evidence` per filter, filter order.

    image_u8  (H, W) uint8 scanned image (0.07 mm)
    corners   (top, left) of each window, scanned pixels
    scale     original pixels per scanned pixel (:attr:`ScanImage.scale`)
    returns   list (one per window) of lists of F :class:`Evidence`
    """
    corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
    if len(corners) == 0:
        return []
    image_u8 = np.asarray(image_u8)
    outside = (corners < 0).any(axis=1) | (corners + size > np.array(image_u8.shape[:2])).any(axis=1)
    if outside.any():
        raise ValueError(f"the {size} x {size} window at (top, left) {tuple(corners[outside][0].tolist())} "
                         f"sticks out of the {image_u8.shape[1]} x {image_u8.shape[0]} image")
    windows = np.stack([image_u8[r:r + size, c:c + size] for r, c in corners])
    pooled, i, j = window_maxima(model, windows)
    half = receptive_field(model.kernel_size) // 2                         # 8: the field's centre
    rows = to_original(corners[:, :1] + i + half, scale)                   # (N, F)
    cols = to_original(corners[:, 1:] + j + half, scale)
    weights = model.params["dense.W"][:, 0].astype(np.float64)             # (F,)
    return [[Evidence(filter=f, row=float(rows[n, f]), col=float(cols[n, f]), activation=float(pooled[n, f]),
                      weight=float(weights[f]), contribution=float(weights[f] * pooled[n, f]))
             for f in range(pooled.shape[1])] for n in range(len(corners))]


def strongest(evidence: list) -> Evidence:
    """The evidence with the largest contribution (ties: the lower filter index)."""
    return evidence[int(np.argmax([e.contribution for e in evidence]))]
