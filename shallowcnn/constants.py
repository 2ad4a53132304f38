"""The numbers every module agrees on, and the one place pixels become network input.

The paper works at INbreast's pixel size, 0.07 mm, and cuts 1 cm^2 patches: 144 x 144
pixels. Images of another pixel size are resampled to 0.07 mm before anything else
(:mod:`shallowcnn.data.images`), so 144 pixels are 1 cm everywhere.
"""
from __future__ import annotations

import numpy as np

PIXEL_MM = 0.07           # INbreast's pixel size in mm; every image is used at it
PATCH_SIZE = 144          # 1 cm at 0.07 mm: the window the network sees
PIXEL_MAX = 255           # 8-bit pixels: the network's input is pixel / PIXEL_MAX
MIN_INPUT_SIDE = 17       # the smallest input two valid 9 x 9 convolutions accept (9 + 8)


def pixels_to_input(pixels_u8, dtype=np.float32) -> np.ndarray:
    """8-bit pixels (any shape) -> the network's input in ``dtype``: ``pixel / 255``.

    The paper's scaling, done here and nowhere else (patch stores, the model and the
    scan all call this), so that training and scanning see exactly the same numbers.
    """
    dtype = np.dtype(dtype)
    x = np.asarray(pixels_u8).astype(dtype)
    x /= dtype.type(PIXEL_MAX)
    return x
