"""One mammogram saved the ways mammograms are found in the wild.

The scanner must give the same answer whatever the container (see
:func:`shallowcnn.data.intensity.to_network_input`); the format tests and
``benchmarks/bench_formats.py`` check it by saving one phantom DICOM as::

    dicom14        the phantom's own file: 14-bit MONOCHROME2, PixelSpacing 0.07
    monochrome1    the same values inverted (white = 0), ImagerPixelSpacing only
    j2k            JPEG 2000 lossless (pydicom's encoder), no pixel size in the header
    rle            RLE lossless (pydicom's own encoder)
    jpegls         JPEG-LS lossless (pydicom's encoder, through pyjpegls)
    png16          16-bit PNG of the 14-bit values shifted up 2 bits (0 - 65532)
    png8_minmax    8-bit PNG stretched from the image's minimum to its maximum
    jpeg95_minmax  the same 8-bit image as a JPEG of quality 95
    png8_window    the DICOM's 8-bit rendering: the breast-percentile window of
                   :func:`shallowcnn.data.breast.to_uint8` (the background clipped to 0)
    tiff16         16-bit TIFF of the 14-bit values

    paths = write_renditions(read_dicom-able path, out_folder)   # name -> Path

A rendition whose encoder is not installed here (JPEG 2000, JPEG-LS) is left out.
Everything is written from pixels in memory; nothing is read back here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .breast import breast_mask, to_uint8

RENDITIONS = ("dicom14", "monochrome1", "j2k", "rle", "jpegls", "png16", "png8_minmax", "jpeg95_minmax",
              "png8_window", "tiff16")


def min_max_u8(values: np.ndarray) -> np.ndarray:
    """(H, W) values -> uint8 stretched so that the minimum is 0 and the maximum 255."""
    values = values.astype(np.float64)
    lo, hi = values.min(), values.max()
    return np.rint((values - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8)


def _dicom_variant(ds, out: Path, transfer_syntax=None, keep_spacing=True, imager_only=False) -> Path:
    """Write a copy of the data set ``ds`` (uncompressed, 14-bit), optionally compressed."""
    import copy

    ds = copy.deepcopy(ds)
    if imager_only:
        ds.ImagerPixelSpacing = list(ds.PixelSpacing)
        del ds.PixelSpacing
    elif not keep_spacing:
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            if keyword in ds:
                delattr(ds, keyword)
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    ds.save_as(out, enforce_file_format=True)
    return out


def write_renditions(dicom_path, out, names=RENDITIONS) -> dict:
    """Write each of ``names`` (see the module's docstring) into the folder ``out``.

    dicom_path  an uncompressed MONOCHROME2 DICOM (the phantom's files)
    returns     ``{name: Path}`` for every rendition written (those whose encoder is
                missing here are left out)
    """
    import pydicom
    from PIL import Image
    from pydicom.pixels import get_encoder
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(dicom_path)
    stored = ds.pixel_array.astype(np.int64)
    bits = int(ds.BitsStored)
    paths = {}
    for name in names:
        path = out / name
        if name == "dicom14":
            paths[name] = _dicom_variant(ds, path.with_suffix(".dcm"))
        elif name == "monochrome1":
            inverted = ds.copy()
            inverted.PhotometricInterpretation = "MONOCHROME1"
            inverted.PixelData = ((1 << bits) - 1 - stored).astype("<u2").tobytes()
            paths[name] = _dicom_variant(inverted, path.with_suffix(".dcm"), imager_only=True)
        elif name in ("j2k", "rle", "jpegls"):
            syntax = {"j2k": JPEG2000Lossless, "rle": RLELossless, "jpegls": JPEGLSLossless}[name]
            if not get_encoder(syntax).is_available:
                continue
            paths[name] = _dicom_variant(ds, path.with_suffix(".dcm"), syntax, keep_spacing=name != "j2k")
        elif name == "png16":
            Image.fromarray((stored << (16 - bits)).astype(np.uint16)).save(path.with_suffix(".png"))
            paths[name] = path.with_suffix(".png")
        elif name == "tiff16":
            Image.fromarray(stored.astype(np.uint16)).save(path.with_suffix(".tif"))
            paths[name] = path.with_suffix(".tif")
        elif name == "png8_minmax":
            Image.fromarray(min_max_u8(stored), mode="L").save(path.with_suffix(".png"))
            paths[name] = path.with_suffix(".png")
        elif name == "jpeg95_minmax":
            Image.fromarray(min_max_u8(stored), mode="L").save(path.with_suffix(".jpg"), quality=95)
            paths[name] = path.with_suffix(".jpg")
        elif name == "png8_window":
            u8, _ = to_uint8(stored, breast_mask(stored))
            Image.fromarray(u8, mode="L").save(path.with_suffix(".png"))
            paths[name] = path.with_suffix(".png")
        else:
            raise ValueError(f"unknown rendition {name!r}; expected one of {', '.join(RENDITIONS)}")
    return paths
