"""Reading an INbreast release folder: DICOM images, XML regions of interest, INbreast.csv.

The on-disk facts this module follows are in ``INBREAST_FORMAT.md``. In short::

    FOLDER/AllDICOMs/<FileName>_<16-hex patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm
    FOLDER/AllXML/<FileName>.xml     (only images with findings have one)
    FOLDER/INbreast.csv              (';'-separated; optional here)

Main entry points::

    cases = list_cases(folder)             # CaseList: .cases, .problems, .summary()
    image = read_dicom(case.dicom_path)    # DicomImage: .pixels (H, W) int32, .spacing_mm
    rois  = read_rois(case.xml_path, image.pixels.shape)   # list[ROI], points (K, 2) as (x, y)
    image, rois = load_case(case)          # both, with every check; raises InbreastError

Bad input never ends in a bare traceback: every failure is an :class:`InbreastError`
whose message starts with the file name. Callers that walk a whole folder catch it, skip
the case and record it in a :class:`Problems` list, which prints a summary at the end.
"""
from __future__ import annotations

import csv
import io
import plistlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers.expat import ExpatError

import numpy as np

from ..constants import PIXEL_MM


# ---------------------------------------------------------------------------------------
# Errors and the problem list
# ---------------------------------------------------------------------------------------


