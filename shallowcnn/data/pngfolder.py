"""A folder of PNG patches, as the paper used: ``SOURCE/0/*.png`` (normal) and ``SOURCE/1/*.png``.

Any size is accepted and resized to 144 x 144 (bilinear) with a count in the summary;
colour and 16-bit images become 8-bit grey. A file name ``<patient>_<rest>.png`` gives
the patient id (the part before the first ``_``), so that a split by patient is possible;
without it every file is its own "patient" and the audit cannot see shared breasts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..constants import PATCH_SIZE
from ..messages import cap
from .dicom import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from .problems import Problems


def is_png_folder(folder) -> bool:
    """True if ``folder`` has a ``0/`` or ``1/`` subfolder."""
    folder = Path(folder)
    return (folder / "0").is_dir() or (folder / "1").is_dir()


def read_png(path, size: int = PATCH_SIZE) -> tuple:
    """One patch: ``(u8 (size, size), resized: bool)``. Raises ValueError naming the file,
    also for a file that is not a regular file or whose header declares more pixels than
    the readers' limits (checked before the pixels are decoded)."""
    from PIL import Image, UnidentifiedImageError     # Pillow loads only for PNG folders

    if not Path(path).is_file():
        raise ValueError(f"{path}: not a regular file")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{path}: declares {width} x {height} pixels; at most {MAX_IMAGE_SIDE} per "
                                 f"side and {MAX_IMAGE_PIXELS:,} in all are read")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                values = np.asarray(img, dtype=np.float64)
                top = 65535.0 if values.max() > 255 else 255.0
                img = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8))
            elif img.mode != "L":
                img = img.convert("L")
            resized = img.size != (size, size)
            if resized:
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8).copy(), resized
    except ValueError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: not a readable PNG image (ValueError: {cap(e)})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable PNG image ({type(e).__name__}: {cap(e)})") from None


def read_png_folder(folder, size: int = PATCH_SIZE, problems: Problems | None = None) -> dict:
    """Every PNG of ``folder/0`` and ``folder/1``.

    returns dict: ``patches`` (M, size, size) uint8, ``labels`` (M,) uint8, ``image``
    (M,) str (path relative to ``folder``), ``patient`` (M,) str; unreadable files are
    skipped and recorded in ``problems``.
    """
    folder = Path(folder)
    problems = problems if problems is not None else Problems()
    patches, labels, names, patients = [], [], [], []
    for label in (0, 1):
        sub = folder / str(label)
        if not sub.is_dir():
            problems.note(f"no {label}/ subfolder")
            continue
        before = len(labels)
        for path in sorted(sub.iterdir()):
            if path.suffix.lower() != ".png":
                if path.is_file() and not path.name.startswith("."):
                    problems.note("non-PNG files ignored")
                continue
            try:
                patch, resized = read_png(path, size)
            except ValueError as e:
                problems.skip(path, str(e).split(": ", 1)[1])
                continue
            if resized:
                problems.note(f"PNG patches resized to {size} x {size}")
            patches.append(patch)
            labels.append(label)
            names.append(str(path.relative_to(folder)))
            patients.append(path.stem.split("_")[0])
        if len(labels) == before:
            problems.note(f"{label}/ subfolder is empty (no readable PNG patches)")
    return {"patches": np.array(patches, dtype=np.uint8).reshape(-1, size, size),
            "labels": np.array(labels, dtype=np.uint8), "image": np.array(names, dtype=str),
            "patient": np.array(patients, dtype=str)}
