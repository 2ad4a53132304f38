"""144 x 144 patches (1 cm^2 at 0.07 mm): extraction, augmentation, split, the `.npz` store.

How a store is made from an INbreast-layout folder (real or phantom)::

    for each image:  pixels --breast mask, 8-bit window (intensity.to_network_input)--> u8 image
        positives: windows of the scan's grid (stride 16 px) holding >= 3 calcifications
                   of one cluster (clusters.py), or centred inside a Cluster outline without
                   calcification marks; up to `per_cluster` windows per cluster (clusters
                   that give none are counted and named in the summary)
        negatives: windows >= 98 % inside the breast that touch no annotation of any
                   kind (bounding boxes grown by 12 px); up to `negatives_per_image`,
                   overlapping each other by at most 25 %
    split (by patient, before augmentation; or the paper's random split, after)
    augment x5 (augment.py), then balance the classes of each split by dropping
    random patches of the larger class (the paper: 7,880 + 8,460 -> 7,880 + 7,880)

A folder of PNG patches with subfolders 0/ and 1/ skips the extraction (pngfolder.py).

The store (``shallowcnn.storage`` .npz, kind ``shallowcnn.patches``) holds::

    patches    (M, 144, 144) uint8      labels   (M,) uint8 (1 = cluster present)
    patient    (M,) str                 image    (M,) str (FileName, or PNG path)
    position   (M, 2) int32 top-left (row, col) in the image, -1 if unknown
    transform  (M,) str: none | reflect | rot180 | reflect+rot180 | rot90
    split      (M,) str: train | val | test
and JSON metadata saying how it was made.
"""
from __future__ import annotations

import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..constants import PATCH_SIZE, PIXEL_MM, pixels_to_input
from ..messages import cap, listed
from ..storage import StoreError, load_npz, save_npz
from .augment import TRANSFORMS, augment
from .breast import WINDOW_PERCENTILES, window_fraction
from .clusters import find_clusters, points_in_polygon
from .inbreast import InbreastError, Problems, is_inbreast_folder, list_cases, load_case
from .intensity import to_network_input
from .pngfolder import is_png_folder, read_png_folder
from .split import DEFAULT_FRACTIONS, SPLITS, format_audit, leakage_audit, split_by_patient, split_random

STORE_KIND = "shallowcnn.patches"
STORE_VERSION = 1
POSITIVE_STRIDE = 16       # px between candidate windows: the scan's grid (scan.DEFAULT_STRIDE)
EDGE_MARGIN = 3            # a calcification centre must be this far inside a positive window
ANNOTATION_MARGIN = 12     # px added around every annotation that a negative must avoid
MIN_BREAST_FRACTION = 0.98  # of a negative window's pixels
MAX_NEGATIVE_OVERLAP = 0.25


class PatchError(ValueError):
    """The source cannot be turned into patches (names the folder)."""


# ---------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------


