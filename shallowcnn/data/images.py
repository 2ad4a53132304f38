"""Images to scan: read a DICOM or image file, resample it to 0.07 mm, find the breast.

What comes out is a :class:`ScanImage`: the 8-bit pixels the network sees (windowed from
14 bits exactly as patch extraction does, :func:`shallowcnn.data.breast.to_uint8`), the
breast mask (its largest connected region, so burnt-in labels are left out), the scale
back to the file's own pixels, and -- for an INbreast-layout file -- the annotations.

    image = load_image("AllDICOMs/....dcm")     # or as_scan_image(array_or_path)
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import PATCH_SIZE, PIXEL_MM
from .breast import breast_mask, largest_component, to_uint8
from ..messages import cap
from .dicom import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, PIXEL_MM_RANGE, read_dicom
from .inbreast import InbreastError, truth_for_dicom

IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


class ScanError(ValueError):
    """An input that cannot be scanned (the message names the file and the reason)."""



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


def resample(pixels: np.ndarray, spacing_mm, target_mm: float = PIXEL_MM) -> tuple:
    """Resample (H, W) pixels of size ``spacing_mm`` (row, col) to ``target_mm``.

    returns ``(resampled, scale)`` with scale = original pixels per new pixel (their mean
    over the two axes). Pillow's antialiased bilinear filter; uint8 stays uint8, anything
    else is resampled in float32. Within 1 % of the target nothing is done. Raises
    ScanError for a pixel size outside ``PIXEL_MM_RANGE`` or a result beyond the image limits.
    """
    from PIL import Image

    sr, sc = (float(s) for s in spacing_mm)
    low, high = PIXEL_MM_RANGE
    if not (low <= sr <= high and low <= sc <= high):   # also refuses NaN
        raise ScanError(f"pixel size {sr:.6g} x {sc:.6g} mm is outside {low} - {high} mm")
    if abs(sr / target_mm - 1) < 0.01 and abs(sc / target_mm - 1) < 0.01:
        return pixels, 1.0
    height, width = pixels.shape
    new_h, new_w = max(1, round(height * sr / target_mm)), max(1, round(width * sc / target_mm))
    if max(new_h, new_w) > MAX_IMAGE_SIDE or new_h * new_w > MAX_IMAGE_PIXELS:
        raise ScanError(f"resampling {width} x {height} pixels of {sc:.6g} x {sr:.6g} mm to {target_mm} mm "
                        f"would give {new_w} x {new_h}, beyond the {MAX_IMAGE_PIXELS:,}-pixel limit")
    if pixels.dtype == np.uint8:
        img = Image.fromarray(pixels, mode="L")
    else:
        img = Image.fromarray(pixels.astype(np.float32), mode="F")
    out = np.asarray(img.resize((new_w, new_h), Image.Resampling.BILINEAR))
    scale = 0.5 * (height / new_h + width / new_w)
    return np.ascontiguousarray(out), scale


def is_dicom(path: Path) -> bool:
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
    pixels, scale = resample(np.asarray(pixels), spacing_mm)
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
    if not path.is_file():   # a FIFO or device would block or never end
        raise ScanError(f"{path}: not a regular file")
    rois = None
    if is_dicom(path):
        try:
            dicom = read_dicom(path)
            pixels, spacing = dicom.pixels, dicom.spacing_mm
            rois = truth_for_dicom(path, pixels.shape)
        except InbreastError as e:
            raise ScanError(str(e)) from None
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:   # reads the header only; pixels come below
                width, height = img.size
                if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
                    raise ScanError(f"{path}: declares {width} x {height} pixels; at most {MAX_IMAGE_SIDE} "
                                    f"per side and {MAX_IMAGE_PIXELS:,} in all are read")
                if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    pixels = np.asarray(img).astype(np.float32 if img.mode == "F" else np.int32)
                else:
                    pixels = np.asarray(img.convert("L"))   # 8-bit grey (colour is averaged)
        except ScanError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise ScanError(f"{path}: not a readable image ({type(e).__name__}: {cap(e)})") from None
        spacing = (PIXEL_MM, PIXEL_MM)
    if pixel_size_mm is not None:
        spacing = (float(pixel_size_mm), float(pixel_size_mm))
    try:
        u8, mask, scale, window = prepare_pixels(pixels, spacing)
    except ScanError as e:
        raise ScanError(f"{path}: {e}") from None
    check_size(u8.shape, path)
    return ScanImage(pixels=u8, mask=mask, path=path, scale=scale, spacing_mm=tuple(spacing),
                     rois=rois, window=window)


def check_size(shape, what="image") -> None:
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
        check_size(pixels.shape)
        spacing = (pixel_size_mm,) * 2 if pixel_size_mm else (PIXEL_MM, PIXEL_MM)
        u8, auto_mask, scale, window = prepare_pixels(pixels, spacing)
        scan = ScanImage(pixels=u8, mask=auto_mask, scale=scale, spacing_mm=spacing, window=window)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != scan.pixels.shape:
            raise ScanError(f"mask shape {mask.shape} does not match the image {scan.pixels.shape}")
        scan = dataclasses.replace(scan, mask=mask)
    check_size(scan.pixels.shape)
    return scan


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
