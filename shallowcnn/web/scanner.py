"""The server's one door to the scanner: an uploaded file in, JSON and pictures out.

Everything the web application needs from the scanner (:mod:`shallowcnn.scan`,
:mod:`shallowcnn.data.images`, the overlay of :mod:`shallowcnn.plots`) is imported here
and nowhere else in ``shallowcnn/web/``, so when the scanner's modules move only these
imports change. Detections are those of ``shallowcnn scan`` on the same file: the same
:func:`scan_image` with the same defaults (stride 16, NMS 144 px) at the model's operating point
(:func:`shallowcnn.operating_point.model_threshold`: 0.5 for a model without one).

An upload is read once, by :func:`shallowcnn.data.images.load_image` (the reading path of
``shallowcnn scan``), and what it refuses gets its own HTTP status:

* not an image at all (neither the DICOM magic bytes nor an image Pillow can identify),
  or a DICOM whose transfer syntax no installed decoder reads (e.g. JPEG-LS without the
  ``dicom-compressed`` extra): 415 (:class:`~shallowcnn.data.images.UnsupportedFormat`)
* a DICOM header that cannot be read, truncated pixel data, an image smaller than one
  144 x 144 window after resampling to 0.07 mm: 422 (any other ScanError)
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import PATCH_SIZE
from ..data.images import ScanError, UnsupportedFormat, load_image
from ..operating_point import model_nms, model_threshold
from ..overlay import scan_overlay_png
from ..scan import scan_image

CANDIDATE_MIN_PROBABILITY = 0.01   # peaks kept for the page's threshold slider
MAX_CANDIDATES = 300               # ... at most this many (strongest first)
DISPLAY_MAX_SIDE = 2048            # the mammogram sent to the page, at most this many pixels


class UploadRejected(Exception):
    """An upload the server refuses: ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ScanOutcome:
    """One scanned upload: the JSON answer and the pictures it refers to.

    report     JSON-ready dict (detections, image, scan settings, timings)
    pictures   name -> PNG bytes: ``image.png`` (the scanned 8-bit image, at most
               DISPLAY_MAX_SIDE per side), ``heatmap.png`` (one grey pixel per window,
               see :func:`encode_heatmap`), ``overlay.png`` (the figure ``shallowcnn scan``
               writes)
    windows    (N, 144, 144) uint8: the window of each candidate, in report order
    """

    report: dict
    pictures: dict = field(default_factory=dict)
    windows: np.ndarray | None = None


# ---------------------------------------------------------------------------------------
# Checks before scanning
# ---------------------------------------------------------------------------------------


def name_hints(display_name: str) -> dict:
    """Laterality and view from an INbreast-style file name (``..._MG_L_CC_ANON.dcm``)."""
    from ..data.inbreast import parse_dicom_name

    try:
        parts = parse_dicom_name(display_name)
    except ValueError:
        return {}
    return {key: parts[key] for key in ("laterality", "view") if parts.get(key)}


# ---------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------


