"""The paper's augmentation: four geometric transforms of a patch (Fig. 3).

Only rigid transforms are used, so that the pixels of a calcification stay as they were
(the paper: "to ensure that the features of each patch remained unaltered")::

    none            the patch itself
    reflect         mirror left <-> right                  x[:, ::-1]
    rot180          turn by 180 degrees                    x[::-1, ::-1]
    reflect+rot180  reflection then 180 degrees turn        x[::-1, :]   (= up <-> down)
    rot90           turn by 90 degrees anticlockwise        np.rot90(x)

Each original thus appears 5 times in the store, with its ``transform`` name recorded.
"""
from __future__ import annotations

import numpy as np

TRANSFORMS = ("none", "reflect", "rot180", "reflect+rot180", "rot90")


def apply_transform(patch: np.ndarray, name: str) -> np.ndarray:
    """Transform the last two axes of ``patch`` ((..., H, W), any dtype); returns a copy."""
    if name == "none":
        out = patch
    elif name == "reflect":
        out = patch[..., :, ::-1]
    elif name == "rot180":
        out = patch[..., ::-1, ::-1]
    elif name == "reflect+rot180":
        out = patch[..., ::-1, :]
    elif name == "rot90":
        out = np.rot90(patch, 1, axes=(-2, -1))
    else:
        raise ValueError(f"unknown transform {name!r}; expected one of {TRANSFORMS}")
    return np.ascontiguousarray(out)


def undo_transform(patch: np.ndarray, name: str) -> np.ndarray:
    """Inverse of :func:`apply_transform` (all are their own inverse except rot90)."""
    if name == "rot90":
        return np.ascontiguousarray(np.rot90(patch, -1, axes=(-2, -1)))
    return apply_transform(patch, name)


def augment(patches: np.ndarray, transforms=TRANSFORMS) -> tuple:
    """Every patch under every transform.

    patches  (M, H, W)
    returns  ``(out, source, names)``: out (M * T, H, W), ``source`` (M * T,) index of the
             original of each output, ``names`` (M * T,) transform names; the originals
             come first (transform-major order)
    """
    outs = [apply_transform(patches, name) for name in transforms]
    count = len(patches)
    source = np.tile(np.arange(count), len(transforms))
    names = np.repeat(np.array(transforms), count)
    return np.concatenate(outs, axis=0), source, names
