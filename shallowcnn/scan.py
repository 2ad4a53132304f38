"""Whole-mammogram scanning: a cluster probability for every 144 x 144 window.

The network ends in a *global* max pool, so everything before it is convolutional and
the same weights accept an image of any size (DESIGN.md sections 1 and 5). Scanning a
mammogram window by window would run the two convolutions again for every window, and
neighbouring windows at stride 16 overlap by 89 %. Here the convolutions run *once* over
the image and each window takes the maximum of the feature maps it covers.

Geometry (K = 9, one 144 x 144 window = 1 cm^2 at 0.07 mm)::

    image u8          (H, W)
    conv1 + ReLU      (6, H - 8, W - 8)     valid 9 x 9
    conv2 (+ ReLU)    (16, H - 16, W - 16)  valid 9 x 9; position (i, j) sees the
                                            17 x 17 pixels image[i:i+17, j:j+17]
    window (r, c)     = image[r:r+144, c:c+144]; inside it conv2 gives 128 x 128 values,
                        which are exactly the full-image conv2 positions
                        i in r..r+127, j in c..c+127  (nothing else: the window's
                        pixels are all those positions see)
    feature[r, c, f]  = max over that 128 x 128 block of relu(conv2[f])
    probability       = sigmoid(dense(feature))      (dropout is off at inference)

Two tricks keep it fast and small in memory:

* **Tiles.** The 16-channel conv2 map of a full 3328 x 4084 image would take 860 MB, so
  it is never held. The conv2 map is cut into T x T tiles; a tile needs the image rows
  and columns ``[R0, R0 + T + 16)``, because a conv2 position sees 17 pixels (the
  receptive field of two 9 x 9 convolutions is 9 + 9 - 1 = 17), so the last of the T
  positions needs 16 more pixels than its own. Neighbouring tiles therefore *overlap by
  16 pixels of input* (receptive field minus 1) and compute disjoint conv2 outputs: no
  output is computed twice, none is missed.
* **Block maxima.** With stride s and g = gcd(s, 128) (g = s when s divides 128, as the
  default 16 does), every window starts on a multiple of g and spans 128 / g whole g x g
  blocks of the conv2 map. Each tile's map is reduced at once to its g x g block maxima
  (16 x (H/g) x (W/g) numbers for the whole image: 3.4 MB at g = 16), and the window
  maxima are then running maxima over m = 128 / g blocks, first along rows, then along
  columns (the max of a rectangle is the max over rows of the max over columns).
  ``max(relu(z)) = relu(max(z))`` because ReLU is monotonic, so ReLU is applied to the
  block maxima only.

Windows outside the breast get **no probability: NaN** in the map. A window counts as
in the breast when at least ``min_breast_fraction`` (default 0.5) of its pixels lie in
the breast mask (the largest connected region of :func:`shallowcnn.data.breast.breast_mask`,
so that burnt-in labels and markers are excluded). Tiles that no in-breast window needs
are not computed at all (the background is often half of a mammogram).

:func:`scan_patchwise` is the slow reference that cuts each window out and runs the patch
model on it; the tests check that both give the same probabilities (float32, 1e-5).

Main entry points::

    image  = load_image("AllDICOMs/....dcm")          # ScanImage: u8, breast mask, truth
    result = scan_image(model, image, stride=16)        # ScanResult: prob_map, detections
    write_scan_outputs(result, "out/")                  # .npy, overlay .png, .json
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.breast import window_fraction
from .layers import sigmoid
from .storage import save_npy

PATCH_SIZE = 144          # 1 cm at 0.07 mm: the window the network was trained on
PIXEL_MM = 0.07           # INbreast's pixel size; other images are resampled to it
DEFAULT_STRIDE = 16
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_BREAST = 0.5
DEFAULT_TILE = 256        # conv2 positions per tile side (16 x 256 x 256 float32 = 4 MB per tile)
IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


class ScanError(ValueError):
    """An input that cannot be scanned (the message names the file and the reason)."""


# ---------------------------------------------------------------------------------------
# Reading an image to scan
# ---------------------------------------------------------------------------------------


@dataclass
class ScanImage:
    """A mammogram ready to scan, at 0.07 mm per pixel.

    pixels      (H, W) uint8: the 8-bit image the network sees (same window as patches)
    mask        (H, W) bool: breast region (largest connected part, labels excluded)
    path        the file it came from, or None for an array
    scale       original pixels per scanned pixel (1.0 unless the pixel size was not
                0.07 mm); positions are reported in *original* pixels: ``scanned * scale``
    spacing_mm  (row, col) pixel size of the original file
    rois        list of :class:`~shallowcnn.data.inbreast.ROI` (original pixels) when the truth is known
                (an INbreast-layout file: its XML, or [] when it has none = no findings);
                None when nothing is known about the truth (a loose PNG or array)
    window      (lo, hi) of the 14-bit -> 8-bit window, None for 8-bit input
    """

    pixels: np.ndarray
    mask: np.ndarray
    path: Path | None = None
    scale: float = 1.0
    spacing_mm: tuple = (PIXEL_MM, PIXEL_MM)
    rois: list | None = None
    window: tuple | None = None

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else "image"


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
    parent = list(range(n_runs))

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    first_of_row = np.searchsorted(start_r, np.arange(height + 1))
    for row in range(1, height):
        a, a_end = first_of_row[row - 1], first_of_row[row]      # runs of the row above
        b, b_end = a_end, first_of_row[row + 1]                  # runs of this row
        while a < a_end and b < b_end:                           # two-pointer sweep
            if start_c[a] < end_c[b] and start_c[b] < end_c[a]:  # [start, end) overlap
                parent[root(b)] = root(a)
            if end_c[a] < end_c[b]:
                a += 1
            else:
                b += 1
    roots = np.array([root(k) for k in range(n_runs)])
    sizes = np.bincount(roots, weights=end_c - start_c)
    keep = roots == np.argmax(sizes)
    out = np.zeros_like(mask)
    for r, c0, c1 in zip(start_r[keep], start_c[keep], end_c[keep]):
        out[r, c0:c1] = True
    return out


def _resample(pixels: np.ndarray, spacing_mm, target_mm: float = PIXEL_MM) -> tuple:
    """Resample (H, W) pixels of size ``spacing_mm`` (row, col) to ``target_mm``.

    returns ``(resampled, scale)`` with scale = original pixels per new pixel (their mean
    over the two axes). Pillow's antialiased bilinear filter; uint8 stays uint8, anything
    else is resampled in float32. Within 1 % of the target nothing is done.
    """
    from PIL import Image

    sr, sc = (float(s) for s in spacing_mm)
    if abs(sr / target_mm - 1) < 0.01 and abs(sc / target_mm - 1) < 0.01:
        return pixels, 1.0
    height, width = pixels.shape
    new_h, new_w = max(1, round(height * sr / target_mm)), max(1, round(width * sc / target_mm))
    if pixels.dtype == np.uint8:
        img = Image.fromarray(pixels, mode="L")
    else:
        img = Image.fromarray(pixels.astype(np.float32), mode="F")
    out = np.asarray(img.resize((new_w, new_h), Image.Resampling.BILINEAR))
    scale = 0.5 * (height / new_h + width / new_w)
    return np.ascontiguousarray(out), scale


def _truth_for_dicom(path: Path, shape) -> list | None:
    """ROIs of an INbreast-layout DICOM (``.../AllDICOMs/<FileName>_..._ANON.dcm``).

    The XML is ``.../AllXML/<FileName>.xml``; an image of such a folder without XML has
    no findings (returns []). A file outside that layout has no known truth (None).
    """
    from .data.inbreast import parse_dicom_name, read_rois

    try:
        parts = parse_dicom_name(path.name)
    except ValueError:
        return None
    xml_dir = path.parent.parent / "AllXML"
    if path.parent.name != "AllDICOMs" or not xml_dir.is_dir():
        return None
    xml = xml_dir / f"{parts['file_name']}.xml"
    return read_rois(xml, shape) if xml.is_file() else []


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def prepare_pixels(pixels: np.ndarray, spacing_mm=(PIXEL_MM, PIXEL_MM)) -> tuple:
    """Resample to 0.07 mm, find the breast, convert to 8 bits as patch extraction does.

    pixels   (H, W) uint8 (used as is: already 8-bit, like the paper's PNGs) or a wider
             integer/float image (14-bit DICOM values: windowed by
             :func:`shallowcnn.data.breast.to_uint8` with the mask of
             :func:`~shallowcnn.data.breast.breast_mask`, the conversion patches use)
    returns  ``(u8 (H', W'), scan_mask (H', W') bool, scale, window or None)``
    """
    from .data.breast import breast_mask, to_uint8

    pixels, scale = _resample(np.asarray(pixels), spacing_mm)
    mask = breast_mask(pixels)
    if pixels.dtype == np.uint8:
        u8, window = pixels, None
    else:
        u8, window = to_uint8(pixels, mask)
    # The window above uses the mask exactly as patch extraction does; only the choice of
    # windows to scan drops labels (small bright regions away from the breast).
    return u8, largest_component(mask), scale, window


def load_image(path, pixel_size_mm: float | None = None) -> ScanImage:
    """Read a DICOM (INbreast or phantom) or an image file (PNG, TIFF, ...) for scanning.

    pixel_size_mm  the pixel size of the file in mm; None means: DICOM header
                   (PixelSpacing), and 0.07 mm (INbreast) for other image files
    Raises :class:`ScanError` naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise ScanError(f"{path}: no such file")
    if path.is_dir():
        raise ScanError(f"{path}: is a folder, expected an image file (.dcm, .png, ...)")
    rois = None
    if _is_dicom(path):
        from .data.inbreast import InbreastError, read_dicom

        try:
            dicom = read_dicom(path)
            pixels, spacing = dicom.pixels, dicom.spacing_mm
            rois = _truth_for_dicom(path, pixels.shape)
        except InbreastError as e:
            raise ScanError(str(e)) from None
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    pixels = np.asarray(img).astype(np.float32 if img.mode == "F" else np.int32)
                else:
                    pixels = np.asarray(img.convert("L"))   # 8-bit grey (colour is averaged)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ScanError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
        spacing = (PIXEL_MM, PIXEL_MM)
    if pixel_size_mm is not None:
        if not pixel_size_mm > 0:
            raise ScanError(f"pixel size must be positive, got {pixel_size_mm}")
        spacing = (float(pixel_size_mm), float(pixel_size_mm))
    u8, mask, scale, window = prepare_pixels(pixels, spacing)
    _check_size(u8.shape, path)
    return ScanImage(pixels=u8, mask=mask, path=path, scale=scale, spacing_mm=tuple(spacing),
                     rois=rois, window=window)


def _check_size(shape, what="image") -> None:
    if shape[0] < PATCH_SIZE or shape[1] < PATCH_SIZE:
        raise ScanError(f"{what}: {shape[1]} x {shape[0]} pixels (width x height) is smaller than one "
                        f"{PATCH_SIZE} x {PATCH_SIZE} window (1 cm at {PIXEL_MM} mm): nothing to scan")


def as_scan_image(image, mask=None, pixel_size_mm=None) -> ScanImage:
    """Accept what users have: a :class:`ScanImage`, a path, or an (H, W) array.

    An array is taken at 0.07 mm (or ``pixel_size_mm``); uint8 is used as is, anything
    else is windowed to 8 bits. ``mask`` (H, W) bool overrides the breast mask (e.g.
    all True to scan every window of a patch-sized test image).
    """
    if isinstance(image, ScanImage):
        scan = image
    elif isinstance(image, (str, os.PathLike)):
        scan = load_image(image, pixel_size_mm)
    else:
        pixels = np.asarray(image)
        if pixels.ndim != 2:
            raise ScanError(f"expected a 2-D (H, W) image, got shape {pixels.shape}")
        _check_size(pixels.shape)
        spacing = (pixel_size_mm,) * 2 if pixel_size_mm else (PIXEL_MM, PIXEL_MM)
        u8, auto_mask, scale, window = prepare_pixels(pixels, spacing)
        scan = ScanImage(pixels=u8, mask=auto_mask, scale=scale, spacing_mm=spacing, window=window)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != scan.pixels.shape:
            raise ScanError(f"mask shape {mask.shape} does not match the image {scan.pixels.shape}")
        scan = dataclasses.replace(scan, mask=mask)
    _check_size(scan.pixels.shape)
    return scan


# ---------------------------------------------------------------------------------------
# Window geometry
# ---------------------------------------------------------------------------------------


def window_starts(length: int, stride: int, size: int = PATCH_SIZE) -> np.ndarray:
    """Top (or left) edges of the windows along one axis: 0, s, 2s, ... <= length - size.

    A window that would stick out of the image is not scanned, so up to s - 1 pixels at
    the bottom and right edges are never a window's centre region (but they are seen).
    """
    if length < size:
        raise ScanError(f"image side {length} is smaller than the {size}-pixel window")
    return np.arange(0, length - size + 1, stride, dtype=np.int64)


def _dilate_windows_to_blocks(valid: np.ndarray, step: int, m: int) -> np.ndarray:
    """Which g x g blocks some valid window covers: (nR, nC) -> (nB_r, nB_c) bool.

    Window (k, l) covers blocks k*step .. k*step + m - 1 (and the same for columns).
    """
    n_r, n_c = valid.shape
    nb_r, nb_c = (n_r - 1) * step + m, (n_c - 1) * step + m
    rows = np.zeros((nb_r, n_c), dtype=bool)
    for d in range(m):
        rows[d:d + (n_r - 1) * step + 1:step] |= valid
    blocks = np.zeros((nb_r, nb_c), dtype=bool)
    for d in range(m):
        blocks[:, d:d + (n_c - 1) * step + 1:step] |= rows
    return blocks


def _running_max(blocks: np.ndarray, axis: int, step: int, m: int, n_out: int) -> np.ndarray:
    """``out[..., k, ...] = max(blocks[..., k*step : k*step + m, ...])`` along ``axis``.

    One ``np.maximum`` per offset d in 0..m-1 over a strided view: m passes over the data
    instead of a Python loop over windows. NaN (blocks never computed) propagates.
    """
    def take(d):
        index = [slice(None)] * blocks.ndim
        index[axis] = slice(d, d + (n_out - 1) * step + 1, step)
        return blocks[tuple(index)]

    out = take(0).copy()
    for d in range(1, m):
        np.maximum(out, take(d), out=out)
    return out


# ---------------------------------------------------------------------------------------
# The fully convolutional scan
# ---------------------------------------------------------------------------------------


def window_features(model, image_u8: np.ndarray, stride: int = DEFAULT_STRIDE,
                    valid: np.ndarray | None = None, tile: int = DEFAULT_TILE,
                    batch_tiles: int | None = None, progress=False) -> np.ndarray:
    """The 16 globally max-pooled features of every window, computed fully convolutionally.

    model     :class:`~shallowcnn.model.ShallowCNN`; its backend computes conv1
              (``conv2d_forward``) and conv2's block maxima (``conv_relu_blockmax``:
              the fast backends never store the conv2 map)
    image_u8  (H, W) uint8
    stride    window step in pixels (any positive integer; fastest when it divides 128)
    valid     (nR, nC) bool: windows to compute (None: all). Tiles that no valid window
              needs are skipped and the features of invalid windows may be NaN.
    tile      conv2 positions per tile side (rounded down to a multiple of the block
              size g = gcd(stride, 128)); memory per tile ~ 4 x (1 + 6 + 16) x (tile + 16)^2 bytes
    batch_tiles  tiles per call of the kernels (all tiles have the same shape, so they
              form a batch (N, 1, tile + 16, tile + 16); batches feed parallel kernels).
              None: enough tiles for about 1024 x 1024 conv2 positions per call (each
              kernel call has a fixed cost; numba's parallel loops want work).
    progress  show a tqdm bar over tiles (True, or a dict of tqdm options)
    returns   (nR, nC, F) features, ``F = model.channels[1]``; window (k, l) has its
              top-left corner at ``(k * stride, l * stride)``

    ``feature[k, l, f] = max_{0 <= p, q < 128} relu(conv2[f, k*s + p, l*s + q])``
    """
    if stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    image_u8 = np.asarray(image_u8)
    if image_u8.ndim != 2:
        raise ValueError(f"expected an (H, W) image, got shape {image_u8.shape}")
    _check_size(image_u8.shape)
    K = model.kernel_size
    halo = 2 * (K - 1)                         # receptive field (2K - 1) minus 1: 16
    span = PATCH_SIZE - halo                   # conv2 positions per window side: 128
    g = math.gcd(stride, span)                 # block side: windows start and end on it
    m, step = span // g, stride // g           # blocks per window side, blocks per stride
    height, width = image_u8.shape
    rows, cols = window_starts(height, stride), window_starts(width, stride)
    n_r, n_c = len(rows), len(cols)
    if valid is None:
        valid = np.ones((n_r, n_c), dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (n_r, n_c):
        raise ValueError(f"valid has shape {valid.shape}, expected the window grid {(n_r, n_c)}")
    F = model.channels[1]
    dtype = model.dtype
    nb_r, nb_c = (n_r - 1) * step + m, (n_c - 1) * step + m    # blocks the windows span
    needed = _dilate_windows_to_blocks(valid, step, m)

    T = max(g, (int(tile) // g) * g)           # tile side in conv2 positions, multiple of g
    T = min(T, max(nb_r, nb_c) * g)            # no bigger than the image needs
    tb = T // g                                # blocks per tile side
    nt_r, nt_c = -(-nb_r // tb), -(-nb_c // tb)
    # Pad the image with zeros at the bottom and right so that every tile has the same
    # shape. The padding only reaches conv2 positions beyond the last window, which no
    # window uses (the blocks we keep all lie inside the image: nb * g <= H - 16).
    # (Pixels right of / below the last window's conv2 positions are not needed at all.)
    padded = np.zeros((nt_r * T + halo, nt_c * T + halo), dtype=np.uint8)
    h, w = min(height, padded.shape[0]), min(width, padded.shape[1])
    padded[:h, :w] = image_u8[:h, :w]
    todo = [(ti, tj) for ti in range(nt_r) for tj in range(nt_c)
            if needed[ti * tb:(ti + 1) * tb, tj * tb:(tj + 1) * tb].any()]

    if batch_tiles is None:
        batch_tiles = max(1, (1024 * 1024) // (T * T))
    kernels = model.kernels
    W1, b1 = model.params["conv1.W"], model.params["conv1.b"]
    W2, b2 = model.params["conv2.W"], model.params["conv2.b"]
    blocks = np.full((F, nt_r * tb, nt_c * tb), np.nan, dtype=dtype)   # NaN = not computed
    scale = dtype.type(255)

    bar = _progress(progress, total=len(todo), desc="tiles", unit="tile", leave=False)
    try:
        for start in range(0, len(todo), batch_tiles):
            chunk = todo[start:start + batch_tiles]
            # (N, 1, T + 16, T + 16): tile (ti, tj) reads image rows ti*T .. ti*T + T + 15
            x = np.stack([padded[ti * T:ti * T + T + halo, tj * T:tj * T + T + halo]
                          for ti, tj in chunk])[:, None].astype(dtype) / scale
            h1 = kernels.conv2d_forward(x, W1, b1)           # (N, 6, T + 8, T + 8)
            np.maximum(h1, 0, out=h1)                        # ReLU
            bm = kernels.conv_relu_blockmax(h1, W2, b2, g)   # (N, F, tb, tb), ReLU applied
            for n, (ti, tj) in enumerate(chunk):
                blocks[:, ti * tb:(ti + 1) * tb, tj * tb:(tj + 1) * tb] = bm[n]
            bar.update(len(chunk))
    finally:
        bar.close()

    blocks = blocks[:, :nb_r, :nb_c]
    feats = _running_max(blocks, axis=1, step=step, m=m, n_out=n_r)    # (F, nR, nB_c)
    feats = _running_max(feats, axis=2, step=step, m=m, n_out=n_c)     # (F, nR, nC)
    feats = np.ascontiguousarray(feats.transpose(1, 2, 0))             # (nR, nC, F)
    if not np.isfinite(feats[valid]).all():  # every valid window must be fully computed
        raise AssertionError("internal error: a valid window touches a tile that was skipped")
    return feats


def features_to_logits(model, features: np.ndarray) -> np.ndarray:
    """(..., F) pooled features -> (...) logits through the model's head (dropout off).

    ``logit = sum_f dense.W[f, 0] * feature[f] + dense.b[0]``
    """
    shape = features.shape[:-1]
    h = features.reshape(-1, features.shape[-1])
    for layer in model.head:                  # dropout (identity when not training), dense
        h = layer.forward(h, training=False)
    return h[:, 0].reshape(shape)


def _progress(progress, **kwargs):
    """A tqdm bar; ``progress`` False hides it, a dict adds tqdm options (e.g. position).
    Bars show only on a terminal, so logs stay readable."""
    from tqdm import tqdm
    if isinstance(progress, dict):
        kwargs.update(progress)
    return tqdm(disable=None if progress else True, **kwargs)


# ---------------------------------------------------------------------------------------
# Detections: non-maximum suppression over the probability map
# ---------------------------------------------------------------------------------------


@dataclass
class Detection:
    """One detected cluster.

    row, col     estimated centre in *original* image pixels (y, x)
    probability  the peak window's probability
    logit        the peak window's logit (orders detections where the probability has
                 saturated at 1.0 in float32)
    window       (row, col) top-left corner of the peak window, in scanned pixels
    """

    row: float
    col: float
    probability: float
    logit: float
    window: tuple

    def to_dict(self) -> dict:
        return {"row": round(self.row, 2), "col": round(self.col, 2), "x": round(self.col, 2),
                "y": round(self.row, 2), "probability": float(self.probability),
                "logit": float(self.logit), "window_top_left": [int(v) for v in self.window]}


def find_detections(logit_map: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    threshold: float = DEFAULT_THRESHOLD, nms_px: float = PATCH_SIZE,
                    size: int = PATCH_SIZE, scale: float = 1.0, plateau: float = 1e-4) -> list:
    """Local maxima of the window scores, one per ~patch: greedy non-maximum suppression.

    logit_map  (nR, nC) window logits, NaN for windows not scanned
    rows, cols (nR,), (nC,) top-left corners of the windows (scanned pixels)
    threshold  keep peaks with probability >= threshold (0 keeps every peak: for FROC)
    nms_px     a kept window suppresses every window whose top-left corner is closer
               than this in both directions (Chebyshev distance < nms_px): with the
               default 144, no two detections' windows overlap
    plateau    the position of a detection is the mean centre of the windows near the
               peak (closer than nms_px) whose logit is within ``plateau * max(1, |peak|)``
               of the peak. The global max pool makes every window holding the strongest
               response score the same, so the peak is a plateau; its first window
               would put the detection at a corner of the finding, the plateau's
               centre puts it on the finding.
    returns    list of :class:`Detection`, strongest first

    Greedy NMS visits windows from the highest logit down (ties: row-major order); a
    window is suppressed only by stronger ones, so thresholding the detections later
    gives the same set as suppressing with that threshold: one run at threshold 0 serves
    every point of a FROC curve.
    """
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    k_idx, l_idx = np.nonzero(np.isfinite(logit_map))
    logits = logit_map[k_idx, l_idx].astype(np.float64)
    keep = sigmoid(logits) >= threshold
    k_idx, l_idx, logits = k_idx[keep], l_idx[keep], logits[keep]
    order = np.argsort(-logits, kind="stable")
    k_idx, l_idx, logits = k_idx[order], l_idx[order], logits[order]
    r, c = rows[k_idx], cols[l_idx]
    suppressed = np.zeros(len(logits), dtype=bool)
    half = size / 2.0
    detections = []
    for i in range(len(logits)):
        if suppressed[i]:
            continue
        near = (np.abs(r - r[i]) < nms_px) & (np.abs(c - c[i]) < nms_px)
        top = near & (logits >= logits[i] - plateau * max(1.0, abs(logits[i])))
        centre_r, centre_c = r[top].mean() + half, c[top].mean() + half
        suppressed |= near
        detections.append(Detection(row=float(centre_r * scale), col=float(centre_c * scale),
                                    probability=float(sigmoid(np.float64(logits[i]))),
                                    logit=float(logits[i]), window=(int(r[i]), int(c[i]))))
    return detections


# ---------------------------------------------------------------------------------------
# The result of a scan and the public API
# ---------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    """Everything one scan produced.

    prob_map         (nR, nC) float32 probability of a cluster per window; NaN for windows
                     outside the breast (breast fraction < min_breast_fraction)
    logit_map        (nR, nC) float32 logits (same NaNs)
    window_rows      (nR,) top rows of the windows, scanned pixels (k * stride)
    window_cols      (nC,) left columns of the windows
    breast_fraction  (nR, nC) float32 fraction of each window inside the breast mask
    detections       list of :class:`Detection` with probability >= threshold
    candidates       every NMS peak of the breast (probability >= 0), for FROC sweeps
    image            the :class:`ScanImage` scanned (8-bit pixels, mask, truth)
    """

    prob_map: np.ndarray
    logit_map: np.ndarray
    window_rows: np.ndarray
    window_cols: np.ndarray
    breast_fraction: np.ndarray
    detections: list
    candidates: list
    image: ScanImage
    stride: int
    threshold: float
    min_breast_fraction: float
    nms_px: float
    window_size: int = PATCH_SIZE
    seconds: float = 0.0
    backend: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_windows(self) -> int:
        return int(np.isfinite(self.prob_map).sum())

    def metadata(self) -> dict:
        """JSON-ready description of the scan and how to read the map."""
        img = self.image
        return {
            "image": str(img.path) if img.path else None,
            "scanned_shape": list(img.pixels.shape),
            "scale_original_px_per_scanned_px": img.scale,
            "pixel_size_mm": list(img.spacing_mm),
            "window_size": self.window_size,
            "stride": self.stride,
            "threshold": self.threshold,
            "min_breast_fraction": self.min_breast_fraction,
            "nms_px": self.nms_px,
            "n_windows_scanned": self.n_windows,
            "n_windows_total": int(self.prob_map.size),
            "prob_map": ("prob_map[k, l] is the probability of the window whose top-left "
                         "corner is (row k * stride, col l * stride) in the scanned image; "
                         "NaN = window outside the breast (not scanned)"),
            "positions": "detections give (row, col) = (y, x) in original image pixels",
            "backend": self.backend,
            "seconds": round(self.seconds, 3),
        }


def scan_image(model, image, stride: int = DEFAULT_STRIDE, threshold: float = DEFAULT_THRESHOLD,
               min_breast_fraction: float = DEFAULT_MIN_BREAST, nms_px: float = PATCH_SIZE,
               mask=None, pixel_size_mm=None, tile: int = DEFAULT_TILE, progress=False) -> ScanResult:
    """Scan a whole mammogram: a probability for every window and the detected clusters.

    model      :class:`~shallowcnn.model.ShallowCNN`
    image      a path (DICOM or image file), a :class:`ScanImage`, or an (H, W) array
               (uint8 used as is; wider values windowed to 8 bits), H, W >= 144
    stride     pixels between neighbouring windows (default 16: 89 % overlap)
    threshold  detections are NMS peaks with probability >= threshold (default 0.5)
    min_breast_fraction  windows with less of the breast get NaN (not scanned)
    mask       (H, W) bool to override the breast mask (all True scans everything)
    tile, progress  see :func:`window_features`
    returns    :class:`ScanResult`
    """
    start = time.perf_counter()
    scan = as_scan_image(image, mask=mask, pixel_size_mm=pixel_size_mm)
    rows = window_starts(scan.pixels.shape[0], stride)
    cols = window_starts(scan.pixels.shape[1], stride)
    # windows on the stride grid, the same grid as window_starts
    fraction = window_fraction(scan.mask, PATCH_SIZE, stride).astype(np.float32)
    valid = fraction >= min_breast_fraction
    logit_map = np.full(valid.shape, np.nan, dtype=model.dtype)
    if valid.any():
        feats = window_features(model, scan.pixels, stride, valid=valid, tile=tile,
                                progress=progress)
        logit_map[valid] = features_to_logits(model, feats[valid])
    prob_map = sigmoid(logit_map)                                  # NaN stays NaN
    candidates = find_detections(logit_map, rows, cols, threshold=0.0, nms_px=nms_px,
                                 scale=scan.scale)
    detections = [d for d in candidates if d.probability >= threshold]
    return ScanResult(prob_map=prob_map.astype(np.float32), logit_map=logit_map.astype(np.float32),
                      window_rows=rows, window_cols=cols, breast_fraction=fraction,
                      detections=detections, candidates=candidates, image=scan, stride=int(stride),
                      threshold=float(threshold), min_breast_fraction=float(min_breast_fraction),
                      nms_px=float(nms_px), seconds=time.perf_counter() - start,
                      backend=model.backend)


def scan_patchwise(model, image_u8: np.ndarray, stride: int = DEFAULT_STRIDE,
                   valid: np.ndarray | None = None, batch_size: int = 64,
                   progress=False) -> np.ndarray:
    """The slow reference: cut every window out and run the patch model on it.

    image_u8  (H, W) uint8
    valid     (nR, nC) bool: which windows to evaluate (None: all)
    returns   (nR, nC) probabilities in the model's dtype, NaN where not ``valid``

    Exactly what :meth:`ShallowCNN.predict_proba` gives for the patches
    ``image_u8[k*s : k*s + 144, l*s : l*s + 144]``; :func:`scan_image` must agree.
    """
    image_u8 = np.asarray(image_u8)
    _check_size(image_u8.shape)
    rows, cols = window_starts(image_u8.shape[0], stride), window_starts(image_u8.shape[1], stride)
    if valid is None:
        valid = np.ones((len(rows), len(cols)), dtype=bool)
    k_idx, l_idx = np.nonzero(valid)
    out = np.full((len(rows), len(cols)), np.nan, dtype=model.dtype)
    bar = _progress(progress, total=len(k_idx), desc="windows", unit="window", leave=False)
    try:
        for start in range(0, len(k_idx), batch_size):
            ks, ls = k_idx[start:start + batch_size], l_idx[start:start + batch_size]
            patches = np.stack([image_u8[rows[k]:rows[k] + PATCH_SIZE, cols[l]:cols[l] + PATCH_SIZE]
                                for k, l in zip(ks, ls)])
            out[ks, ls] = model.predict_proba(patches, batch_size=batch_size)
            bar.update(len(ks))
    finally:
        bar.close()
    return out


# ---------------------------------------------------------------------------------------
# Writing the outputs
# ---------------------------------------------------------------------------------------


def plot_scan_overlay(result: ScanResult, path, truth=None, max_side: int = 1600,
                      title: str | None = None) -> Path:
    """The mammogram with the probability heatmap on top, detections and true clusters.

    Each window's probability colours a stride x stride cell at the window's centre
    (transparent where below 0.1 and outside the breast); detections are white circles
    of one window's size with their probability; true clusters (``truth``: the
    :class:`~shallowcnn.froc.ImageTruth`, optional) are green when hit, red when missed.
    The image is shown at most ``max_side`` pixels high or wide.
    """
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from .storage import atomic_write_bytes

    img = result.image
    height, width = img.pixels.shape
    sub = max(1, int(math.ceil(max(height, width) / max_side)))
    shown = img.pixels[::sub, ::sub]
    s, half = result.stride, result.window_size / 2
    rows, cols = result.window_rows, result.window_cols
    # extent (left, right, bottom, top) in scanned pixels: cell k is centred at rows[k] + 72
    extent = (cols[0] + half - s / 2, cols[-1] + half + s / 2,
              rows[-1] + half + s / 2, rows[0] + half - s / 2)
    heat = np.ma.masked_where(~(result.prob_map >= 0.1), result.prob_map)

    dpi = 100
    fig_w = 8.0
    fig_h = fig_w * height / width + 0.6
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=dpi)
    ax.imshow(shown, cmap="gray", vmin=0, vmax=255, extent=(0, width, height, 0),
              interpolation="antialiased")
    ax.contour(np.arange(0, width, sub), np.arange(0, height, sub), img.mask[::sub, ::sub].astype(float),
               levels=[0.5], colors="deepskyblue", linewidths=0.6)
    im = ax.imshow(heat, cmap="inferno", vmin=0, vmax=1, alpha=0.55, extent=extent,
                   interpolation="nearest")
    inv = 1.0 / img.scale                                  # original -> scanned pixels
    if truth is not None:
        for cluster, hit in zip(truth.clusters, truth.hit):
            colour = "lime" if hit else "red"
            ax.add_patch(Circle((cluster.centre[1] * inv, cluster.centre[0] * inv), radius=half,
                                fill=False, color=colour, lw=1.2, ls="--"))
    for det in result.detections:
        x, y = det.col * inv, det.row * inv
        ax.add_patch(Circle((x, y), radius=half, fill=False, color="white", lw=1.2))
        ax.text(x + half, y - half, f"{det.probability:.2f}", color="white", fontsize=7,
                va="bottom", ha="left")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    cbar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01)
    cbar.set_label("P(cluster) per 144 x 144 window")
    n_truth = "" if truth is None else f", {sum(truth.hit)}/{len(truth.clusters)} clusters hit"
    ax.set_title(title or (f"{img.name}: {len(result.detections)} detection(s) at "
                           f"p >= {result.threshold:g}{n_truth} (stride {s})"), fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def write_scan_outputs(result: ScanResult, out_dir, truth=None, name: str | None = None) -> dict:
    """Write ``<name>.prob.npy``, ``<name>.overlay.png`` and ``<name>.detections.json``.

    returns the JSON content (a dict). ``truth`` (:class:`~shallowcnn.froc.ImageTruth`)
    adds each true cluster (hit or missed) and each detection's verdict.
    """
    from .storage import atomic_write_text

    out_dir = Path(out_dir)
    name = name or result.image.name
    paths = {"prob_map": out_dir / f"{name}.prob.npy", "overlay": out_dir / f"{name}.overlay.png",
             "detections": out_dir / f"{name}.detections.json"}
    save_npy(paths["prob_map"], result.prob_map)
    plot_scan_overlay(result, paths["overlay"], truth=truth)
    content = result.metadata()
    content["files"] = {k: p.name for k, p in paths.items()}
    content["detections"] = [d.to_dict() for d in result.detections]
    if truth is not None:
        for det, cluster in zip(content["detections"], truth.detection_cluster):
            det["hits_cluster"] = cluster          # index into true_clusters, None = false positive
        content.update(truth.to_dict())
    atomic_write_text(paths["detections"], json.dumps(content, indent=2) + "\n")
    return content


# ---------------------------------------------------------------------------------------
# Command line: shallowcnn scan MODEL IMAGE [IMAGE ...] -o OUT
# ---------------------------------------------------------------------------------------


def expand_inputs(items) -> list:
    """Paths from the command line: files as given; an INbreast/phantom folder (with
    ``AllDICOMs/``) or any folder stands for the image files inside it."""
    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            folder = p / "AllDICOMs" if (p / "AllDICOMs").is_dir() else p
            found = sorted(f for f in folder.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
            if not found:
                raise ScanError(f"{p}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        elif not p.exists():
            raise ScanError(f"{p}: no such file")
        else:
            paths.append(p)
    return paths


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "scan", help="scan whole mammograms: probability heatmap, detected clusters, FROC",
        description="Compute the probability of a microcalcification cluster for every 144 x 144 "
                    "window of each mammogram (fully convolutional: the convolutions run once per "
                    "image). Writes, per image, <name>.prob.npy (window probabilities; NaN for "
                    "windows with less than --min-breast of breast), <name>.overlay.png and "
                    "<name>.detections.json; with INbreast/phantom annotations also the hits and "
                    "misses per image and, over all annotated images, froc.json and froc.png.")
    p.add_argument("model", help="trained model (.npz), e.g. RUN_DIR/model.npz")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="DICOM or PNG/TIFF files, or a folder (INbreast/phantom layout or plain)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the outputs")
    p.add_argument("--stride", type=int, default=DEFAULT_STRIDE,
                   help=f"pixels between windows (default {DEFAULT_STRIDE}; fastest when it divides 128)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"probability for a detection (default {DEFAULT_THRESHOLD})")
    p.add_argument("--min-breast", type=float, default=DEFAULT_MIN_BREAST,
                   help=f"least fraction of a window inside the breast to scan it (default {DEFAULT_MIN_BREAST})")
    p.add_argument("--nms", type=float, default=PATCH_SIZE,
                   help=f"non-maximum suppression distance in pixels (default {PATCH_SIZE}: one patch)")
    p.add_argument("--hit-radius", type=float, default=PATCH_SIZE / 2,
                   help=f"a detection within this many pixels of a true cluster centre (or inside "
                        f"its outline) hits it (default {PATCH_SIZE // 2})")
    p.add_argument("--pixel-size", type=float, default=None, metavar="MM",
                   help="pixel size of the input in mm (default: DICOM header; 0.07 for PNG); "
                        "images are resampled to 0.07 mm")
    p.add_argument("--backend", default="auto", help="numpy, numba, cuda or auto (default auto)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help=f"tile side in conv2 positions; bounds memory (default {DEFAULT_TILE})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_command)


def scan_paths(model, paths, out, stride: int = DEFAULT_STRIDE, threshold: float = DEFAULT_THRESHOLD,
               min_breast_fraction: float = DEFAULT_MIN_BREAST, nms_px: float = PATCH_SIZE,
               hit_radius: float = PATCH_SIZE / 2, pixel_size_mm=None, tile: int = DEFAULT_TILE,
               verbose: bool = True) -> dict:
    """Scan every image of ``paths`` into the folder ``out``; returns the summary dict.

    Per image: ``<name>.prob.npy``, ``<name>.overlay.png``, ``<name>.detections.json``;
    over the annotated images: ``froc.json`` and ``froc.png``; and ``scan_summary.json``.
    An image that cannot be scanned is reported and skipped (listed under "failed").
    """
    from tqdm import tqdm

    from .froc import froc_curve, image_truth, plot_froc, write_froc
    from .storage import atomic_write_text

    out = Path(out)
    truths, summary, failed = [], [], []
    bar = tqdm(paths, desc="images", unit="image", disable=None if verbose else True)
    for path in bar:
        path = Path(path)
        bar.set_postfix_str(path.name[:30])
        try:
            result = scan_image(model, path, stride=stride, threshold=threshold,
                                min_breast_fraction=min_breast_fraction, nms_px=nms_px,
                                pixel_size_mm=pixel_size_mm, tile=tile,
                                progress={"position": 1} if verbose else False)
        except ScanError as e:
            tqdm.write(f"skipped {e}", file=sys.stderr)
            failed.append({"image": str(path), "error": str(e)})
            continue
        truth = image_truth(result, hit_radius=hit_radius)
        content = write_scan_outputs(result, out, truth=truth)
        if truth is not None:
            truths.append(truth)
        line = (f"{path.name}: {result.n_windows} windows in {result.seconds:.1f} s, "
                f"{len(result.detections)} detection(s)")
        if truth is not None:
            line += f", {sum(truth.hit)}/{len(truth.clusters)} true clusters hit"
        if verbose:
            tqdm.write(line)
        summary.append({"image": str(path), "detections": len(result.detections),
                        "seconds": round(result.seconds, 3), "files": content["files"],
                        **({"clusters": len(truth.clusters), "hit": int(sum(truth.hit))}
                           if truth is not None else {})})

    report = {"backend": model.backend, "stride": stride, "threshold": threshold,
              "images": summary, "failed": failed}
    if truths:
        curve = froc_curve(truths)
        write_froc(curve, out / "froc.json", threshold=threshold)
        plot_froc(curve, out / "froc.png", threshold=threshold)
        op = curve.at_threshold(threshold)
        report["froc"] = {"file": "froc.json", "images": curve.n_images, "clusters": curve.n_clusters,
                          "sensitivity": op["sensitivity"], "fp_per_image": op["fp_per_image"]}
        if verbose:
            print(f"FROC over {curve.n_images} annotated image(s), {curve.n_clusters} cluster(s): "
                  f"at p >= {threshold:g} sensitivity {op['sensitivity']:.3f}, "
                  f"{op['fp_per_image']:.2f} false positives per image -> {out / 'froc.png'}")
    atomic_write_text(out / "scan_summary.json", json.dumps(report, indent=2) + "\n")
    return report


def run_command(args) -> int:
    from .kernels import BackendUnavailable
    from .model import ShallowCNN
    from .storage import StoreError

    def fail(message, status=2):
        print(f"shallowcnn scan: error: {message}", file=sys.stderr)
        return status

    if args.stride < 1:
        return fail(f"--stride must be a positive integer, got {args.stride}")
    if not 0 <= args.min_breast <= 1:
        return fail(f"--min-breast must lie in [0, 1], got {args.min_breast}")
    if args.tile < 1:
        return fail(f"--tile must be positive, got {args.tile}")
    try:
        paths = expand_inputs(args.images)
        model = ShallowCNN.load(args.model, backend=args.backend)
    except (ScanError, StoreError, BackendUnavailable, ValueError) as e:
        return fail(e)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        return fail(f"{out}: exists and is not a folder")
    report = scan_paths(model, paths, out, stride=args.stride, threshold=args.threshold,
                        min_breast_fraction=args.min_breast, nms_px=args.nms, hit_radius=args.hit_radius,
                        pixel_size_mm=args.pixel_size, tile=args.tile, verbose=not args.quiet)
    failed = report["failed"]
    print(f"wrote {len(report['images'])} scan(s) to {out}" + (f"; {len(failed)} image(s) failed" if failed else ""))
    return 1 if failed else 0
