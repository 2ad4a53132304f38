"""Images to scan: read a DICOM or image file, resample it to 0.07 mm, find the breast.

What comes out is a :class:`ScanImage`: the 8-bit pixels the network sees (mapped by
:func:`shallowcnn.data.intensity.to_network_input`, exactly as training patches are), the
breast mask (its largest connected region, so burnt-in labels are left out), the scale
back to the file's own pixels, where the pixel size came from, what the file's header
says, and -- for an INbreast-layout file -- the annotations.

    image = load_image("AllDICOMs/....dcm")     # or as_scan_image(array_or_path)

This is the one reading path for ``shallowcnn scan`` and the web page: the file's kind is
told once from its first bytes (:func:`sniff_format`), a DICOM is parsed once
(:func:`shallowcnn.data.dicom.read_dicom`), any other image is opened once by Pillow.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import PATCH_SIZE, PIXEL_MM
from ..messages import cap
from .breast import largest_component
from .dicom import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, PIXEL_MM_RANGE, DicomDecoderMissing, read_dicom
from .inbreast import InbreastError, truth_for_dicom
from .problems import warnings_named
from .intensity import to_network_input

IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


class ScanError(ValueError):
    """An input that cannot be scanned (the message names the file and the reason)."""


class UnsupportedFormat(ScanError):
    """A file that is not an image this installation reads: neither DICOM nor an image
    Pillow knows, or a DICOM compressed in a way no installed decoder reads."""


PIXEL_SIZE_SOURCES = ("PixelSpacing", "ImagerPixelSpacing", "option", "assumed")


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
    window      (lo, hi): the input values mapped to 0 and 255; None for a uint8 array
                taken as the network's input as it is
    spacing_source  where spacing_mm came from: "PixelSpacing" or "ImagerPixelSpacing"
                (the DICOM header), "option" (``--pixel-size``) or "assumed" (none given:
                INbreast's 0.07 mm)
    file_format "DICOM", Pillow's name ("PNG", "JPEG", "TIFF", ...) or None for an array
    original_size  (width, height) of the file's own pixels
    header      what a DICOM header says (:func:`shallowcnn.data.dicom.describe_header`)
    """

    pixels: np.ndarray
    mask: np.ndarray
    path: Path | None = None
    scale: float = 1.0
    spacing_mm: tuple = (PIXEL_MM, PIXEL_MM)
    rois: list | None = None
    window: tuple | None = None
    spacing_source: str = "assumed"
    file_format: str | None = None
    original_size: tuple | None = None
    header: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else "image"

    @property
    def pixel_size_note(self) -> str | None:
        """What to tell the user when the pixel size was assumed (None otherwise)."""
        if self.spacing_source != "assumed":
            return None
        return (f"no pixel size in the file: {PIXEL_MM} mm (INbreast's) was assumed; if it is wrong, "
                f"give the right one with `shallowcnn scan --pixel-size MM`")


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


def sniff_format(path: Path) -> str | None:
    """"DICOM" when the file says so (the "DICM" magic after its 128-byte preamble) or
    is named ``.dcm``/``.dicom`` (a DICOM without preamble); None: let Pillow tell."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return "DICOM"
    with open(path, "rb") as f:
        head = f.read(132)
    return "DICOM" if head[128:132] == b"DICM" else None


def read_pillow(path: Path) -> tuple:
    """``(pixels, format)`` of an image file, opened once by Pillow: 16-bit and 32-bit
    grey as int32, float grey as float32, anything else as 8-bit grey (colour averaged).
    Raises :class:`UnsupportedFormat` for a file Pillow does not know, ScanError for one
    too large or damaged."""
    with warnings_named(path):
        return _read_with_pillow(path)


def _read_with_pillow(path: Path) -> tuple:
    """:func:`read_pillow` itself (its warnings are named by the caller)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
    except Image.DecompressionBombError as e:   # Pillow's own size limit, beyond ours
        raise ScanError(f"{path}: not a readable image ({type(e).__name__}: {cap(e)})") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UnsupportedFormat(f"{path}: not an image: expected a DICOM file or an image file (PNG, TIFF, "
                                f"JPEG, BMP) ({type(e).__name__})") from None
    try:
        with img:   # the header is read; the pixels are decoded below, after the size check
            width, height = img.size
            if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
                raise ScanError(f"{path}: declares {width} x {height} pixels; at most {MAX_IMAGE_SIDE} "
                                f"per side and {MAX_IMAGE_PIXELS:,} in all are read")
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                pixels = np.asarray(img).astype(np.float32 if img.mode == "F" else np.int32)
            else:
                pixels = np.asarray(img.convert("L"))   # 8-bit grey (colour is averaged)
            return pixels, img.format or "image"
    except ScanError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ScanError(f"{path}: not a readable image ({type(e).__name__}: {cap(e)})") from None