def png_bytes(pixels: np.ndarray) -> bytes:
    """(H, W) uint8 -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def encode_heatmap(prob_map: np.ndarray) -> np.ndarray:
    """(nR, nC) probabilities with NaN -> (nR, nC) uint8: 0 = not scanned,
    ``1 + round(254 p)`` otherwise (so 1 means p = 0 and 255 means p = 1)."""
    out = np.zeros(prob_map.shape, dtype=np.uint8)
    scanned = np.isfinite(prob_map)
    out[scanned] = 1 + np.round(254 * np.clip(prob_map[scanned], 0, 1)).astype(np.uint8)
    return out


def display_image(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Every k-th pixel so that no side exceeds ``max_side`` (the page scales it back)."""
    step = max(1, -(-max(pixels.shape) // max_side))
    return pixels[::step, ::step]


# ---------------------------------------------------------------------------------------
# The scan
# ---------------------------------------------------------------------------------------


def warm_up(model) -> str | None:
    """Scan a small blank image once, so that numba compiles (or loads from its cache)
    every kernel before the first upload; returns numba's threading layer when the
    backend is numba (None otherwise)."""
    scan_image(model, np.zeros((PATCH_SIZE + 16, PATCH_SIZE + 16), dtype=np.uint8),
               mask=np.ones((PATCH_SIZE + 16, PATCH_SIZE + 16), dtype=bool))
    if model.backend != "numba":
        return None
    import numba
    return numba.threading_layer()


def detection_dict(det, scale: float) -> dict:
    """A detection as ``shallowcnn scan`` writes it (position and evidence in original
    pixels, pixel centres at whole numbers), plus the boxes the page draws: its window and
    the receptive field around its position, as ``{x, y, width, height}`` of their outer
    edges in original pixels (pixel k covers k - 0.5 .. k + 0.5)."""
    d = det.to_dict()
    top, left = det.window
    size = PATCH_SIZE * scale
    d["window"] = {"x": round(left * scale - 0.5, 2), "y": round(top * scale - 0.5, 2),
                   "width": round(size, 2), "height": round(size, 2)}
    field = det.receptive_field
    d["receptive_field"] = {"x": round(det.col - field / 2, 2), "y": round(det.row - field / 2, 2),
                            "width": round(field, 2), "height": round(field, 2)}
    return d


def scan_upload(model, path: Path, display_name: str, overlay: bool = True) -> ScanOutcome:
    """Scan one uploaded file (already in the server's private folder).

    model         :class:`~shallowcnn.model.ShallowCNN`
    path          the upload, under a server-chosen name
    display_name  the client's file name, used only in messages and the report
    Raises :class:`UploadRejected` with the status the client should get.
    """
    timings = {}
    t = time.perf_counter()
    try:
        image = load_image(path)
    except ScanError as e:   # the message names our private file: show the client's name
        status = 415 if isinstance(e, UnsupportedFormat) else 422
        raise UploadRejected(status, str(e).replace(str(path), display_name)) from None
    file_format, (width, height) = image.file_format, image.original_size
    header = dict(image.header)
    for key, value in name_hints(display_name).items():
        header[key] = header.get(key) or value
    timings["read_s"] = time.perf_counter() - t

    t = time.perf_counter()
    result = scan_image(model, image, threshold=model_threshold(model), nms_px=model_nms(model))  # its operating point
    timings["scan_s"] = time.perf_counter() - t

    t = time.perf_counter()
    scale = image.scale
    candidates = [d for d in result.candidates if d.probability >= CANDIDATE_MIN_PROBABILITY][:MAX_CANDIDATES]
    windows = np.stack([image.pixels[r:r + PATCH_SIZE, c:c + PATCH_SIZE] for r, c in
                        (d.window for d in candidates)]) if candidates else None
    pictures = {"image.png": png_bytes(display_image(image.pixels)),
                "heatmap.png": png_bytes(encode_heatmap(result.prob_map))}
    if overlay:
        pictures["overlay.png"] = scan_overlay_png(result, title=f"{display_name}: {len(result.detections)} "
                                                   f"detection(s) at p >= {result.threshold:g}")
    timings["render_s"] = time.perf_counter() - t

    scanned_h, scanned_w = image.pixels.shape
    report = {
        "file": {"name": display_name, "format": file_format, "bytes": path.stat().st_size},
        "image": {"width": width, "height": height,
                  "pixel_spacing_mm": [float(s) for s in image.spacing_mm],
                  "pixel_size_source": image.spacing_source, "pixel_size_note": image.pixel_size_note,
                  "scanned_width": scanned_w, "scanned_height": scanned_h,
                  "scale_original_px_per_scanned_px": scale,
                  "window_to_8_bit": [float(v) for v in image.window] if image.window else None,
                  **header},
        "scan": {"stride": result.stride, "threshold": result.threshold,
                 "min_breast_fraction": result.min_breast_fraction, "nms_px": result.nms_px,
                 "window_size": result.window_size, "windows_scanned": result.n_windows,
                 "backend": result.backend},
        "detections": [detection_dict(d, scale) for d in result.detections],
        "candidates": [detection_dict(d, scale) for d in candidates],
        "heatmap": {"rows": int(result.prob_map.shape[0]), "cols": int(result.prob_map.shape[1]),
                    "stride": result.stride,
                    "first_centre_scanned_px": [float(result.window_rows[0] + PATCH_SIZE / 2),
                                                float(result.window_cols[0] + PATCH_SIZE / 2)],
                    "encoding": "grey PNG, one pixel per window: 0 = not scanned (outside the "
                                "breast), else probability = (value - 1) / 254"},
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    return ScanOutcome(report=report, pictures=pictures, windows=windows)

