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
the case and record it in a :class:`Problems` list, which prints a summary at the end
(both in :mod:`~shallowcnn.data.problems`). One DICOM file is read by
:mod:`~shallowcnn.data.dicom`, which checks its header before decoding pixels.
"""
from __future__ import annotations

import csv
import io
import plistlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from xml.parsers.expat import ExpatError

import numpy as np

from ..messages import cap, number, short
from .dicom import (MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, PIXEL_MM_RANGE, DicomImage,  # noqa: F401 (re-exported)
                    check_dicom_header, read_dicom, read_dicom_pixels)
from .problems import InbreastError, Problems, ReaderWarning  # noqa: F401 (re-exported)

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
    """``"(670.893982, 2554.969971)"`` -> ``(670.893982, 2554.969971)`` as (x, y) floats.

    Raises ValueError (message capped in length) for anything else: not a string, not
    two numbers in brackets, or numbers that overflow to infinity.
    """
    match = _POINT_RE.match(str(text)) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"point {short(text)} is not of the form '(x, y)'")
    try:
        x, y = float(match.group(1)), float(match.group(2))
    except ValueError:
        raise ValueError(f"point {short(text)} is not of the form '(x, y)'") from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"point {short(text)} is not finite")
    return x, y


MAX_ROIS = 20_000   # per image; INbreast's busiest image has a few hundred


def _whole_number(value, name: str) -> int:
    """An integer field of a ROI (``Type``, ``IndexInImage``); ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} {short(value)} is not a whole number")
    try:
        as_float = float(value)
    except ValueError:
        raise ValueError(f"{name} {short(value)} is not a whole number") from None
    if not (np.isfinite(as_float) and as_float.is_integer() and abs(as_float) < 2 ** 31):
        raise ValueError(f"{name} {short(value)} is not a whole number")
    return int(as_float)


