"""The breast region of a mammogram (mask, largest region, window fractions) and the
8-bit window primitives.

What the network sees is made by :func:`shallowcnn.data.intensity.to_network_input`,
which uses :func:`breast_mask` and :func:`apply_window` below. :func:`to_uint8` is the
earlier per-image window (kept for the course's first tutorial and for writing a
"clipped" rendering in :mod:`shallowcnn.data.renditions`):

    lo, hi = percentiles (0.5 %, 99.9 %) of the pixels inside the breast mask
    u8     = round(clip((value - lo) / (hi - lo), 0, 1) * 255)

Using only breast pixels keeps the dark background (half the image) from wasting grey
levels; the high percentile is close to 100 % so calcifications, the brightest things in a
breast, still stand out (the top 0.1 % saturate at 255). One window per image means that
patches of one image share it, exactly as they would if cut from one PNG.
"""
from __future__ import annotations

import math

import numpy as np

from .unionfind import UnionFind

WINDOW_PERCENTILES = (0.5, 99.9)


def _box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1) x (2r+1) box (edges replicated), via an integral image."""
    padded = np.pad(image.astype(np.float64), radius + 1, mode="edge")
    integral = padded.cumsum(0).cumsum(1)
    k = 2 * radius + 1
    total = (integral[k:, k:] - integral[:-k, k:] - integral[k:, :-k] + integral[:-k, :-k])
    height, width = image.shape
    return total[:height, :width] / (k * k)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut of a histogram that maximises the between-class variance."""
    values = np.asarray(values, dtype=np.float64).ravel()
    counts, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][np.argmax(between)])


