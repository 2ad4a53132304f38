"""Whole-mammogram scanning: a cluster probability for every 144 x 144 window.

The network ends in a *global* max pool, so everything before it is convolutional and
the same weights accept an image of any size (docs/design.md, "Scanning"). Scanning a
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

    image  = load_image("AllDICOMs/....dcm")          # shallowcnn.data.images: ScanImage
    result = scan_image(model, image, stride=16)        # ScanResult: prob_map, detections
    write_scan_outputs(result, "out/")                  # shallowcnn.scan_files: .npy, .png, .json
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm import tqdm

from .constants import PATCH_SIZE, pixels_to_input
from .data.breast import window_fraction
from .data.images import ScanError, ScanImage, as_scan_image, check_size
from .evidence import receptive_field, strongest, window_evidence
from .froc import DEFAULT_HIT_RADIUS
from .layers import sigmoid

DEFAULT_STRIDE = 16
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_BREAST = 0.5
SAME_FINDING_PX = DEFAULT_HIT_RADIUS   # FROC's hit radius (5 mm): detections closer than this are one finding
DEFAULT_TILE = 256        # conv2 positions per tile side (16 x 256 x 256 float32 = 4 MB per tile)


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


def window_blocks(kernel_size: int, stride: int, size: int = PATCH_SIZE) -> tuple:
    """How the windows sit on the conv2 map, counted in blocks: ``(g, m, step)``.

    A ``size``-pixel window spans span = size - 2 (K - 1) conv2 positions per side (128).
    g = gcd(stride, span) is the block side (every window starts and ends on a block
    edge), m = span / g the blocks per window side, step = stride / g the blocks per stride.
    """
    if stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    span = size - 2 * (kernel_size - 1)
    g = math.gcd(stride, span)
    return g, span // g, stride // g


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


def running_max(blocks: np.ndarray, axis: int, step: int, m: int, n_out: int) -> np.ndarray:
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
    check_size(image_u8.shape)
    K = model.kernel_size
    halo = 2 * (K - 1)                         # receptive field (2K - 1) minus 1: 16
    g, m, step = window_blocks(K, stride)      # block side, blocks per window side, per stride
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

    bar = _progress(progress, total=len(todo), desc="tiles", unit="tile", leave=False)
    try:
        for start in range(0, len(todo), batch_tiles):
            chunk = todo[start:start + batch_tiles]
            # (N, 1, T + 16, T + 16): tile (ti, tj) reads image rows ti*T .. ti*T + T + 15
            x = pixels_to_input(np.stack([padded[ti * T:ti * T + T + halo, tj * T:tj * T + T + halo]
                                          for ti, tj in chunk])[:, None], dtype)
            # (N, 6, T + 8, T + 8) with its ReLU, which numba applies as it stores (no second pass)
            h1 = kernels.conv2d_forward(x, W1, b1, relu=True)
            bm = kernels.conv_relu_blockmax(h1, W2, b2, g)   # (N, F, tb, tb), ReLU applied
            for n, (ti, tj) in enumerate(chunk):
                blocks[:, ti * tb:(ti + 1) * tb, tj * tb:(tj + 1) * tb] = bm[n]
            bar.update(len(chunk))
    finally:
        bar.close()

    blocks = blocks[:, :nb_r, :nb_c]
    feats = running_max(blocks, axis=1, step=step, m=m, n_out=n_r)    # (F, nR, nB_c)
    feats = running_max(feats, axis=2, step=step, m=m, n_out=n_c)     # (F, nR, nC)
    feats = np.ascontiguousarray(feats.transpose(1, 2, 0))             # (nR, nC, F)
    if not np.isfinite(feats[valid]).all():  # every valid window must be fully computed
        raise AssertionError("internal error: a valid window touches a tile that was skipped")
    return feats


def _progress(progress, **kwargs):
    """A tqdm bar; ``progress`` False hides it, a dict adds tqdm options (e.g. position).
    Bars show only on a terminal, so logs stay readable."""
    if isinstance(progress, dict):
        kwargs.update(progress)
    return tqdm(disable=None if progress else True, **kwargs)


# ---------------------------------------------------------------------------------------
# Detections: non-maximum suppression over the probability map
# ---------------------------------------------------------------------------------------


@dataclass
class Detection:
    """One detected cluster: a peak window and where in it the network saw the finding.

    row, col     the position of the finding in *original* image pixels (y, x): the centre
                 of the receptive field of the conv2 maximum that adds most to the logit
                 (:mod:`shallowcnn.evidence`); always inside the peak window
    probability  the peak window's probability
    logit        the peak window's logit (orders detections where the probability has
                 saturated at 1.0 in float32)
    window       (row, col) top-left corner of the peak window, in scanned pixels
    evidence     one :class:`~shallowcnn.evidence.Evidence` per conv2 filter: its maximum's
                 position (original pixels) and its contribution to the logit
    receptive_field  side of the 17 x 17 scanned-pixel field, in original pixels
    """

    row: float
    col: float
    probability: float
    logit: float
    window: tuple
    evidence: list = field(default_factory=list)
    receptive_field: float = 0.0

    def to_dict(self) -> dict:
        return {"row": round(self.row, 2), "col": round(self.col, 2), "x": round(self.col, 2),
                "y": round(self.row, 2), "probability": float(self.probability),
                "logit": float(self.logit), "window_top_left": [int(v) for v in self.window],
                "receptive_field_px": round(self.receptive_field, 2),
                "strongest_filter": strongest(self.evidence).filter if self.evidence else None,
                "evidence": [e.to_dict() for e in self.evidence]}


def find_peaks(logit_map: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               threshold: float = DEFAULT_THRESHOLD, nms_px: float = PATCH_SIZE) -> list:
    """Local maxima of the window scores, one per ~patch: greedy non-maximum suppression.

    logit_map  (nR, nC) window logits, NaN for windows not scanned
    rows, cols (nR,), (nC,) top-left corners of the windows (scanned pixels)
    threshold  keep peaks with probability >= threshold (0 keeps every peak: for FROC)
    nms_px     a kept window suppresses every window whose top-left corner is closer
               than this in both directions (Chebyshev distance < nms_px): with the
               default 144, no two detections' windows overlap
    returns    list of ``(top, left, logit)`` of the peak windows, strongest first

    Greedy NMS visits windows from the highest logit down (ties: row-major order, so of
    a plateau of equal windows -- the global max pool makes every window holding the
    strongest response score the same -- the first is kept); a window is suppressed only
    by stronger ones, so thresholding the peaks later gives the same set as suppressing
    with that threshold: one run at threshold 0 serves every point of a FROC curve.
    Where in its window the finding lies is :mod:`shallowcnn.evidence`'s job.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    k_idx, l_idx = np.nonzero(np.isfinite(logit_map))
    logits = logit_map[k_idx, l_idx].astype(np.float64)
    keep = sigmoid(logits) >= threshold
    k_idx, l_idx, logits = k_idx[keep], l_idx[keep], logits[keep]
    order = np.argsort(-logits, kind="stable")
    k_idx, l_idx, logits = k_idx[order], l_idx[order], logits[order]
    r, c = rows[k_idx], cols[l_idx]
    suppressed = np.zeros(len(logits), dtype=bool)
    peaks = []
    for i in range(len(logits)):
        if suppressed[i]:
            continue
        suppressed |= (np.abs(r - r[i]) < nms_px) & (np.abs(c - c[i]) < nms_px)
        peaks.append((int(r[i]), int(c[i]), float(logits[i])))
    return peaks