@dataclass
class PatchStore:
    """All patches of a store, as arrays (see the module docstring for their shapes)."""

    patches: np.ndarray
    labels: np.ndarray
    patient: np.ndarray
    image: np.ndarray
    position: np.ndarray
    transform: np.ndarray
    split: np.ndarray
    metadata: dict = field(default_factory=dict)
    path: Path | None = None      # the file (or PNG folder) it was read from, None if made in memory

    ARRAY_NAMES = ("patches", "labels", "patient", "image", "position", "transform", "split")

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Indices of the patches of ``split`` ('train' | 'val' | 'test'; None = all)."""
        if split is None:
            return np.arange(len(self))
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, not {split!r}")
        return np.flatnonzero(self.split == split)

    def arrays(self, split: str | None = None) -> tuple:
        """``(x, y)`` for training: x (n, 1, 144, 144) float32 = uint8 / 255, y (n,) float32 0/1."""
        idx = self.indices(split)
        x = pixels_to_input(self.patches[idx][:, None], np.float32)   # the paper's uint8 / 255
        return x, self.labels[idx].astype(np.float32)

    def counts(self) -> dict:
        """``{split: {"positive": n, "negative": n, "patients": n, "images": n}}``."""
        out = {}
        for name in SPLITS:
            idx = self.indices(name)
            out[name] = {"positive": int(self.labels[idx].sum()), "negative": int((self.labels[idx] == 0).sum()),
                         "patients": int(len(np.unique(self.patient[idx]))),
                         "images": int(len(np.unique(self.image[idx])))}
        return out

    def save(self, path) -> Path:
        arrays = {name: getattr(self, name) for name in self.ARRAY_NAMES}
        return save_npz(path, arrays, self.metadata)


def load_patches(path) -> PatchStore:
    """Load a store written by :func:`make_patches`.

    Checks, naming the file in a StoreError: every array present, patches (M, 144, 144)
    uint8 (float patches would be scored unscaled), labels (M,) integer 0 or 1, one entry
    per patch in every other array, and split names train/val/test.
    """
    arrays, metadata = load_npz(path, kind=STORE_KIND)
    missing = [name for name in PatchStore.ARRAY_NAMES if name not in arrays]
    if missing:
        raise StoreError(f"{path}: patch store lacks array(s) {', '.join(missing)}")
    patches, labels = arrays["patches"], arrays["labels"]
    if patches.ndim != 3 or patches.shape[1:] != (PATCH_SIZE, PATCH_SIZE) or patches.dtype != np.uint8:
        raise StoreError(f"{path}: patches must be (M, {PATCH_SIZE}, {PATCH_SIZE}) uint8, "
                         f"not {patches.shape} {patches.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "biu":
        raise StoreError(f"{path}: labels must be a 1-D integer array, not {labels.shape} {labels.dtype}")
    if not np.all((labels == 0) | (labels == 1)):
        wrong = np.unique(labels[(labels != 0) & (labels != 1)])[:5]
        raise StoreError(f"{path}: labels must be 0 or 1 (found {', '.join(str(v) for v in wrong)})")
    count = len(labels)
    wrong_length = [n for n in PatchStore.ARRAY_NAMES if arrays[n].ndim < 1 or len(arrays[n]) != count]
    if wrong_length or arrays["position"].shape != (count, 2):
        raise StoreError(f"{path}: arrays of inconsistent shapes ({', '.join(wrong_length) or 'position'} "
                         f"do not hold one entry per patch)")
    for name in ("patient", "image", "transform", "split"):
        if arrays[name].dtype.kind != "U":
            raise StoreError(f"{path}: {name} must hold text, not {arrays[name].dtype}")
    unknown = set(np.unique(arrays["split"]).tolist()) - set(SPLITS)
    if unknown:
        raise StoreError(f"{path}: split holds {', '.join(sorted(unknown))[:80]}, not only {', '.join(SPLITS)}")
    return PatchStore(**{name: arrays[name] for name in PatchStore.ARRAY_NAMES}, metadata=metadata,
                      path=Path(path))


def open_patches(source) -> PatchStore:
    """The one way in for patches: a :class:`PatchStore` from what users have.

    source  a PatchStore (returned as is), a store file (.npz, :func:`load_patches`), or a
            folder of PNG patches with 0/ and 1/: every patch as it is (no augmentation,
            no balancing), all of them in split 'test' -- a folder to score, not to train on.
    Raises :class:`PatchError` or :class:`~shallowcnn.storage.StoreError` naming the source.
    """
    if isinstance(source, PatchStore):
        return source
    path = Path(source)
    if not path.is_dir():
        return load_patches(path)
    if not is_png_folder(path):
        raise PatchError(f"{path}: a folder of patches needs subfolders 0/ and 1/ of PNG files")
    store = make_patches(path, None, augment_patches=False, balance=False, verbose=False, audit=False)
    store.split[:] = "test"
    store.metadata["split_mode"] = "whole folder in 'test'"
    store.path = path
    return store


# ---------------------------------------------------------------------------------------
# Windows of one image
# ---------------------------------------------------------------------------------------


def _calcs_inside(tops: np.ndarray, centres: np.ndarray, size: int, margin: int = EDGE_MARGIN) -> np.ndarray:
    """(C, n) bool: calcification centre j lies inside window i (``margin`` px from its edges)."""
    r = centres[None, :, 0] - tops[:, None, 0]
    c = centres[None, :, 1] - tops[:, None, 1]
    return (r >= margin) & (r <= size - 1 - margin) & (c >= margin) & (c <= size - 1 - margin)


def positive_windows(clusters, image_shape, rng, size: int = PATCH_SIZE, per_cluster: int = 20,
                     stride: int = POSITIVE_STRIDE) -> np.ndarray:
    """Top-left corners (P, 2) int (row, col) of positive windows, up to ``per_cluster`` each.

    Candidates are the windows of the scan's grid (tops at multiples of ``stride``, 16 as
    :func:`shallowcnn.scan.scan_image` uses), so the network learns the very windows a scan
    shows it. A window is positive for a cluster if it holds >= 3 of its calcifications
    (the paper's cluster: >= 3 in 1 cm^2), EDGE_MARGIN px inside; a cluster wider than a
    window therefore gives windows over parts of it. A cluster known only by its outline
    gives windows whose centre lies inside the outline. A cluster may give none (e.g. near
    the image's edge): :func:`clusters_without_positives` names them.
    """
    return np.concatenate([_cluster_windows(cluster, image_shape, rng, size, per_cluster, stride)
                           for cluster in clusters] or [np.zeros((0, 2), np.int64)]).astype(np.int64)


def _cluster_windows(cluster, image_shape, rng, size: int, per_cluster: int, stride: int) -> np.ndarray:
    """(P, 2) positive window corners of one cluster (see :func:`positive_windows`)."""
    height, width = image_shape
    r0, c0, r1, c1 = cluster.bbox
    # every grid window that could hold a point of the bounding box
    rows = np.arange(0, height - size + 1, stride, dtype=np.int64)
    cols = np.arange(0, width - size + 1, stride, dtype=np.int64)
    rows = rows[(rows + size - 1 >= r0) & (rows <= r1)]
    cols = cols[(cols + size - 1 >= c0) & (cols <= c1)]
    tops = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    if len(cluster.members) >= 3:
        ok = _calcs_inside(tops, cluster.members, size).sum(axis=1) >= 3
    else:  # an outline without (enough) marked calcifications
        ok = points_in_polygon(tops[:, ::-1] + (size - 1) / 2.0, cluster.outline)
    tops = tops[ok]
    if len(tops) > per_cluster:
        tops = tops[np.sort(rng.choice(len(tops), per_cluster, replace=False))]
    return tops


def clusters_without_positives(clusters, image_shape, size: int = PATCH_SIZE,
                               stride: int = POSITIVE_STRIDE) -> list:
    """The clusters of one image for which :func:`positive_windows` finds no window."""
    rng = np.random.default_rng(0)      # unused: a count, not a sample
    return [cl for cl in clusters if len(_cluster_windows(cl, image_shape, rng, size, 1, stride)) == 0]


def negative_windows(mask: np.ndarray, rois, rng, size: int = PATCH_SIZE, count: int = 24) -> np.ndarray:
    """Top-left corners (N, 2) int (row, col) of up to ``count`` negative windows.

    Candidates lie on a grid of stride size/3 (random phase); a candidate is kept if
    >= 98 % of it is breast and it touches no annotation (ROI bounding box grown by
    ANNOTATION_MARGIN); then, in random order, candidates overlapping an already chosen
    window by more than 25 % are dropped, so negatives are not near copies of each other.
    """
    height, width = mask.shape
    if height < size or width < size or count <= 0:
        return np.zeros((0, 2), np.int64)
    step = size // 3
    rows = np.arange(int(rng.integers(0, step)), height - size + 1, step)
    cols = np.arange(int(rng.integers(0, step)), width - size + 1, step)
    tops = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    fraction = window_fraction(mask, size)
    tops = tops[fraction[tops[:, 0], tops[:, 1]] >= MIN_BREAST_FRACTION]
    if rois and len(tops):
        boxes = np.array([roi.bbox for roi in rois])  # (R, 4) row0, col0, row1, col1
        boxes += np.array([-ANNOTATION_MARGIN, -ANNOTATION_MARGIN, ANNOTATION_MARGIN, ANNOTATION_MARGIN])
        hits = ((tops[:, None, 0] <= boxes[None, :, 2]) & (tops[:, None, 0] + size - 1 >= boxes[None, :, 0])
                & (tops[:, None, 1] <= boxes[None, :, 3]) & (tops[:, None, 1] + size - 1 >= boxes[None, :, 1]))
        tops = tops[~hits.any(axis=1)]
    chosen = []
    for k in rng.permutation(len(tops)):
        if len(chosen) == count:
            break
        if chosen:
            prev = np.array(chosen)
            dr = np.clip(size - np.abs(prev[:, 0] - tops[k, 0]), 0, None)
            dc = np.clip(size - np.abs(prev[:, 1] - tops[k, 1]), 0, None)
            if (dr * dc > MAX_NEGATIVE_OVERLAP * size * size).any():
                continue
        chosen.append(tops[k])
    chosen = np.array(chosen, dtype=np.int64).reshape(-1, 2)
    return chosen[np.lexsort((chosen[:, 1], chosen[:, 0]))]


def cut(image: np.ndarray, tops: np.ndarray, size: int = PATCH_SIZE) -> np.ndarray:
    """(N, size, size) copies of ``image[r:r+size, c:c+size]`` for each (r, c) in ``tops``."""
    out = np.empty((len(tops), size, size), dtype=image.dtype)
    for k, (r, c) in enumerate(tops):
        out[k] = image[r:r + size, c:c + size]
    return out


def _case_seed(seed: int, file_name: str) -> list:
    """Per-image seed from the global seed and the image's name (independent of the others)."""
    return [int(seed), zlib.crc32(file_name.encode("utf-8"))]


def extract_from_folder(folder, seed: int = 0, per_cluster: int = 20, negatives_per_image: int = 30,
                        size: int = PATCH_SIZE, problems: Problems | None = None, verbose: bool = True) -> dict:
    """Patches of every readable image of an INbreast-layout folder (before augmentation).

    returns dict of arrays: patches (M, size, size) uint8, labels (M,), patient, image,
    position (M, 2); plus ``clusters`` (number found), ``images`` (number read) and
    ``clusters_without_positives`` (list of "FileName (row, col)" of the clusters that
    gave no positive window)
    """
    problems = problems if problems is not None else Problems()
    case_list = list_cases(folder)
    problems.merge(case_list.problems)
    parts = {"patches": [], "labels": [], "patient": [], "image": [], "position": []}
    n_clusters = n_images = 0
    unused_clusters = []
    for case in tqdm(case_list.cases, desc="patches", unit="image", disable=None if verbose else True,
                     file=sys.stderr):
        try:
            dicom, rois = load_case(case, problems)
            clusters = find_clusters(rois, size)
        except InbreastError as e:
            if e.path != case.dicom_path:    # its XML is bad: say which image that costs
                e = InbreastError(e.path, f"{e.reason} (image {case.dicom_path.name} left out)")
            problems.skip(e)
            continue
        except (ValueError, OverflowError, MemoryError, RecursionError) as e:
            # a reader check this package does not have yet: skip the image, never the run
            problems.skip(case.dicom_path, f"unexpected {type(e).__name__}: {cap(e)}")
            continue
        if dicom.pixels.shape[0] < size or dicom.pixels.shape[1] < size:
            problems.skip(case.dicom_path, f"image {dicom.pixels.shape} smaller than one {size} x {size} patch")
            continue
        if abs(dicom.spacing_mm[0] - PIXEL_MM) > 0.005:
            problems.note(f"images whose pixel spacing is not {PIXEL_MM} mm ({PATCH_SIZE} px is then not 1 cm)")
        n_images += 1
        rng = np.random.default_rng(_case_seed(seed, case.file_name))
        u8, mask, _ = to_network_input(dicom.pixels)     # the scanner's mapping, exactly
        n_clusters += len(clusters)
        pos = positive_windows(clusters, u8.shape, rng, size, per_cluster)
        unused_clusters += [f"{case.file_name} (row {cl.centre[0]:.0f}, col {cl.centre[1]:.0f})"
                            for cl in clusters_without_positives(clusters, u8.shape, size)]
        neg = negative_windows(mask, rois, rng, size, negatives_per_image)
        tops = np.concatenate([pos, neg])
        parts["patches"].append(cut(u8, tops, size))
        parts["labels"].append(np.r_[np.ones(len(pos), np.uint8), np.zeros(len(neg), np.uint8)])
        parts["patient"] += [case.patient] * len(tops)
        parts["image"] += [case.file_name] * len(tops)
        parts["position"].append(tops)
    return {"patches": np.concatenate(parts["patches"]) if parts["patches"] else np.zeros((0, size, size), np.uint8),
            "labels": np.concatenate(parts["labels"]) if parts["labels"] else np.zeros(0, np.uint8),
            "patient": np.array(parts["patient"], dtype=str), "image": np.array(parts["image"], dtype=str),
            "position": (np.concatenate(parts["position"]) if parts["position"] else np.zeros((0, 2))).astype(np.int32),
            "clusters": n_clusters, "images": n_images, "clusters_without_positives": unused_clusters}


# ---------------------------------------------------------------------------------------
# Augmentation, balance, split -> store
# ---------------------------------------------------------------------------------------


def _balance(labels: np.ndarray, rng) -> np.ndarray:
    """Sorted indices keeping all of the smaller class and as many random ones of the larger."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    keep = min(len(pos), len(neg))
    if keep == 0:
        return np.arange(len(labels))  # one class only: nothing to balance against
    pos = pos if len(pos) == keep else rng.choice(pos, keep, replace=False)
    neg = neg if len(neg) == keep else rng.choice(neg, keep, replace=False)
    return np.sort(np.concatenate([pos, neg]))


def _augment_all(base: dict, do_augment: bool) -> dict:
    transforms = TRANSFORMS if do_augment else ("none",)
    patches, source, names = augment(base["patches"], transforms)
    out = {key: base[key][source] for key in ("labels", "patient", "image", "position")}
    out["patches"], out["transform"] = patches, names.astype("<U14")
    return out


def make_patches(source, out_path=None, seed: int = 0, split_mode: str = "patient",
                 fractions=DEFAULT_FRACTIONS, per_cluster: int = 20, negatives_per_image: int = 30,
                 augment_patches: bool = True, balance: bool = True,
                 verbose: bool = True, audit: bool = True) -> PatchStore:
    """Build a patch store from ``source`` and (if ``out_path``) save it.

    source        INbreast-layout folder (real or phantom) or PNG folder with 0/ and 1/
    split_mode    'patient' (default: by patient, before augmentation) or 'paper' (random
                  over augmented patches, as the paper; leaks -- a warning is printed)
    fractions     (train, val, test) shares, default 64/16/20
    per_cluster   positive offsets per cluster; negatives_per_image: negatives per image
    verbose       progress bar and the printed summary (counts, problems, audit)
    returns       the :class:`PatchStore` (metadata includes counts, problems and audit)

    Raises PatchError if the source is neither layout or yields no patches.
    """
    start = time.perf_counter()
    source = Path(source)
    if split_mode not in ("patient", "paper"):
        raise PatchError(f"split mode must be 'patient' or 'paper', not {split_mode!r}")
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise PatchError(f"fractions {fractions} must be three non-negative numbers summing to 1")
    problems = Problems()
    if is_inbreast_folder(source):
        source_kind = "inbreast"
        base = extract_from_folder(source, seed, per_cluster, negatives_per_image, PATCH_SIZE, problems, verbose)
    elif is_png_folder(source):
        source_kind = "png"
        base = read_png_folder(source, PATCH_SIZE, problems)
        base["position"] = np.full((len(base["labels"]), 2), -1, np.int32)
        base["clusters"], base["images"] = None, len(base["labels"])
        base["clusters_without_positives"] = []
    else:
        raise PatchError(f"{source}: neither an INbreast-layout folder (AllDICOMs/ inside) nor a PNG "
                         f"folder (0/ and 1/ inside)")
    if len(base["labels"]) == 0:
        raise PatchError(f"{source}: no patches could be made\n{problems.summary()}")
    before = {"positive": int(base["labels"].sum()), "negative": int((base["labels"] == 0).sum())}

    rng = np.random.default_rng([seed, 1])
    if split_mode == "patient":
        base_split = split_by_patient(base["patient"], base["labels"], fractions, seed)
        data = _augment_all(base, augment_patches)
        data["split"] = np.tile(base_split, len(data["labels"]) // len(base_split))
        keep = []
        for name in SPLITS:  # balance each split on its own, so each is 50/50
            idx = np.flatnonzero(data["split"] == name)
            keep.append(idx[_balance(data["labels"][idx], rng)] if balance else idx)
        order = np.concatenate(keep)
    else:
        data = _augment_all(base, augment_patches)
        order = _balance(data["labels"], rng) if balance else np.arange(len(data["labels"]))
        data = {key: value[order] for key, value in data.items()}
        data["split"] = split_random(len(order), fractions, seed)
        order = np.concatenate([np.flatnonzero(data["split"] == name) for name in SPLITS])
    data = {key: value[order] for key, value in data.items()}

    store = PatchStore(patches=np.ascontiguousarray(data["patches"]), labels=data["labels"].astype(np.uint8),
                       patient=data["patient"].astype(str), image=data["image"].astype(str),
                       position=data["position"].astype(np.int32), transform=data["transform"].astype(str),
                       split=data["split"].astype("<U5"))
    report = leakage_audit(store.patient, store.image, store.position, store.split, store.patches,
                           store.transform) if audit else None
    store.metadata = {
        "kind": STORE_KIND, "version": STORE_VERSION, "made_by": f"shallowcnn {__version__}",
        "source": str(source), "source_kind": source_kind, "seed": int(seed), "split_mode": split_mode,
        "fractions": list(fractions), "patch_size": PATCH_SIZE, "pixel_mm": PIXEL_MM,
        "per_cluster": per_cluster, "negatives_per_image": negatives_per_image,
        "positive_rule": f"windows of the scan's grid (stride {POSITIVE_STRIDE} px) holding >= 3 calcifications "
                         "of one cluster (3 px from the edge), or centred inside a Cluster outline without "
                         "marked calcifications",
        "clusters_without_positives": base["clusters_without_positives"],
        "negative_rule": f">= {MIN_BREAST_FRACTION:.0%} breast, no annotation within {ANNOTATION_MARGIN} px, "
                         f"overlap between negatives <= {MAX_NEGATIVE_OVERLAP:.0%}",
        "window": {"percentiles_of_breast_pixels": list(WINDOW_PERCENTILES), "maps_to": [0, 255],
                   "mapping": "shallowcnn.data.intensity.to_network_input (mask on ranks)",
                   "per": "image"},
        "transforms": list(TRANSFORMS if augment_patches else ("none",)), "balanced": bool(balance),
        "before_augmentation": before, "images": base["images"], "clusters": base["clusters"],
        "counts": store.counts(), "skipped": [list(s) for s in problems.skipped],
        "notes": dict(problems.notes), "audit": report,
    }
    if out_path is not None:
        store.save(out_path)
    if verbose:
        print(describe(store, problems, time.perf_counter() - start))
    return store


def describe(store: PatchStore, problems: Problems | None = None, seconds: float | None = None) -> str:
    """The printed summary: counts before augmentation and per split, problems, audit."""
    meta = store.metadata
    lines = []
    if problems is not None and (problems.skipped or problems.notes):
        lines.append(problems.summary())
    before = meta.get("before_augmentation", {})
    lines.append(f"source {meta.get('source')} ({meta.get('source_kind')}): {meta.get('images')} images, "
                 f"{meta.get('clusters')} clusters -> {before.get('positive')} positive and "
                 f"{before.get('negative')} negative patches before augmentation")
    unused = meta.get("clusters_without_positives") or []
    if unused:
        lines.append(f"{len(unused)} cluster(s) gave no positive window (fewer than 3 calcifications fit "
                     f"one window of the scan's grid):")
        lines += listed((f"  {name}" for name in unused), what="more clusters without positives")
    if meta.get("split_mode") == "paper":
        lines.append("split: the paper's random split of augmented patches")
    else:
        lines.append("split: by patient, before augmentation")
    lines.append(f"  {'split':<7}{'positive':>9}{'negative':>9}{'patients':>9}{'images':>8}")
    for name, row in store.counts().items():
        lines.append(f"  {name:<7}{row['positive']:>9}{row['negative']:>9}{row['patients']:>9}{row['images']:>8}")
    lines.append(f"  total  {len(store)} patches, transforms {', '.join(meta.get('transforms', []))}"
                 + (", balanced per split" if meta.get("balanced") else ""))
    if meta.get("audit"):
        lines.append(format_audit(meta["audit"]))
    if seconds is not None:
        lines.append(f"done in {seconds:.1f} s")
    return "\n".join(lines)