class InbreastError(ValueError):
    """A file that cannot be used; ``str(error)`` starts with the file's path.

    Attributes: ``path`` (the file) and ``reason`` (what is wrong with it).
    """

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Problems:
    """Everything that went wrong while walking a folder, kept for the final summary.

    ``skipped`` holds ``(path, reason)`` for each case that was left out; ``notes``
    holds counted facts that are not errors (images without XML, unknown ROI names).
    """

    skipped: list = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)

    def skip(self, error_or_path, reason: str | None = None) -> None:
        """Record a skipped case (from an :class:`InbreastError` or a path and reason)."""
        if isinstance(error_or_path, InbreastError):
            self.skipped.append((str(error_or_path.path), error_or_path.reason))
        else:
            self.skipped.append((str(error_or_path), str(reason)))

    def note(self, what: str, count: int = 1) -> None:
        self.notes[what] += count

    def merge(self, other: "Problems") -> None:
        self.skipped.extend(other.skipped)
        self.notes.update(other.notes)

    def summary(self) -> str:
        """Several lines: one per skipped file (path: reason), then the counted notes."""
        lines = [f"skipped {len(self.skipped)} case(s)" + (":" if self.skipped else "")]
        lines += [f"  {path}: {reason}" for path, reason in self.skipped]
        for what, count in sorted(self.notes.items()):
            lines.append(f"  {what}: {count}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------


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
    """

    path: Path
    pixels: np.ndarray
    spacing_mm: tuple
    bits_stored: int
    photometric: str

    @property
    def shape(self) -> tuple:
        return self.pixels.shape


def read_dicom(path) -> DicomImage:
    """Read a mammogram through pydicom; see :class:`DicomImage` for what is done.

    Raises :class:`InbreastError` naming the file if it is missing, truncated, not DICOM,
    has no pixel data or is not a single grey-level frame.
    """
    import pydicom  # imported here so that `shallowcnn --help` stays quick
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise InbreastError(path, "no such file")
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as e:
        raise InbreastError(path, f"not a DICOM file ({e})") from None
    except Exception as e:  # pydicom raises many kinds on damaged files
        raise InbreastError(path, f"unreadable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        raise InbreastError(path, "DICOM file has no pixel data")
    try:
        stored = ds.pixel_array
    except Exception as e:  # truncated pixel data, unknown transfer syntax, ...
        raise InbreastError(path, f"truncated or damaged DICOM: cannot decode the pixel data ({type(e).__name__}: {e})") from None
    if stored.ndim != 2:
        raise InbreastError(path, f"expected one grey-level frame, got pixel array of shape {stored.shape}")

    bits_allocated = int(ds.get("BitsAllocated", 16))
    bits_stored = int(ds.get("BitsStored", bits_allocated))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    values = stored.astype(np.int64)
    # Keep only the BitsStored low bits: the high bits of a 16-bit word may hold overlay
    # or garbage. Signed data is sign-extended from bit BitsStored-1.
    mask = (1 << bits_stored) - 1
    values &= mask
    if signed:
        sign_bit = 1 << (bits_stored - 1)
        values = (values ^ sign_bit) - sign_bit
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "MONOCHROME1":
        # MONOCHROME1: the smallest value is displayed white. Flip it so that bright
        # means dense everywhere downstream.
        lo, hi = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, mask)
        values = (lo + hi) - values
    elif photometric != "MONOCHROME2":
        raise InbreastError(path, f"PhotometricInterpretation {photometric!r} is not a grey-level mammogram")

    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope.is_integer() and intercept.is_integer():
        pixels = (values * int(slope) + int(intercept)).astype(np.int32)
    else:
        pixels = (values * slope + intercept).astype(np.float32)

    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or (PIXEL_MM, PIXEL_MM)
    try:
        spacing_mm = (float(spacing[0]), float(spacing[1]))
    except (TypeError, ValueError, IndexError):
        raise InbreastError(path, f"PixelSpacing {spacing!r} is not two numbers") from None
    return DicomImage(path=path, pixels=pixels, spacing_mm=spacing_mm,
                      bits_stored=bits_stored, photometric=photometric)


def read_dicom_pixels(path) -> np.ndarray:
    """Shortcut: the (H, W) pixel array of :func:`read_dicom`."""
    return read_dicom(path).pixels


# ---------------------------------------------------------------------------------------
# Regions of interest (XML property lists)
# ---------------------------------------------------------------------------------------

# ROI Type codes used by INbreast (OsiriX).
ROI_TYPE_POINT = 19     # one point (NumberOfPoints 1)
ROI_TYPE_CONTOUR = 15   # freehand closed contour
ROI_TYPE_CURVE = 9      # smooth closed curve, usually 200 points (Cluster outlines)

ROI_KEYS = ("Area", "Center", "Dev", "IndexInImage", "Max", "Mean", "Min", "Name",
            "NumberOfPoints", "Point_mm", "Point_px", "Total", "Type")

# Normalised name -> (canonical label, kind). Names are compared after lower-casing and
# removing spaces, so "Spiculated region" and "Spiculated Region" are one label.
KNOWN_NAMES = {
    "calcification": ("calcification", "calcification"),
    "calcifications": ("calcification", "calcification"),
    "cluster": ("cluster", "cluster"),
    "mass": ("mass", "other"),
    "spiculatedregion": ("spiculated region", "other"),
    "espiculatedregion": ("spiculated region", "other"),
    "distortion": ("distortion", "other"),
    "asymmetry": ("asymmetry", "other"),
    "assymetry": ("asymmetry", "other"),
    "asimmetry": ("asymmetry", "other"),
    "point1": ("point", "other"),
    "point3": ("point", "other"),
    "unnamed": ("unnamed", "other"),
    "": ("unnamed", "other"),
}


def normalise_roi_name(name: str) -> str:
    """``" Spiculated region "`` -> ``"spiculatedregion"``: lower case, no spaces."""
    return "".join(str(name).split()).lower()


@dataclass
class ROI:
    """One region of interest of an image.

    name    the Name as written in the file (kept verbatim)
    label   canonical label: 'calcification', 'cluster', 'mass', 'asymmetry', ... ; an
            unknown name keeps its normalised form
    kind    'calcification' | 'cluster' | 'other' (what the patch extractor cares about)
    type    ROI Type code: 19 point, 15 contour, 9 smooth curve
    points  (K, 2) float64, columns (x = column, y = row), pixel units, origin top-left
    index   IndexInImage
    known   False for a name not in :data:`KNOWN_NAMES` (kept, and counted by the reader)
    """

    name: str
    label: str
    kind: str
    type: int
    points: np.ndarray
    index: int = 0
    known: bool = True

    @property
    def centre_xy(self) -> np.ndarray:
        """(2,) centre (x, y): the point itself, or the mean of the contour points."""
        return self.points.mean(axis=0)

    @property
    def bbox(self) -> tuple:
        """(row0, col0, row1, col1) inclusive-exclusive float bounds of the points."""
        x, y = self.points[:, 0], self.points[:, 1]
        return float(y.min()), float(x.min()), float(y.max()), float(x.max())


def make_roi(name: str, roi_type: int, points, index: int = 0) -> ROI:
    """Build an :class:`ROI`, deriving ``label``, ``kind`` and ``known`` from ``name``."""
    key = normalise_roi_name(name)
    label, kind = KNOWN_NAMES.get(key, (key, "other"))
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return ROI(name=str(name), label=label, kind=kind, type=int(roi_type), points=points,
               index=int(index), known=key in KNOWN_NAMES)


_POINT_RE = re.compile(r"^\s*\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(?:,\s*[-+0-9.eE]+\s*)?\)\s*$")


def parse_point(text: str) -> tuple:
    """``"(670.893982, 2554.969971)"`` -> ``(670.893982, 2554.969971)`` as (x, y) floats."""
    match = _POINT_RE.match(str(text))
    if match is None:
        raise ValueError(f"point {text!r} is not of the form '(x, y)'")
    return float(match.group(1)), float(match.group(2))


def read_rois(path, image_shape=None) -> list:
    """Read every ROI of an INbreast XML property list.

    path         AllXML/<FileName>.xml
    image_shape  (H, W) of the image, if known: every point must then lie inside
                 ``0 <= x <= W-1, 0 <= y <= H-1`` (a point outside is an error, since
                 it means the XML belongs to another image or is damaged)
    returns      list of :class:`ROI` in file order (unknown names included)

    Raises :class:`InbreastError` naming the file for anything that is not an INbreast
    property list: not XML, not a plist, missing keys, malformed points.
    """
    path = Path(path)
    if not path.is_file():
        raise InbreastError(path, "no such file")
    try:
        with open(path, "rb") as f:
            root = plistlib.load(f)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, OverflowError) as e:
        raise InbreastError(path, f"not an XML property list ({type(e).__name__}: {e})") from None
    try:
        images = root["Images"]
        roi_dicts = images[0]["ROIs"]
    except (KeyError, IndexError, TypeError):
        raise InbreastError(path, "property list has no Images[0].ROIs (not an INbreast annotation file)") from None
    if not isinstance(roi_dicts, list):
        raise InbreastError(path, "Images[0].ROIs is not an array")

    rois = []
    for position, entry in enumerate(roi_dicts):
        where = f"ROI {position}"
        if not isinstance(entry, dict):
            raise InbreastError(path, f"{where} is not a dict")
        missing = [key for key in ("Name", "Type", "Point_px") if key not in entry]
        if missing:
            raise InbreastError(path, f"{where} lacks key(s) {', '.join(missing)}")
        try:
            points = [parse_point(text) for text in entry["Point_px"]]
            roi_type = int(entry["Type"])
        except (ValueError, TypeError) as e:
            raise InbreastError(path, f"{where}: {e}") from None
        if not points:
            raise InbreastError(path, f"{where} ({entry['Name']!r}) has no points")
        roi = make_roi(entry["Name"], roi_type, points, index=entry.get("IndexInImage", position))
        if image_shape is not None:
            height, width = image_shape[:2]
            x, y = roi.points[:, 0], roi.points[:, 1]
            outside = (x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)
            if outside.any():
                k = int(np.argmax(outside))
                raise InbreastError(
                    path, f"{where} ({roi.name!r}) has point (x={x[k]:.1f}, y={y[k]:.1f}) outside "
                          f"the {width} x {height} image")
        rois.append(roi)
    return rois


# ---------------------------------------------------------------------------------------
# INbreast.csv
# ---------------------------------------------------------------------------------------


@dataclass
class CsvRow:
    """One image line of INbreast.csv (strings as written; ``acr`` None when blank)."""

    file_name: str
    laterality: str
    view: str
    date: str
    acr: str | None
    birads: str


def read_csv(path) -> dict:
    """Read INbreast.csv -> ``{file_name: CsvRow}``.

    ';'-separated, header ``Patient ID;Patient age;Laterality;View;Acquisition date;File
    Name;ACR;Bi-Rads``. Rows whose File Name is not a number (footer rows, blank lines) are
    ignored; a blank ACR becomes None; BI-RADS stays a string ('4a').
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as e:
        raise InbreastError(path, f"cannot read ({e})") from None
    reader = csv.reader(io.StringIO(text), delimiter=";")
    header = next(reader, None)
    if header is None:
        raise InbreastError(path, "empty file")
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    needed = {"laterality": None, "view": None, "file name": None}
    for name in needed:
        if name not in columns:
            raise InbreastError(path, f"header has no {name!r} column (found {header!r})")

    def cell(row, name):
        i = columns.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    rows = {}
    for row in reader:
        file_name = cell(row, "file name")
        if not file_name.isdigit():  # footer or blank row
            continue
        rows[file_name] = CsvRow(file_name=file_name, laterality=cell(row, "laterality").upper(),
                                 view=cell(row, "view").upper(), date=cell(row, "acquisition date"),
                                 acr=cell(row, "acr") or None, birads=cell(row, "bi-rads").lower())
    return rows


# ---------------------------------------------------------------------------------------
# Cases of a folder
# ---------------------------------------------------------------------------------------

DICOM_NAME_RE = re.compile(
    r"^(?P<file_name>\d+)_(?P<patient>[0-9a-fA-F]{16})_MG_(?P<laterality>[LR])_(?P<view>[A-Z]+)_ANON\.dcm$")


@dataclass
class Case:
    """One image of the folder.

    file_name   the 8-digit number that also names the XML
    patient     16-hex patient hash (split by this)
    laterality  'L' | 'R'
    view        'CC' | 'MLO' | ... (file names say ML, reported here as MLO like the CSV)
    xml_path    None when the image has no findings (no XML)
    """

    file_name: str
    patient: str
    laterality: str
    view: str
    dicom_path: Path
    xml_path: Path | None
    birads: str | None = None
    acr: str | None = None

    @property
    def image_id(self) -> str:
        return self.file_name


def parse_dicom_name(name: str) -> dict:
    """``'20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm'`` ->
    ``{'file_name': '20586908', 'patient': '6c613a14b80a8591', 'laterality': 'R', 'view': 'CC'}``.

    Raises ValueError for a name not of that form. ``ML`` becomes ``MLO``.
    """
    match = DICOM_NAME_RE.match(name)
    if match is None:
        raise ValueError(f"file name {name!r} is not <FileName>_<16-hex patient>_MG_<L|R>_<view>_ANON.dcm")
    parts = match.groupdict()
    parts["patient"] = parts["patient"].lower()
    if parts["view"] == "ML":
        parts["view"] = "MLO"
    return parts


@dataclass
class CaseList:
    """The cases of a folder plus what was wrong with it (see :func:`list_cases`)."""

    folder: Path
    cases: list
    problems: Problems

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self):
        return iter(self.cases)

    def patients(self) -> list:
        return sorted({case.patient for case in self.cases})


