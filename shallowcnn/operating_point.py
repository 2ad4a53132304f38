"""The operating point: a detection threshold chosen from data, not 0.5 by habit.

A patch classifier's 0.5 says nothing about how many false positives a reader will meet
per mammogram. The threshold is therefore chosen on the **validation patients'** whole
mammograms (never the test patients'): the lowest threshold whose false positives per
image stay at or below a stated rate (default 1 per image), i.e. the most sensitive point
of the validation FROC curve that keeps that promise. It is stored in the model's
metadata (``operating_point``) and used by ``scan``, the page and the demo whenever no
``--threshold`` is given.
"""
from __future__ import annotations

import numpy as np

TARGET_FP_PER_IMAGE = 1.0
FALLBACK_THRESHOLD = 0.5     # models without an operating point (trained before it existed)


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
