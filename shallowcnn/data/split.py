"""Train / validation / test splits, and an audit of what leaks between them.

The default splits by **patient** before augmentation: every patch of one woman (all
her images, all offsets, all transforms) lands in one split, so the test set measures
how the network does on a breast it has never seen. Patients with and without positive
patches are split separately (stratified), so that every split gets both classes.

The paper instead split the 15,760 *augmented* patches at random. Then the reflection of
a test patch sits in the training set, and so do overlapping windows of the same
cluster: the test accuracy measures memory more than generalisation. ``split_random``
keeps that option for reproducing the paper; :func:`leakage_audit` counts the damage.
"""
from __future__ import annotations

import numpy as np

from ..constants import PATCH_SIZE
from .augment import undo_transform

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.64, 0.16, 0.20)


def split_by_patient(patient: np.ndarray, labels: np.ndarray, fractions=DEFAULT_FRACTIONS,
                     seed: int = 0) -> np.ndarray:
    """Assign each patient (and so each of her patches) to one split.

    patient    (M,) str patient id of each patch
    labels     (M,) 0/1
    fractions  target share of patches for (train, val, test)
    returns    (M,) str array of 'train' | 'val' | 'test'

    Patients are taken in a random (seeded) order; each goes to the split that is
    furthest below its target, in relative terms. With at least three patients in a
    stratum, every split gets at least one of them.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(np.asarray(patient), return_inverse=True)
    patches_per = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    positives_per = np.bincount(inverse, weights=np.asarray(labels, np.float64), minlength=len(ids))
    assignment = np.zeros(len(ids), dtype=np.int64)
    for stratum in (positives_per > 0, positives_per == 0):
        members = rng.permutation(np.flatnonzero(stratum))
        target = fractions * patches_per[members].sum()
        filled = np.zeros(len(fractions))
        for pid in members:
            deficit = np.where(target > 0, (target - filled) / np.maximum(target, 1e-12), -np.inf)
            k = int(np.argmax(deficit))
            assignment[pid] = k
            filled[k] += patches_per[pid]
    return np.array(SPLITS)[assignment[inverse]]


def split_random(count: int, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> np.ndarray:
    """The paper's split: patches (already augmented) shuffled and cut 64/16/20. LEAKS.

    returns (count,) str array of 'train' | 'val' | 'test'
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    n_train = int(round(fractions[0] * count))
    n_val = int(round(fractions[1] * count))
    split = np.empty(count, dtype="<U5")
    split[order[:n_train]] = "train"
    split[order[n_train:n_train + n_val]] = "val"
    split[order[n_train + n_val:]] = "test"
    return split


def _signatures(patches: np.ndarray, transform: np.ndarray, block: int = 6) -> np.ndarray:
    """(M, (144/block)^2) float32 unit vectors: block means of each patch, back in its original
    orientation and with its mean removed, so that the dot product of two is a correlation."""
    count, size = patches.shape[0], patches.shape[1]
    cells = size // block
    out = np.empty((count, cells * cells), np.float32)
    for name in np.unique(transform):
        idx = np.flatnonzero(transform == name)
        for start in range(0, len(idx), 2048):
            part = idx[start:start + 2048]
            canon = undo_transform(patches[part], str(name)).astype(np.float32)
            small = canon[:, :cells * block, :cells * block].reshape(len(part), cells, block, cells, block)
            vec = small.mean(axis=(2, 4)).reshape(len(part), -1)
            vec -= vec.mean(axis=1, keepdims=True)
            vec /= np.linalg.norm(vec, axis=1, keepdims=True) + 1e-6
            out[part] = vec
    return out


def leakage_audit(patient, image, position, split, patches=None, transform=None, size: int = PATCH_SIZE,
                  overlap: float = 0.5, correlation: float = 0.95) -> dict:
    """Count what two splits share.

    patient, image  (M,) str;  position (M, 2) int top-left (row, col), -1 if unknown
    split           (M,) str;  patches (M, S, S) uint8 and transform (M,) str (optional)

    For each pair of splits (A, B) reports: patients and images in both; patches of B
    whose window overlaps a window of A in the same image by >= ``overlap`` of its area
    (this includes augmented copies of one window); and, if patches are given, patches
    of B whose block-mean signature correlates >= ``correlation`` with one of A (near
    duplicates, whatever their origin). Returns ``{"train/val": {...}, ...}``.
    """
    patient, image, split = np.asarray(patient), np.asarray(image), np.asarray(split)
    position = np.asarray(position).reshape(-1, 2)
    signatures = None
    if patches is not None and len(patches):
        if transform is None:
            transform = np.full(len(patches), "none")
        signatures = _signatures(patches, np.asarray(transform))
    report = {}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        in_a, in_b = split == a, split == b
        shared_patients = np.intersect1d(patient[in_a], patient[in_b])
        shared_images = np.intersect1d(image[in_a], image[in_b])
        overlapping = np.zeros(len(split), dtype=bool)
        for img in shared_images:
            win_a = position[in_a & (image == img)]
            idx_b = np.flatnonzero(in_b & (image == img))
            win_b = position[idx_b]
            ok_a = win_a[(win_a >= 0).all(axis=1)]
            if not len(ok_a):
                continue
            dr = np.clip(size - np.abs(win_b[:, None, 0] - ok_a[None, :, 0]), 0, None)
            dc = np.clip(size - np.abs(win_b[:, None, 1] - ok_a[None, :, 1]), 0, None)
            hit = ((dr * dc) >= overlap * size * size).any(axis=1) & (win_b >= 0).all(axis=1)
            overlapping[idx_b[hit]] = True
        similar = 0
        if signatures is not None and in_a.any() and in_b.any():
            sig_a = signatures[in_a]
            found = []
            for part in np.array_split(np.flatnonzero(in_b), max(1, in_b.sum() // 2048)):
                found.append((signatures[part] @ sig_a.T).max(axis=1) >= correlation)
            similar = int(np.concatenate(found).sum())
        report[f"{a}/{b}"] = {"patients": int(len(shared_patients)), "images": int(len(shared_images)),
                              "overlapping_windows": int(overlapping.sum()), "similar_pixels": similar}
    return report


def format_audit(report: dict) -> str:
    """The audit as a few aligned lines."""
    lines = ["leakage audit (shared between splits):",
             f"  {'splits':<11}{'patients':>9}{'images':>8}{'overlapping':>13}{'similar':>9}"]
    for pair, row in report.items():
        lines.append(f"  {pair:<11}{row['patients']:>9}{row['images']:>8}"
                     f"{row['overlapping_windows']:>13}{row['similar_pixels']:>9}")
    lines.append("  (overlapping: patches of the second split whose window covers >= 50 % of a window of "
                 "the first in the same image, augmented copies included; similar: block-mean correlation "
                 ">= 0.95)")
    return "\n".join(lines)