def is_inbreast_folder(folder) -> bool:
    """True if ``folder`` has an ``AllDICOMs`` subfolder."""
    return (Path(folder) / "AllDICOMs").is_dir()


def list_cases(folder) -> CaseList:
    """List the images of an INbreast-layout folder, pairing each DICOM with its XML.

    A DICOM without XML is a normal image without findings (counted in the notes);
    an XML without a DICOM, or a DICOM whose name is not in the INbreast form, is
    recorded in ``problems`` and left out. Laterality and view come from the file name;
    where INbreast.csv exists, BI-RADS and ACR are added and disagreements are noted.
    Files are not opened here (see :func:`load_case`).
    """
    folder = Path(folder)
    dicom_dir, xml_dir = folder / "AllDICOMs", folder / "AllXML"
    if not dicom_dir.is_dir():
        raise InbreastError(folder, "is not an INbreast folder (no AllDICOMs/ inside)")
    problems = Problems()
    csv_rows = {}
    csv_path = folder / "INbreast.csv"
    if csv_path.is_file():
        try:
            csv_rows = read_csv(csv_path)
        except InbreastError as e:
            problems.note(f"INbreast.csv unreadable, ignored ({e.reason})")
    xml_by_name = {p.stem: p for p in sorted(xml_dir.glob("*.xml"))} if xml_dir.is_dir() else {}

    cases, used_xml = [], set()
    for dicom_path in sorted(dicom_dir.iterdir()):
        if dicom_path.name.startswith(".") or not dicom_path.is_file():
            continue
        try:
            parts = parse_dicom_name(dicom_path.name)
        except ValueError as e:
            problems.skip(dicom_path, str(e))
            continue
        xml_path = xml_by_name.get(parts["file_name"])
        if xml_path is None:
            problems.note("images without XML (no findings)")
        else:
            used_xml.add(parts["file_name"])
        row = csv_rows.get(parts["file_name"])
        if row is not None and (row.laterality, row.view) != (parts["laterality"], parts["view"]):
            problems.note("images whose laterality/view differ between file name and CSV (file name used)")
        cases.append(Case(file_name=parts["file_name"], patient=parts["patient"],
                          laterality=parts["laterality"], view=parts["view"], dicom_path=dicom_path,
                          xml_path=xml_path, birads=row.birads if row else None,
                          acr=row.acr if row else None))
    for name, xml_path in xml_by_name.items():
        if name not in used_xml:
            problems.skip(xml_path, "XML without its DICOM partner in AllDICOMs/ (no image to annotate)")
    return CaseList(folder=folder, cases=cases, problems=problems)