def breast_mask(pixels: np.ndarray, block: int = 8) -> np.ndarray:
    """Boolean (H, W) mask of the breast (True) against the dark background.

    pixels  (H, W) image as read (bright = dense; MONOCHROME1 already inverted)
    block   work on block x block means (8 -> 0.56 mm cells at 0.07 mm), which is fast
            and ignores pixel noise

    Otsu's threshold on the block means separates tissue from background; a 5 x 5
    majority vote then removes specks and fills pin-holes.
    """
    height, width = pixels.shape
    rows, cols = -(-height // block), -(-width // block)
    # the image in float32, its last row and column repeated to whole blocks (np.pad's
    # "edge"), written into one array: no second full-size copy
    padded = np.empty((rows * block, cols * block), dtype=np.float32)
    padded[:height, :width] = pixels
    padded[height:, :width] = padded[height - 1, :width]
    padded[:, width:] = padded[:, width - 1:width]
    small = padded.reshape(rows, block, cols, block).mean(axis=(1, 3))
    mask_small = small > otsu_threshold(small)
    mask_small = _box_mean(mask_small, 2) > 0.5
    return np.repeat(np.repeat(mask_small, block, axis=0), block, axis=1)[:height, :width]


def window_limits(pixels: np.ndarray, mask: np.ndarray,
                  percentiles=WINDOW_PERCENTILES) -> tuple:
    """``(lo, hi)``: the percentiles of the breast pixels that map to 0 and 255."""
    inside = pixels[mask] if mask.any() else pixels.ravel()
    lo, hi = np.percentile(inside[:: max(1, inside.size // 500_000)], percentiles)
    if hi <= lo:  # a flat image: avoid dividing by zero
        hi = lo + 1
    return float(lo), float(hi)


def apply_window(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) uint8 ``round(clip((value - lo) / (hi - lo), 0, 1) * 255)`` (float32 arithmetic)."""
    scaled = pixels.astype(np.float32)              # one float32 array, worked in place
    scaled -= np.float32(lo)
    scaled *= np.float32(255.0 / (hi - lo))
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def to_uint8(pixels: np.ndarray, mask: np.ndarray | None = None,
             percentiles=WINDOW_PERCENTILES) -> tuple:
    """Window a 14-bit (any integer/float) image to 8 bits.

    pixels   (H, W) image
    mask     (H, W) bool breast mask (computed with :func:`breast_mask` if None)
    returns  ``(u8, (lo, hi))``: (H, W) uint8 and the window limits used
    """
    if mask is None:
        mask = breast_mask(pixels)
    lo, hi = window_limits(pixels, mask, percentiles)
    return apply_window(pixels, lo, hi), (lo, hi)


def window_fraction(mask: np.ndarray, size: int, stride: int = 1) -> np.ndarray:
    """Fraction of mask pixels in every size x size window whose top-left corner lies on
    the grid 0, stride, 2*stride, ... (windows that stick out of the image are left out).

    returns (ceil((H - size + 1) / stride), ceil((W - size + 1) / stride)) float: entry
    [k, l] is the mean of ``mask[r:r+size, c:c+size]`` with (r, c) = (k, l) * stride.
    An integral image ``I[y, x] = sum mask[:y, :x]`` gives each window's sum from its four
    corners: ``I[r+s, c+s] - I[r, c+s] - I[r+s, c] + I[r, c]``. Every window edge (r and
    r + size, r on the grid) is a multiple of g = gcd(stride, size), so ``I`` is needed
    only there: the mask is first summed in g x g blocks (one reshape and sum) and the
    integral taken over the block grid, g^2 times smaller (g = 16 when scanning). The
    counts are whole numbers, so this is exactly the full integral image's answer.
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    n_r, n_c = len(range(0, height - size + 1, stride)), len(range(0, width - size + 1, stride))
    if n_r == 0 or n_c == 0:
        return np.zeros((n_r, n_c))
    g = math.gcd(stride, size)
    used_r, used_c = (n_r - 1) * stride + size, (n_c - 1) * stride + size     # multiples of g
    count = np.int32 if mask.size < 2 ** 31 else np.int64                   # no count can overflow
    blocks = mask[:used_r, :used_c].view(np.uint8)
    if g > 1:
        blocks = blocks.reshape(used_r // g, g, used_c // g, g).sum(axis=(1, 3), dtype=count)
    integral = np.zeros((used_r // g + 1, used_c // g + 1), dtype=count)   # I at multiples of g
    np.cumsum(blocks, axis=0, dtype=count, out=integral[1:, 1:])
    np.cumsum(integral[1:, 1:], axis=1, out=integral[1:, 1:])
    step, span = stride // g, size // g

    def edges(first, n):            # grid positions first, first + step, ... (n of them)
        return slice(first, first + (n - 1) * step + 1, step)

    top, bottom, left, right = edges(0, n_r), edges(span, n_r), edges(0, n_c), edges(span, n_c)
    total = (integral[bottom, right] - integral[top, right] - integral[bottom, left]
             + integral[top, left])
    return total / float(size * size)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean (H, W) mask, as a new (H, W) mask.

    Mammograms carry burnt-in labels and markers that are as bright as tissue; they are
    small and apart from the breast, so keeping the largest region drops them.

    Works on *runs* (maximal horizontal segments of True): two runs in neighbouring rows
    that share a column are joined (union-find). A mammogram has a few runs per row, so
    this is fast in plain Python.
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)                     # +1 where a run starts, -1 after it ends
    start_r, start_c = np.nonzero(step == 1)            # both in row-major order, so the
    _, end_c = np.nonzero(step == -1)                   # k-th start pairs with the k-th end
    n_runs = len(start_r)
    if n_runs == 0:
        return mask.copy()
    runs = UnionFind(n_runs)
    first_of_row = np.searchsorted(start_r, np.arange(height + 1))
    for row in range(1, height):
        a, a_end = first_of_row[row - 1], first_of_row[row]      # runs of the row above
        b, b_end = a_end, first_of_row[row + 1]                  # runs of this row
        while a < a_end and b < b_end:                           # two-pointer sweep
            if start_c[a] < end_c[b] and start_c[b] < end_c[a]:  # [start, end) overlap
                runs.join(a, b)
            if end_c[a] < end_c[b]:
                a += 1
            else:
                b += 1
    roots = np.array(runs.roots())
    sizes = np.bincount(roots, weights=end_c - start_c)
    keep = roots == np.argmax(sizes)
    out = np.zeros_like(mask)
    for r, c0, c1 in zip(start_r[keep], start_c[keep], end_c[keep]):
        out[r, c0:c1] = True
    return out
