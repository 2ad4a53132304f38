"""The operating point: a detection threshold chosen from data, not 0.5 by habit.

A patch classifier's 0.5 says nothing about how many false positives a reader will meet
per mammogram. The threshold is therefore chosen on the **validation patients'** whole
mammograms (never the test patients'): the lowest threshold whose false positives per
image stay at or below a stated rate (default 1 per image), i.e. the most sensitive point
of the validation FROC curve that keeps that promise. It is stored in the model's
metadata (``operating_point``) and used by ``scan``, the page and the demo whenever no
``--threshold`` is given.

The candidate stage's non-maximum suppression distance is chosen the same way, on the
same mammograms: each distance of :data:`NMS_CHOICES` gives its own validation FROC, and
the one whose operating point finds the most clusters at the stated rate is kept (ties:
the larger distance, fewer candidates per image). A smaller distance lets two clusters a
window apart both be found, at the price of more candidates near one finding; which way
that balance falls depends on the model, so the data decide. The distance is stored
beside the threshold (``nms_px``) and used whenever no ``--nms`` is given.
"""
from __future__ import annotations

import numpy as np

from .constants import PATCH_SIZE

TARGET_FP_PER_IMAGE = 1.0
FALLBACK_THRESHOLD = 0.5     # models without an operating point (trained before it existed)
FALLBACK_NMS_PX = float(PATCH_SIZE)   # no two detections' windows overlap
NMS_CHOICES = (144.0, 120.0, 96.0, 72.0)   # px; the largest first (the preferred one on a tie)


def choose_threshold(curve, fp_per_image: float = TARGET_FP_PER_IMAGE) -> dict:
    """The operating point of a :class:`~shallowcnn.froc.FrocCurve` for a false-positive rate.

    returns  ``{"threshold", "sensitivity", "fp_per_image", "target_fp_per_image",
             "images", "clusters"}``: the lowest swept threshold with
             ``fp_per_image <= target``. The curve's thresholds are the candidates'
             probabilities, so the threshold sits exactly on a detection's probability.
    """
    ok = np.flatnonzero(curve.fp_per_image <= fp_per_image)
    i = int(ok[-1]) if len(ok) else 0     # thresholds descend: the last allowed is the lowest
    return {"threshold": float(curve.thresholds[i]), "sensitivity": float(curve.sensitivity[i]),
            "fp_per_image": float(curve.fp_per_image[i]), "target_fp_per_image": float(fp_per_image),
            "images": int(curve.n_images), "clusters": int(curve.n_clusters)}


def model_threshold(model, threshold: float | None = None) -> float:
    """``threshold`` if given, else the model's stored operating point, else 0.5."""
    if threshold is not None:
        return float(threshold)
    point = (getattr(model, "metadata", None) or {}).get("operating_point") or {}
    value = point.get("threshold")
    if isinstance(value, (int, float)) and 0.0 <= value <= 1.0:
        return float(value)
    return FALLBACK_THRESHOLD


def choose_operating_point(curves: dict, fp_per_image: float = TARGET_FP_PER_IMAGE) -> dict:
    """The operating point over several NMS distances: :func:`choose_threshold` of each
    distance's curve, the most sensitive kept (ties: the larger distance), with ``nms_px``.

    curves  {nms_px: :class:`~shallowcnn.froc.FrocCurve`} of the same images
    returns :func:`choose_threshold`'s dict plus ``"nms_px"`` and ``"sensitivity_by_nms"``
            ({str(nms_px): sensitivity at its own operating point}: what the choice saw)
    """
    if not curves:
        raise ValueError("choose_operating_point needs at least one FROC curve")
    points = {float(nms): choose_threshold(curve, fp_per_image) for nms, curve in curves.items()}
    best = max(sorted(points, reverse=True), key=lambda nms: points[nms]["sensitivity"])  # max keeps the first
    return {**points[best], "nms_px": best,
            "sensitivity_by_nms": {f"{nms:g}": p["sensitivity"] for nms, p in sorted(points.items(), reverse=True)}}


def model_nms(model, nms_px: float | None = None) -> float:
    """``nms_px`` if given, else the model's stored NMS distance, else 144 (one window)."""
    if nms_px is not None:
        return float(nms_px)
    point = (getattr(model, "metadata", None) or {}).get("operating_point") or {}
    value = point.get("nms_px")
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    return FALLBACK_NMS_PX