def prepare_pixels(pixels: np.ndarray, spacing_mm=(PIXEL_MM, PIXEL_MM), as_is: bool = False) -> tuple:
    """Resample to 0.07 mm, then map to the network's input and find the breast.

    pixels   (H, W) values, bright = dense (a DICOM's as :func:`read_dicom` gives them,
             or an image file's grey levels, any bit depth)
    as_is    take uint8 pixels as the network's input already (arrays from callers that
             mapped them themselves); otherwise :func:`to_network_input` maps every image
    returns  ``(u8 (H', W'), scan_mask (H', W') bool, scale, window or None)``
    """
    pixels, scale = resample(np.asarray(pixels), spacing_mm)
    if as_is and pixels.dtype == np.uint8:
        u8, window = pixels, None
        mask = to_network_input(pixels).mask
    else:
        u8, mask, window = to_network_input(pixels)
    # The window above uses every region of the mask, as patch extraction does; only the
    # choice of windows to scan drops labels (small bright regions away from the breast).
    return u8, largest_component(mask), scale, window


def load_image(path, pixel_size_mm: float | None = None) -> ScanImage:
    """Read a DICOM (INbreast or phantom, any transfer syntax with its decoder) or an
    image file (PNG, TIFF, JPEG, ...) for scanning.

    pixel_size_mm  the pixel size of the file in mm; None means: the DICOM header
                   (PixelSpacing, else ImagerPixelSpacing), else 0.07 mm (INbreast's),
                   which :attr:`ScanImage.spacing_source` then calls "assumed"
    Raises :class:`ScanError` naming the file when it is missing or unreadable, and
    :class:`UnsupportedFormat` when it is no image this installation reads.
    """
    path = Path(path)
    if not path.exists():
        raise ScanError(f"{path}: no such file")
    if path.is_dir():
        raise ScanError(f"{path}: is a folder, expected an image file (.dcm, .png, ...)")
    if not path.is_file():   # a FIFO or device would block or never end
        raise ScanError(f"{path}: not a regular file")
    rois, header = None, {}
    file_format = sniff_format(path)
    if file_format == "DICOM":
        try:
            dicom = read_dicom(path)
            rois = truth_for_dicom(path, dicom.pixels.shape)
        except DicomDecoderMissing as e:
            raise UnsupportedFormat(str(e)) from None
        except InbreastError as e:
            raise ScanError(str(e)) from None
        pixels, spacing, source, header = dicom.pixels, dicom.spacing_mm, dicom.spacing_source, dicom.header
    else:
        pixels, file_format = read_pillow(path)
        spacing, source = (PIXEL_MM, PIXEL_MM), "assumed"
    if pixel_size_mm is not None:
        spacing, source = (float(pixel_size_mm), float(pixel_size_mm)), "option"
    try:
        u8, mask, scale, window = prepare_pixels(pixels, spacing)
    except ScanError as e:
        raise ScanError(f"{path}: {e}") from None
    check_size(u8.shape, path)
    return ScanImage(pixels=u8, mask=mask, path=path, scale=scale, spacing_mm=tuple(spacing),
                     rois=rois, window=window, spacing_source=source, file_format=file_format,
                     original_size=(pixels.shape[1], pixels.shape[0]), header=header)


def check_size(shape, what="image") -> None:
    if shape[0] < PATCH_SIZE or shape[1] < PATCH_SIZE:
        raise ScanError(f"{what}: {shape[1]} x {shape[0]} pixels (width x height) is smaller than one "
                        f"{PATCH_SIZE} x {PATCH_SIZE} window (1 cm at {PIXEL_MM} mm): nothing to scan")


def as_scan_image(image, mask=None, pixel_size_mm=None) -> ScanImage:
    """Accept what users have: a :class:`ScanImage`, a path, or an (H, W) array.

    An array is taken at 0.07 mm (or ``pixel_size_mm``); uint8 is taken as the network's
    input as it is, anything else is mapped by :func:`to_network_input`. ``mask`` (H, W)
    bool overrides the breast mask (e.g. all True to scan every window of a patch-sized
    test image).
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
        u8, auto_mask, scale, window = prepare_pixels(pixels, spacing, as_is=True)
        scan = ScanImage(pixels=u8, mask=auto_mask, scale=scale, spacing_mm=spacing, window=window,
                         spacing_source="option" if pixel_size_mm else "assumed",
                         original_size=(pixels.shape[1], pixels.shape[0]))
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
