"""The one mapping from a mammogram's pixel values to the network's 8-bit input.

Every image the network sees goes through :func:`to_network_input`: the training patches
(:mod:`shallowcnn.data.patches`), ``shallowcnn scan`` and the web page
(:mod:`shallowcnn.data.images`). Its input is the image as *values*, bright = dense:
a DICOM's stored values masked to BitsStored, MONOCHROME1 inverted, slope/intercept
applied (:func:`shallowcnn.data.dicom.read_dicom`); or a PNG/TIFF/JPEG's grey levels,
8 or 16 bits. What it does::

    first  = breast_mask(values)          Otsu on 8 x 8 block means: tissue vs background
    lo     = median of the values outside `first`      (the background's level)
    hi     = 99.9th percentile of the values inside `first`
    u8     = round(clip((value - lo) / (hi - lo), 0, 1) * 255)
    mask   = breast_mask(u8)              the breast, found again after the mapping

Why the answer does not depend on how the file was saved. The usual ways of saving a
mammogram -- 12, 14 or 16 bits, shifted into a 16-bit PNG, stretched from minimum to
maximum into 8 bits, MONOCHROME1 (inverted, then read back inverted), rescaled by a
slope and an intercept -- map the values through an increasing *affine* function
``f(v) = a v + b`` (a > 0), then round to the new bit depth (JPEG adds a little noise).

* Otsu's threshold on the block means moves with ``f`` (its histogram spans the block
  means' minimum to maximum), so ``first`` is the same mask in every container.
* A median and a percentile commute with an increasing ``f``: ``lo`` and ``hi`` of the
  saved file are ``f(lo)`` and ``f(hi)`` of the original, and ``(value - lo) / (hi - lo)``
  cancels ``a`` and ``b``: the same 8-bit image, up to the rounding of the saved file
  (an 8-bit min-max file keeps ~180 grey levels between ``lo`` and ``hi``).
* ``lo`` is the background's level, not the breast's darkest pixels, so the dark gap
  between the background and the skin line survives the mapping. That makes the
  mapping idempotent: the 8-bit image it returns (what the page shows), saved and read
  again, maps onto itself, and its mask -- computed *after* the mapping -- is the same.
  A rendering that clipped the breast's own darkest pixels to black (the earlier window
  :func:`shallowcnn.data.breast.to_uint8`) has lost that gap and with it the skin line:
  its mask comes out smaller (``benchmarks/bench_formats.py``, ``png8_window``).

The percentile 99.9 keeps calcifications, the brightest things in a breast, standing out
(the top 0.1 % saturate at 255). ``tests/test_formats.py`` checks the detections that
follow from every container.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .breast import apply_window, breast_mask

BACKGROUND_PERCENTILE = 50.0   # of the pixels outside the breast: mapped to 0
BREAST_PERCENTILE = 99.9       # of the pixels inside the breast: mapped to 255
SAMPLE_PIXELS = 500_000        # percentiles are taken on at most about this many pixels


class NetworkInput(NamedTuple):
    """What :func:`to_network_input` returns.

    pixels  (H, W) uint8: the image the network sees
    mask    (H, W) bool: the breast (every region; scanning keeps the largest)
    window  (lo, hi): the input values mapped to 0 and 255
    """

    pixels: np.ndarray
    mask: np.ndarray
    window: tuple


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile`` of every k-th value (k chosen so at most ~SAMPLE_PIXELS are used)."""
    return float(np.percentile(values[:: max(1, values.size // SAMPLE_PIXELS)], q))


def network_window(pixels: np.ndarray, mask: np.ndarray) -> tuple:
    """``(lo, hi)``: the background's median and the breast's 99.9th percentile.

    pixels  (H, W) values; mask (H, W) bool breast. With no background (a crop inside
    the breast) ``lo`` is the 0.5th percentile of the image; a flat image gets hi = lo + 1.
    """
    inside, outside = pixels[mask], pixels[~mask]
    if inside.size == 0:
        inside = pixels.ravel()
    lo = _percentile(outside, BACKGROUND_PERCENTILE) if outside.size else _percentile(inside, 0.5)
    hi = _percentile(inside, BREAST_PERCENTILE)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def to_network_input(pixels: np.ndarray) -> NetworkInput:
    """Map an image of any bit depth or container to the network's 8-bit input.

    pixels   (H, W) integer or float values, bright = dense (see the module's docstring
             for what a DICOM's values have been through), at the scanning pixel size
             (resample first: the mask works on 8 x 8 blocks of 0.07 mm pixels)
    returns  :class:`NetworkInput` ``(pixels uint8, mask bool, (lo, hi))``; the mask is
             computed on the 8-bit result
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D (H, W) image, got shape {pixels.shape}")
    lo, hi = network_window(pixels, breast_mask(pixels))
    u8 = apply_window(pixels, lo, hi)
    return NetworkInput(pixels=u8, mask=breast_mask(u8), window=(lo, hi))
