"""The server's one door to the scanner: an uploaded file in, JSON and pictures out.

Everything the web application needs from the scanner (:mod:`shallowcnn.scan`,
:mod:`shallowcnn.data.images`, the overlay of :mod:`shallowcnn.plots`) is imported here
and nowhere else in ``shallowcnn/web/``, so when the scanner's modules move only these
imports change. Detections are those of ``shallowcnn scan`` on the same file: the same
:func:`scan_image` with the same defaults (stride 16, threshold 0.5, NMS 144 px).

An upload goes through three checks before it is scanned, each with its own HTTP status:

* is it an image at all? (DICOM magic bytes, or an image Pillow can identify): 415
* a DICOM whose transfer syntax pydicom cannot decode here (e.g. JPEG-LS without its
  plug-in): 415, naming the syntax
* a DICOM header that cannot be read, truncated pixel data, an image smaller than one
  144 x 144 window after resampling to 0.07 mm: 422 (what the scanner refuses)
"""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import PATCH_SIZE
from ..data.images import ScanError, load_image
from ..operating_point import model_threshold
from ..plots import scan_overlay_png
from ..scan import scan_image

CANDIDATE_MIN_PROBABILITY = 0.01   # peaks kept for the page's threshold slider
MAX_CANDIDATES = 300               # ... at most this many (strongest first)
DISPLAY_MAX_SIDE = 2048            # the mammogram sent to the page, at most this many pixels
_PLOT_LOCK = threading.Lock()      # matplotlib's pyplot is not thread-safe


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


def sniff_format(path: Path) -> tuple:
    """``(format, size)`` from the file's bytes, never from its name: ``("DICOM", None)``
    or Pillow's format name and ``(width, height)``; raises :class:`UploadRejected` (415)
    for anything else."""
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":
        return "DICOM", None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.format or "image", img.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise UploadRejected(415, "not an image: expected a DICOM file or an image file "
                                  "(PNG, TIFF, JPEG, BMP)") from None


def dicom_header(path: Path, display_name: str) -> dict:
    """What the DICOM header tells the page (laterality, view, transfer syntax, ...).

    Raises :class:`UploadRejected`: 415 for a transfer syntax this installation cannot
    decode, 422 for a header pydicom cannot read.
    """
    import pydicom
    from pydicom.pixels import get_decoder

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # pydicom raises many kinds on damaged files
        raise UploadRejected(422, f"{display_name}: unreadable DICOM header ({type(e).__name__}: {e})") from None
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None:
        try:
            available = get_decoder(syntax).is_available
        except (NotImplementedError, ValueError):
            available = False
        if not available:
            raise UploadRejected(415, f"{display_name}: unsupported transfer syntax {syntax.name} ({syntax}); "
                                      f"this installation cannot decode its pixel data")

    def text(keyword):
        value = ds.get(keyword)
        return (str(value).strip() or None) if value is not None else None

    return {"transfer_syntax": syntax.name if syntax is not None else None,
            "laterality": text("ImageLaterality") or text("Laterality"),
            "view": text("ViewPosition"), "modality": text("Modality"),
            "manufacturer": text("Manufacturer"), "bits_stored": ds.get("BitsStored"),
            "size": (int(ds.get("Columns", 0)), int(ds.get("Rows", 0)))}


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
    """A detection as ``shallowcnn scan`` writes it, plus its window box in original pixels."""
    d = det.to_dict()
    top, left = det.window
    size = PATCH_SIZE * scale
    d["window"] = {"x": round(left * scale, 2), "y": round(top * scale, 2),
                   "width": round(size, 2), "height": round(size, 2)}
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
    file_format, size = sniff_format(path)
    header = dicom_header(path, display_name) if file_format == "DICOM" else {}
    width, height = header.pop("size", None) or size
    for key, value in name_hints(display_name).items():
        header[key] = header.get(key) or value
    try:
        image = load_image(path)
    except ScanError as e:   # the message names our private file: show the client's name
        raise UploadRejected(422, str(e).replace(str(path), display_name)) from None
    timings["read_s"] = time.perf_counter() - t

    t = time.perf_counter()
    result = scan_image(model, image, threshold=model_threshold(model))   # the model's operating point
    timings["scan_s"] = time.perf_counter() - t

    t = time.perf_counter()
    scale = image.scale
    candidates = [d for d in result.candidates if d.probability >= CANDIDATE_MIN_PROBABILITY][:MAX_CANDIDATES]
    windows = np.stack([image.pixels[r:r + PATCH_SIZE, c:c + PATCH_SIZE] for r, c in
                        (d.window for d in candidates)]) if candidates else None
    pictures = {"image.png": png_bytes(display_image(image.pixels)),
                "heatmap.png": png_bytes(encode_heatmap(result.prob_map))}
    if overlay:
        with _PLOT_LOCK:
            pictures["overlay.png"] = scan_overlay_png(result, title=f"{display_name}: {len(result.detections)} "
                                                       f"detection(s) at p >= {result.threshold:g}")
    timings["render_s"] = time.perf_counter() - t

    scanned_h, scanned_w = image.pixels.shape
    report = {
        "file": {"name": display_name, "format": file_format, "bytes": path.stat().st_size},
        "image": {"width": width, "height": height,
                  "pixel_spacing_mm": [float(s) for s in image.spacing_mm],
                  "scanned_width": scanned_w, "scanned_height": scanned_h,
                  "scale_original_px_per_scanned_px": scale,
                  "window_14_to_8_bit": [float(v) for v in image.window] if image.window else None,
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