def merge_same_findings(detections: list, distance: float) -> list:
    """Drop every detection whose position lies within ``distance`` of a stronger kept one.

    detections  :class:`Detection` s strongest first (as :func:`locate_detections` gives them)
    distance    in the detections' (original) pixels
    Window NMS compares window corners, so two windows up to 144 px apart can both point
    at one cluster; their evidence positions then lie close together, and the weaker one
    says nothing the stronger has not said. As in :func:`find_peaks`, only stronger
    detections suppress, so a threshold applied afterwards keeps the same set.
    """
    kept = []
    for d in detections:
        if all(math.hypot(d.row - k.row, d.col - k.col) >= distance for k in kept):
            kept.append(d)
    return kept


def locate_detections(model, image: ScanImage, peaks: list) -> list:
    """:class:`Detection` of each peak window, positioned by the network's own evidence.

    model   :class:`~shallowcnn.model.ShallowCNN`
    image   the :class:`ScanImage` scanned (its 8-bit pixels and scale)
    peaks   ``(top, left, logit)`` from :func:`find_peaks`
    Each window is run once more through the patch model's fused conv2 + ReLU + max pool
    (:func:`shallowcnn.evidence.window_evidence`); its logit stays the scan's.
    """
    evidence = window_evidence(model, image.pixels, [(top, left) for top, left, _ in peaks], image.scale)
    field_px = receptive_field(model.kernel_size) * image.scale
    detections = []
    for (top, left, logit), ev in zip(peaks, evidence):
        best = strongest(ev)
        detections.append(Detection(row=best.row, col=best.col, probability=float(sigmoid(np.float64(logit))),
                                    logit=logit, window=(top, left), evidence=ev, receptive_field=field_px))
    return detections


def find_candidates(model, image: ScanImage, logit_map: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    nms_px: float = PATCH_SIZE) -> list:
    """Every finding of a scanned image, strongest first, at any probability (for FROC sweeps).

    logit_map, rows, cols  as for :func:`find_peaks`
    The NMS peaks (:func:`find_peaks` at threshold 0), positioned by their evidence
    (:func:`locate_detections`), with the weaker of two within 5 mm (FROC's hit radius, in
    original pixels) dropped as the same finding (:func:`merge_same_findings`).
    """
    peaks = find_peaks(logit_map, rows, cols, threshold=0.0, nms_px=nms_px)
    return merge_same_findings(locate_detections(model, image, peaks), SAME_FINDING_PX * image.scale)


def with_nms(result, model, nms_px: float):
    """``result`` (a :class:`ScanResult`) with its candidates and detections found again at
    another NMS distance: the windows' scores are reused, only the candidate stage reruns."""
    candidates = find_candidates(model, result.image, result.logit_map, result.window_rows,
                                 result.window_cols, nms_px)
    return replace(result, candidates=candidates, nms_px=float(nms_px),
                   detections=[d for d in candidates if d.probability >= result.threshold])


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
            "pixel_size_source": img.spacing_source,     # PixelSpacing | ImagerPixelSpacing | option | assumed
            "pixel_size_note": img.pixel_size_note,
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
            "positions": ("detections give (row, col) = (y, x) in original image pixels (pixel centres "
                          "at whole numbers): the centre of the 17 x 17 receptive field of the conv2 "
                          "maximum that adds most to the peak window's logit; 'evidence' lists every "
                          "filter's maximum position and its contribution (dense weight x maximum)"),
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
        logit_map[valid] = model.head_forward(feats[valid])
    prob_map = sigmoid(logit_map)                                  # NaN stays NaN
    candidates = find_candidates(model, scan, logit_map, rows, cols, nms_px)
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
    check_size(image_u8.shape)
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