def read_rois(path, image_shape=None, image_name=None, problems: Problems | None = None) -> list:
    """Read every ROI of an INbreast XML property list.

    path         AllXML/<FileName>.xml
    image_shape  (H, W) of the image, if known: points are then kept inside it
                 (:func:`clip_to_image`): sub-pixel coordinates run up to the width, so
                 x in (W-1, W] is the last column; a point further out is clipped too, with
                 a warning naming the image, this file and the ROI, and the rest is kept
    image_name   the image's file, for that warning; problems: where the warning is
                 recorded (a :class:`Problems`), else it is issued with ``warnings.warn``
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
    except RecursionError:
        # plistlib also reads binary plists, whose nesting it follows by recursion
        raise InbreastError(path, "property list nested too deeply (damaged or hostile file)") from None
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, OverflowError,
            KeyError, IndexError, UnicodeDecodeError) as e:
        raise InbreastError(path, f"not an XML property list ({type(e).__name__}: {cap(e)})") from None
    try:
        images = root["Images"]
        roi_dicts = images[0]["ROIs"]
    except (KeyError, IndexError, TypeError):
        raise InbreastError(path, "property list has no Images[0].ROIs (not an INbreast annotation file)") from None
    if not isinstance(roi_dicts, list):
        raise InbreastError(path, "Images[0].ROIs is not an array")
    if len(roi_dicts) > MAX_ROIS:
        raise InbreastError(path, f"{len(roi_dicts):,} ROIs; at most {MAX_ROIS:,} per image are read")

    rois = []
    for position, entry in enumerate(roi_dicts):
        where = f"ROI {position}"
        if not isinstance(entry, dict):
            raise InbreastError(path, f"{where} is not a dict")
        missing = [key for key in ("Name", "Type", "Point_px") if key not in entry]
        if missing:
            raise InbreastError(path, f"{where} lacks key(s) {', '.join(missing)}")
        if not isinstance(entry["Point_px"], list):
            raise InbreastError(path, f"{where}: Point_px is not an array")
        try:
            points = [parse_point(text) for text in entry["Point_px"]]
            roi_type = _whole_number(entry["Type"], "Type")
            index = _whole_number(entry.get("IndexInImage", position), "IndexInImage")
        except ValueError as e:
            raise InbreastError(path, f"{where}: {e}") from None
        if not points:
            raise InbreastError(path, f"{where} ({short(entry['Name'])}) has no points")
        roi = make_roi(entry["Name"], roi_type, points, index=index)
        if image_shape is not None:
            warning = clip_to_image(roi, image_shape)
            if warning:
                message = (f"{path}: {where} ({short(roi.name)}) {warning}; clipped to the border, "
                           f"the rest of the file kept (image {image_name or 'unnamed'})")
                if problems is not None:
                    problems.note(message)
                else:
                    warnings.warn(message, AnnotationClipped, stacklevel=2)
        rois.append(roi)
    return rois


class AnnotationClipped(ReaderWarning):
    """An annotation point lay outside its image and was moved onto the border (the message
    starts with the XML's path, so the command line prints it as its own warning)."""


def clip_to_image(roi: ROI, image_shape) -> str | None:
    """Move the points of ``roi`` into the (H, W) image, in place.

    INbreast's sub-pixel coordinates run from 0 up to the width (a point at x = 3327.74 on
    a 3328-pixel-wide image lies in the last column), so x in (W-1, W] becomes W-1 without
    a word, and likewise y. Returns None then, or, for a point truly outside (x < 0 or
    x > W, or y likewise), a description of the first such point (the points are clipped
    all the same, so that one stray point does not cost the image its truth).
    """
    height, width = image_shape[:2]
    x, y = roi.points[:, 0], roi.points[:, 1]
    outside = (x < 0) | (x > width) | (y < 0) | (y > height)
    warning = None
    if outside.any():
        k = int(np.argmax(outside))
        warning = (f"has {int(outside.sum())} point(s) outside the {width} x {height} image, the first "
                   f"(x={number(x[k])}, y={number(y[k])})")
    roi.points[:, 0] = np.clip(x, 0, width - 1)
    roi.points[:, 1] = np.clip(y, 0, height - 1)
    return warning


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
    reader = csv.reader(io.StringIO(text), delimiter=";", strict=True)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise InbreastError(path, f"not a readable ';'-separated table ({cap(e)})") from None
    if header is None:
        raise InbreastError(path, "empty file")
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    needed = {"laterality": None, "view": None, "file name": None}
    for name in needed:
        if name not in columns:
            raise InbreastError(path, f"header has no {name!r} column (found {short(header, 120)})")

    def cell(row, name):
        i = columns.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    rows = {}
    try:
        for row in reader:
            file_name = cell(row, "file name")
            if not file_name.isdigit():  # footer or blank row
                continue
            rows[file_name] = CsvRow(file_name=file_name, laterality=cell(row, "laterality").upper(),
                                     view=cell(row, "view").upper(), date=cell(row, "acquisition date"),
                                     acr=cell(row, "acr") or None, birads=cell(row, "bi-rads").lower())
    except csv.Error as e:  # a field over csv's size limit, a quote never closed, ...
        raise InbreastError(path, f"not a readable ';'-separated table at line {reader.line_num} ({cap(e)})") from None
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
        if dicom_path.name.startswith("."):
            continue
        if not dicom_path.is_file():   # a folder, FIFO, socket or broken link: never opened
            problems.skip(dicom_path, "not a regular file (a folder, FIFO or broken link?)")
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
    rois = (read_rois(case.xml_path, image.pixels.shape, case.dicom_path.name, problems)
            if case.xml_path is not None else [])
    if problems is not None:
        for roi in rois:
            if not roi.known:
                problems.note(f"ROIs with unknown name {short(roi.name)} (kept as 'other')")
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
    return read_rois(xml, shape, path.name) if xml.is_file() else []
