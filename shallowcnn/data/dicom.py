"""Reading one DICOM mammogram, its header checked before any pixel is decoded.

    image = read_dicom(path)        # DicomImage: .pixels (H, W) int32, .spacing_mm

The file is parsed once, with its pixel data deferred (read from the file only when
decoded). Compressed transfer syntaxes (JPEG 2000, JPEG-LS, JPEG baseline and lossless,
RLE) decode through pydicom's own pixel handlers; RLE needs nothing more, the others the
plug-ins of the ``dicom-compressed`` extra (``pip install "shallowcnn[dicom-compressed]"``),
which the error names when a decoder is missing (:class:`DicomDecoderMissing`).

What the header declares (size, frames, bits, rescale, pixel size) is checked against the
limits below by :func:`check_dicom_header` first, so a small damaged or hostile file is
refused with its name (:class:`~shallowcnn.data.problems.InbreastError`) instead of
taking the machine's memory or wrapping every pixel around in int32.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import PIXEL_MM
from ..messages import cap, number, short
from .problems import InbreastError, warnings_named

@dataclass
class DicomImage:
    """One mammogram.

    pixels      (H, W) int32 (float32 only if the rescale slope/intercept are not
                integers): stored values masked to BitsStored, inverted if MONOCHROME1
                (so that dense tissue and calcifications are always bright), then
                ``slope * value + intercept``.
    spacing_mm  (row, column) pixel size in mm (PixelSpacing, else ImagerPixelSpacing,
                else 0.07 as INbreast).
    bits_stored the BitsStored attribute (14 for INbreast).
    spacing_source  where spacing_mm came from: "PixelSpacing", "ImagerPixelSpacing"
                or "assumed" (neither is in the header)
    header      what the header tells a reader (:func:`describe_header`)

    The VOI LUT and WindowCenter/Width are not applied: they are display choices (a
    window often clips the skin line to black, which the breast mask needs), and
    :func:`shallowcnn.data.intensity.to_network_input` sets its own window from the
    image itself.
    """

    path: Path
    pixels: np.ndarray
    spacing_mm: tuple
    bits_stored: int
    photometric: str
    spacing_source: str = "PixelSpacing"
    header: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple:
        return self.pixels.shape


# Limits that keep a small damaged or hostile file from taking the machine's memory. A
# header is checked against them before any pixel is decoded.
MAX_IMAGE_SIDE = 16_384           # px; INbreast's longest side is 4,084
MAX_IMAGE_PIXELS = 40_000_000     # px; three times INbreast's 3,328 x 4,084
PIXEL_MM_RANGE = (0.01, 1.0)      # mm; mammograms use 0.05 - 0.1 mm pixels
MAX_PIXEL_VALUE = 2 ** 31 - 1     # rescaled values must fit a 32-bit integer
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"
DEFLATE_SLACK_BYTES = 64 << 20    # what a deflated file may inflate to beyond 4 bytes per pixel


@dataclass
class DicomHeader:
    """The attributes :func:`read_dicom` needs, checked (see :func:`check_dicom_header`)."""

    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    slope: float
    intercept: float
    spacing_mm: tuple
    spacing_source: str = "PixelSpacing"


def stored_range(bits_stored: int, signed: bool) -> tuple:
    """(lowest, highest) value a pixel of ``bits_stored`` bits can hold (two's complement
    when ``signed``)."""
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def _header_number(header, keyword: str, default, path, integer: bool = False):
    """``header[keyword]`` (or ``default`` when absent or blank) as a finite float or an int."""
    value = header.get(keyword, None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InbreastError(path, f"{keyword} {short(value)} is not a number") from None
    if not np.isfinite(number):
        raise InbreastError(path, f"{keyword} {short(value)} is not a finite number")
    if integer:
        if not number.is_integer():
            raise InbreastError(path, f"{keyword} {number:g} is not a whole number")
        return int(number)
    return number


def check_dicom_header(header, path) -> DicomHeader:
    """Check what a DICOM header declares before any pixel is decoded.

    header  a pydicom Dataset read without its pixels, or any mapping keyword -> value
    Raises :class:`InbreastError` naming the file for sizes beyond :data:`MAX_IMAGE_SIDE`
    or :data:`MAX_IMAGE_PIXELS`, more than one frame or sample, impossible bit depths,
    a rescale that is not finite or does not fit 32-bit integers, and a pixel size outside
    :data:`PIXEL_MM_RANGE` (it sets how far the image is resampled).
    """
    rows = _header_number(header, "Rows", None, path, integer=True)
    columns = _header_number(header, "Columns", None, path, integer=True)
    if rows is None or columns is None:
        raise InbreastError(path, "DICOM header lacks Rows or Columns")
    if not (1 <= rows <= MAX_IMAGE_SIDE and 1 <= columns <= MAX_IMAGE_SIDE) or rows * columns > MAX_IMAGE_PIXELS:
        raise InbreastError(path, f"declares {number(columns)} x {number(rows)} pixels (width x height); at most "
                                  f"{MAX_IMAGE_SIDE} per side and {MAX_IMAGE_PIXELS:,} in all are read")
    frames = _header_number(header, "NumberOfFrames", 1, path, integer=True)
    samples = _header_number(header, "SamplesPerPixel", 1, path, integer=True)
    if frames != 1 or samples != 1:
        raise InbreastError(path, f"expected one grey-level frame, the header declares {number(frames)} frame(s) "
                                  f"of {number(samples)} sample(s) per pixel")
    bits_allocated = _header_number(header, "BitsAllocated", 16, path, integer=True)
    bits_stored = _header_number(header, "BitsStored", bits_allocated, path, integer=True)
    if bits_allocated not in (8, 16, 32) or not 1 <= bits_stored <= bits_allocated:
        raise InbreastError(path, f"BitsAllocated {number(bits_allocated)} / BitsStored {number(bits_stored)} is not a "
                                  f"grey-level image of 8, 16 or 32 bits")
    signed = _header_number(header, "PixelRepresentation", 0, path, integer=True) == 1
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InbreastError(path, f"PhotometricInterpretation {short(photometric)} is not a grey-level mammogram")
    slope = _header_number(header, "RescaleSlope", 1.0, path) or 1.0
    intercept = _header_number(header, "RescaleIntercept", 0.0, path)
    lo, hi = stored_range(bits_stored, signed)
    extremes = (slope * lo + intercept, slope * hi + intercept)
    if max(abs(v) for v in extremes) > MAX_PIXEL_VALUE:
        raise InbreastError(path, f"RescaleSlope {slope:.6g} and RescaleIntercept {intercept:.6g} take "
                                  f"{bits_stored}-bit values beyond +-{MAX_PIXEL_VALUE:,} (32-bit integers)")
    # PixelSpacing (calibrated to the patient) first; a mammogram often has only the
    # detector's ImagerPixelSpacing; neither: INbreast's 0.07 mm, said to be assumed.
    source = next((k for k in ("PixelSpacing", "ImagerPixelSpacing") if header.get(k, None)), "assumed")
    spacing = header.get(source) if source != "assumed" else (PIXEL_MM, PIXEL_MM)
    try:
        spacing_mm = (float(spacing[0]), float(spacing[1]))
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        raise InbreastError(path, f"{source} {short(spacing)} is not two numbers") from None
    low, high = PIXEL_MM_RANGE
    if not all(low <= s <= high for s in spacing_mm):   # also False for NaN
        raise InbreastError(path, f"{source} {spacing_mm[0]:.6g} x {spacing_mm[1]:.6g} mm is outside "
                                  f"{low} - {high} mm (mammograms use 0.05 - 0.1 mm pixels)")
    return DicomHeader(rows=rows, columns=columns, bits_allocated=bits_allocated, bits_stored=bits_stored,
                       signed=signed, photometric=photometric, slope=slope, intercept=intercept,
                       spacing_mm=spacing_mm, spacing_source=source)


def _check_deflated_size(path: Path) -> None:
    """Refuse a deflate-compressed DICOM that would inflate beyond what the limits allow.

    pydicom inflates such a file whole before reading its header, so a file of a few
    hundred KB could claim gigabytes. The data set starts after the file meta group
    (128-byte preamble, "DICM", then group 2 whose length is its first element); it is
    inflated here in 1 MB steps, counting, without keeping the output.
    """
    import zlib

    with open(path, "rb") as f:
        head = f.read(144)
        if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
            return  # not the usual layout: pydicom's own checks apply
        meta_end = 144 + int.from_bytes(head[140:144], "little")
        f.seek(132)
        if DEFLATED_TRANSFER_SYNTAX.encode() not in f.read(meta_end - 132):
            return
        limit = 4 * MAX_IMAGE_PIXELS + DEFLATE_SLACK_BYTES
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while chunk := f.read(1 << 20):
            while chunk:
                try:
                    total += len(inflater.decompress(chunk, 1 << 20))
                except zlib.error as e:
                    raise InbreastError(path, f"damaged deflate-compressed DICOM ({e})") from None
                if total > limit:
                    raise InbreastError(path, f"deflate-compressed DICOM inflates to more than "
                                              f"{limit / 2 ** 20:,.1f} MB, beyond any image this package reads")
                chunk = inflater.unconsumed_tail


class DicomDecoderMissing(InbreastError):
    """A DICOM whose transfer syntax no installed pixel handler decodes (the message
    names the syntax and the extra that brings its decoder)."""


# pydicom's own handlers decode RLE and the uncompressed syntaxes; the rest need plug-ins.
COMPRESSED_EXTRA = 'pip install "shallowcnn[dicom-compressed]"'


def check_decoder(syntax, path) -> None:
    """Raise :class:`DicomDecoderMissing` when no installed handler decodes ``syntax``
    (a pydicom UID; None = the file states none, left to pydicom)."""
    from pydicom.pixels import get_decoder

    if syntax is None:
        return
    try:
        available = get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):   # a syntax pydicom has no decoder for at all
        raise DicomDecoderMissing(path, f"transfer syntax {short(syntax.name)} ({short(syntax)}) is not one "
                                        f"pydicom can decode") from None
    if not available:
        raise DicomDecoderMissing(path, f"transfer syntax {syntax.name} ({syntax}) needs a decoder that is not "
                                        f"installed here: {COMPRESSED_EXTRA}")


def describe_header(ds) -> dict:
    """What the header tells a reader: transfer syntax, laterality, view, modality,
    manufacturer and BitsStored (None where absent)."""

    def text(keyword):
        value = ds.get(keyword)
        return (str(value).strip() or None) if value is not None else None

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return {"transfer_syntax": syntax.name if syntax is not None else None,
            "laterality": text("ImageLaterality") or text("Laterality"),
            "view": text("ViewPosition"), "modality": text("Modality"),
            "manufacturer": text("Manufacturer"), "bits_stored": ds.get("BitsStored")}


def read_dicom(path) -> DicomImage:
    """Read a mammogram through pydicom; see :class:`DicomImage` for what is done.

    The file is parsed once with its pixel data deferred; the header is checked
    (:func:`check_dicom_header`, :func:`check_decoder`) before the pixels are decoded,
    so a file that declares a huge or impossible image is refused first.
    Raises :class:`InbreastError` naming the file if it is missing, truncated, not DICOM,
    has no pixel data, is not a single grey-level frame, or (:class:`DicomDecoderMissing`)
    is compressed in a way no installed decoder reads.
    """
    path = Path(path)
    if not path.is_file():
        raise InbreastError(path, "no such file" if not path.exists() else "not a regular file")
    _check_deflated_size(path)
    with warnings_named(path):
        return _read_checked_dicom(path)


def _read_checked_dicom(path: Path) -> DicomImage:
    """:func:`read_dicom` once the file is known to exist (its warnings are named by the caller)."""
    import pydicom  # imported here so that `shallowcnn --help` stays quick
    from pydicom.errors import InvalidDicomError

    try:
        # defer_size: elements over 64 KB (the pixel data) stay in the file until used
        ds = pydicom.dcmread(path, defer_size=1 << 16)
        found = check_dicom_header(ds, path)
        check_decoder(ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None, path)
        has_pixels = "PixelData" in ds
    except InbreastError:
        raise
    except InvalidDicomError as e:
        raise InbreastError(path, f"not a DICOM file ({e})") from None
    except Exception as e:  # pydicom raises many kinds on damaged files
        raise InbreastError(path, f"unreadable DICOM file ({type(e).__name__}: {cap(e)})") from None
    if not has_pixels:
        raise InbreastError(path, "DICOM file has no pixel data")
    try:
        stored = ds.pixel_array
    except Exception as e:  # truncated pixel data, unknown transfer syntax, ...
        raise InbreastError(path, f"truncated or damaged DICOM: cannot decode the pixel data "
                                  f"({type(e).__name__}: {cap(e)})") from None
    if stored.shape != (found.rows, found.columns):
        raise InbreastError(path, f"expected one grey-level frame of {found.rows} x {found.columns}, "
                                  f"got pixel array of shape {stored.shape}")

    bits_stored, signed = found.bits_stored, found.signed
    # Up to 16 bits, every value below (masked, sign-extended, inverted) fits int32: one
    # int32 array, changed in place, is all the work needs (it is also the result when the
    # rescale is 1 and 0, as in INbreast); wider values are worked in int64.
    work = np.int32 if bits_stored <= 16 else np.int64
    # Keep only the BitsStored low bits: the high bits of a 16-bit word may hold overlay
    # or garbage. Signed data is sign-extended from bit BitsStored-1.
    values = np.bitwise_and(stored, (1 << bits_stored) - 1, dtype=work)
    if signed:
        sign_bit = 1 << (bits_stored - 1)
        values ^= sign_bit
        values -= sign_bit
    if found.photometric == "MONOCHROME1":
        # MONOCHROME1: the smallest value is displayed white. Flip it so that bright
        # means dense everywhere downstream.
        lo, hi = stored_range(bits_stored, signed)
        np.subtract(lo + hi, values, out=values)

    slope, intercept = found.slope, found.intercept
    if slope.is_integer() and intercept.is_integer():
        # check_dicom_header made sure every result fits int32: no wrap-around here
        if (slope, intercept) != (1, 0):
            values = values.astype(np.int64) * int(slope) + int(intercept)
        pixels = values.astype(np.int32, copy=False)
    else:
        pixels = (values * slope + intercept).astype(np.float32)
    return DicomImage(path=path, pixels=pixels, spacing_mm=found.spacing_mm,
                      bits_stored=bits_stored, photometric=found.photometric,
                      spacing_source=found.spacing_source, header=describe_header(ds))


def read_dicom_pixels(path) -> np.ndarray:
    """Shortcut: the (H, W) pixel array of :func:`read_dicom`."""
    return read_dicom(path).pixels