def load_case(case: Case, problems: Problems | None = None) -> tuple:
    """Read one case: ``(DicomImage, list[ROI])``, the ROIs checked against the image size.

    Raises :class:`InbreastError` (naming the file) if either file is bad. If ``problems``
    is given, unknown ROI names are counted in it.
    """
    image = read_dicom(case.dicom_path)
    rois = read_rois(case.xml_path, image.pixels.shape) if case.xml_path is not None else []
    if problems is not None:
        for roi in rois:
            if not roi.known:
                problems.note(f"ROIs with unknown name {roi.name!r} (kept as 'other')")
    return image, rois


def truth_for_dicom(path: Path, shape) -> list | None:
    """ROIs of an INbreast-layout DICOM (``.../AllDICOMs/<FileName>_..._ANON.dcm``).

    The XML is ``.../AllXML/<FileName>.xml``; an image of such a folder without XML has
    no findings (returns []). A file outside that layout has no known truth (None).
    """
    try:
        parts = parse_dicom_name(path.name)
    except ValueError:
        return None
    xml_dir = path.parent.parent / "AllXML"
    if path.parent.name != "AllDICOMs" or not xml_dir.is_dir():
        return None
    xml = xml_dir / f"{parts['file_name']}.xml"
    return read_rois(xml, shape) if xml.is_file() else []
