"""A synthetic INbreast: mammogram-like DICOM images with XML annotations and INbreast.csv.

INbreast cannot be downloaded, so everything in the project runs on this phantom, which
writes the same layout and file formats (see INBREAST_FORMAT.md)::

    OUT/AllDICOMs/<FileName>_<16-hex patient>_MG_<L|R>_<CC|ML>_ANON.dcm   14-bit, 0.07 mm
    OUT/AllXML/<FileName>.xml     plist like OsiriX writes (only images with findings)
    OUT/INbreast.csv              ';'-separated, with footer rows
    OUT/PHANTOM_README.txt        says the folder is synthetic, with the seed

Each image is drawn by :func:`shallowcnn.data.phantom_render.render_image` (what one
image is made of is told there); this module plans the patients and their views, and
writes the files.

The same seed gives the same files (UIDs are derived from the seed; no timestamps).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..constants import PIXEL_MM
from ..storage import atomic_write_bytes, atomic_write_text
from .clusters import find_clusters
from .dicom import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from .inbreast import make_roi, parse_point
from .phantom_files import dicom_bytes, roi_plist_entry, xml_bytes
from .phantom_render import DEFAULT_SIZE, ImagePlan, render_image

FULL_SIZE = (3328, 4084)      # (width, height) of the larger INbreast images
DEFAULT_CASES = 20            # patients
MARKER = "PHANTOM_README.txt"
CSV_HEADER = "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"


@dataclass
class PhantomImage:
    """What the phantom wrote for one image (its ROIs exactly as the reader will see them)."""

    file_name: str
    patient: str
    laterality: str
    view: str                 # 'CC' or 'MLO' (the file name says ML)
    dicom_path: Path
    xml_path: Path | None
    rois: list = field(default_factory=list)
    birads: str = "1"


# ---------------------------------------------------------------------------------------
# Patients and the whole folder
# ---------------------------------------------------------------------------------------

OTHER_FINDINGS = ["Mass", "Mass", "Mass", "Spiculated Region", "Espiculated Region", "Spiculated region",
                  "Asymmetry", "Assymetry", "Distortion"]


def plan_patient(rng, patient_index: int) -> list:
    """The images of one patient: 4 views (both breasts, CC + MLO) or 2 (one breast)."""
    sides = ["L", "R"] if rng.random() < 0.7 else [str(rng.choice(["L", "R"]))]
    density = float(rng.uniform(-0.8, 0.8))
    plans = []
    for side in sides:
        has_clusters = rng.random() < 0.75
        for view in ("CC", "MLO"):
            clusters = int(rng.choice([1, 2, 3], p=[0.2, 0.45, 0.35])) if has_clusters else 0
            other = str(rng.choice(OTHER_FINDINGS)) if rng.random() < 0.3 else None
            plans.append(ImagePlan(laterality=side, view=view, clusters=clusters,
                                   outline=clusters > 0 and rng.random() < 0.5,
                                   isolated=int(rng.poisson(1.2)), other_finding=other, density=density))
    return plans


def _birads(rng, plan: ImagePlan) -> str:
    if plan.clusters:
        return str(rng.choice(["4a", "4b", "4c", "5"]))
    if plan.other_finding:
        return str(rng.choice(["3", "4a", "4b", "5"]))
    return str(rng.choice(["1", "2"]))


def parse_size(text) -> tuple:
    """``'832x1024'`` -> (832, 1024) (width, height); ``'full'`` -> 3328 x 4084; ``'demo'``."""
    if isinstance(text, (tuple, list)):
        width, height = text
    elif str(text).lower() == "full":
        width, height = FULL_SIZE
    elif str(text).lower() == "demo":
        width, height = DEFAULT_SIZE
    else:
        try:
            width, height = (int(t) for t in str(text).lower().split("x"))
        except ValueError:
            raise ValueError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 832x1024), 'demo' or 'full'") from None
    if width < 300 or height < 300:
        raise ValueError(f"size {width}x{height} is too small: at least 300 x 300 pixels (2.1 cm)")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"size {width}x{height} is too large: at most {MAX_IMAGE_SIDE} pixels a side and "
                         f"{MAX_IMAGE_PIXELS:,} in all (what the readers accept)")
    return int(width), int(height)


def generate_phantom(out, cases: int = DEFAULT_CASES, seed: int = 0, size=DEFAULT_SIZE,
                     overwrite: bool = False, verbose: bool = True) -> list:
    """Write a phantom INbreast folder and return what was written.

    out      folder to create (must not already hold AllDICOMs/ unless ``overwrite`` and
             it is itself a phantom)
    cases    number of patients (each with 2 or 4 images)
    size     (width, height) in pixels, or a string for :func:`parse_size`
    returns  list of :class:`PhantomImage` in file order, with the ROIs as written
    """
    out = Path(out)
    width, height = parse_size(size)
    if cases < 1:
        raise ValueError("cases must be at least 1")
    dicom_dir, xml_dir = out / "AllDICOMs", out / "AllXML"
    if dicom_dir.exists() and any(dicom_dir.iterdir()):
        if not (overwrite and (out / MARKER).exists()):
            raise FileExistsError(f"{out} already holds AllDICOMs/; choose an empty folder"
                                  + (" (only a phantom folder can be overwritten)" if overwrite else
                                     " or overwrite it if it is a phantom"))
        for old in list(dicom_dir.glob("*_ANON.dcm")) + list(xml_dir.glob("*.xml")):
            old.unlink()
    dicom_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    plans = []  # (patient, date, plan)
    for p in range(cases):
        patient = rng.bytes(8).hex()
        date = f"{int(rng.integers(2008, 2011))}{int(rng.integers(1, 13)):02d}"
        plans += [(patient, date, plan) for plan in plan_patient(rng, p)]
    file_names = rng.choice(np.arange(20_000_000, 54_000_000), size=len(plans), replace=False)

    written, csv_lines = [], [CSV_HEADER]
    for k, ((patient, date, plan), number) in enumerate(
            tqdm(list(zip(plans, file_names)), desc="phantom images", unit="image",
                 disable=None if verbose else True)):
        image_rng = np.random.default_rng([seed, k])       # each image reproducible on its own
        pixels, rois = render_image(image_rng, width, height, plan)
        file_name = str(int(number))
        view_in_name = "ML" if plan.view == "MLO" else plan.view
        dicom_path = dicom_dir / f"{file_name}_{patient}_MG_{plan.laterality}_{view_in_name}_ANON.dcm"
        atomic_write_bytes(dicom_path, dicom_bytes(pixels, f"{seed}:{k}", patient))
        xml_path, truth = None, []
        if rois:
            entries = [roi_plist_entry(n, t, p, i, pixels) for i, (n, t, p) in enumerate(rois)]
            xml_path = atomic_write_bytes(xml_dir / f"{file_name}.xml", xml_bytes(entries))
            # the truth is what the file says (6 decimals), exactly as a reader parses it
            truth = [make_roi(e["Name"], e["Type"], [parse_point(s) for s in e["Point_px"]], e["IndexInImage"])
                     for e in entries]
        birads = _birads(image_rng, plan)
        acr = "" if image_rng.random() < 0.1 else str(int(np.clip(round(2.5 + plan.density * 1.5), 1, 4)))
        csv_lines.append(f"removed;removed;{plan.laterality};{plan.view};{date};{file_name};{acr or ' '};{birads}")
        written.append(PhantomImage(file_name=file_name, patient=patient, laterality=plan.laterality,
                                    view=plan.view, dicom_path=dicom_path, xml_path=xml_path,
                                    rois=truth, birads=birads))
    csv_lines += [";;;;;;;", f"Synthetic phantom ({len(written)} images);;;;;;;", ""]
    atomic_write_text(out / "INbreast.csv", "\n".join(csv_lines))
    atomic_write_text(out / MARKER,
                      "Synthetic mammograms written by `shallowcnn phantom` -- not patient data.\n"
                      f"seed={seed} cases={cases} size={width}x{height} pixel={PIXEL_MM} mm\n"
                      "Layout and formats follow the INbreast release (AllDICOMs/, AllXML/, INbreast.csv).\n")
    return written


def summarise(images) -> str:
    """One paragraph: patients, images, findings written."""
    kinds = {}
    clusters = outlines = 0
    for image in images:
        for roi in image.rois:
            kinds[roi.label] = kinds.get(roi.label, 0) + 1
        clusters += len(find_clusters(image.rois))
        outlines += sum(roi.kind == "cluster" for roi in image.rois)
    patients = len({image.patient for image in images})
    with_xml = sum(image.xml_path is not None for image in images)
    parts = ", ".join(f"{count} {label}" for label, count in sorted(kinds.items()))
    return (f"{patients} patients, {len(images)} images ({with_xml} with XML); "
            f"{clusters} microcalcification clusters ({outlines} with a Cluster outline); ROIs: {parts}")
