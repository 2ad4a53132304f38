"""The phantom's files in INbreast's formats: the DICOM image and the XML (plist) ROIs.

:mod:`shallowcnn.data.phantom` draws the images; this module writes them the way INbreast
stores its own (see INBREAST_FORMAT.md), so that the readers of
:mod:`shallowcnn.data.inbreast` are tested on the same bytes they meet in the real data.
"""
from __future__ import annotations

import io
import plistlib

import numpy as np

from ..constants import PIXEL_MM
from .clusters import points_in_polygon
from .inbreast import ROI_TYPE_POINT

BITS_STORED = 14          # INbreast's pixel values are 14-bit
MAMMO_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image, For Presentation


def _format_point(x, y) -> str:
    return f"({x:.6f}, {y:.6f})"


def roi_plist_entry(name, roi_type, points_xy, index, pixels) -> dict:
    """One ROI dict with all 13 INbreast keys; statistics measured on ``pixels``."""
    height, width = pixels.shape
    if roi_type == ROI_TYPE_POINT or len(points_xy) < 3:
        cols = np.clip(np.rint(points_xy[:, 0]).astype(int), 0, width - 1)
        rows = np.clip(np.rint(points_xy[:, 1]).astype(int), 0, height - 1)
        values = pixels[rows, cols].astype(np.float64)
        area_px = 0.0
    else:
        c0, r0 = np.floor(points_xy.min(axis=0)).astype(int)
        c1, r1 = np.ceil(points_xy.max(axis=0)).astype(int)
        rr, cc = np.mgrid[r0:r1 + 1, c0:c1 + 1]
        inside = points_in_polygon(np.stack([cc.ravel(), rr.ravel()], 1), points_xy)
        if not inside.any():
            inside[np.argmin(np.hypot(cc.ravel() - points_xy[:, 0].mean(), rr.ravel() - points_xy[:, 1].mean()))] = True
        values = pixels[np.clip(rr.ravel()[inside], 0, height - 1), np.clip(cc.ravel()[inside], 0, width - 1)]
        values = values.astype(np.float64)
        x, y = points_xy[:, 0], points_xy[:, 1]
        area_px = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    zeros = "(0.000000, 0.000000, 0.000000)"
    return {
        "Area": float(area_px * PIXEL_MM * PIXEL_MM / 100.0),   # cm^2
        "Center": zeros,
        "Dev": float(values.std()),
        "IndexInImage": int(index),
        "Max": float(values.max()),
        "Mean": float(values.mean()),
        "Min": float(values.min()),
        "Name": name,
        "NumberOfPoints": int(len(points_xy)),
        "Point_mm": [zeros] * len(points_xy),
        "Point_px": [_format_point(x, y) for x, y in points_xy],
        "Total": float(values.sum()),
        "Type": int(roi_type),
    }


def xml_bytes(entries) -> bytes:
    """The plist document: tab-indented, one key or value per line, keys in INbreast order."""
    root = {"Images": [{"ImageIndex": 0, "NumberOfROIs": len(entries), "ROIs": list(entries)}]}
    return plistlib.dumps(root, fmt=plistlib.FMT_XML, sort_keys=True)


def dicom_bytes(pixels: np.ndarray, uid_seed: str, patient: str) -> bytes:
    """An uncompressed DICOM mammogram (MONOCHROME2, 16 bits allocated, 14 stored, 0.07 mm).

    UIDs come from ``uid_seed`` (so the same seed writes the same file); no dates or
    times are written. The header carries no laterality or view, like anonymised INbreast.
    """
    # pydicom loads only when a phantom is written
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMO_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, "instance"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MAMMO_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[patient, uid_seed.split(":")[0], "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.Modality = "MG"
    ds.PatientName = "Phantom^Synthetic"
    ds.PatientID = patient
    ds.Manufacturer = "shallowcnn phantom (synthetic image, not patient data)"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BurnedInAnnotation = "NO"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [PIXEL_MM, PIXEL_MM]
    ds.ImagerPixelSpacing = [PIXEL_MM, PIXEL_MM]
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
