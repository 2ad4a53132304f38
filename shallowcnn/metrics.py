"""Classification metrics at a threshold, and the ROC curve with its area.

With labels y (N,) in {0, 1}, scores s (N,) (probabilities) and the paper's
threshold 0.5, the confusion matrix counts

    TP: y = 1, s >= t    FN: y = 1, s < t
    FP: y = 0, s >= t    TN: y = 0, s < t

and from it: accuracy (TP+TN)/N, sensitivity (recall, true-positive rate)
TP/(TP+FN), specificity TN/(TN+FP), precision TP/(TP+FP) and
F1 = 2 precision sensitivity / (precision + sensitivity). A ratio whose
denominator is 0 is reported as NaN (undefined), not as 0 or 1.

ROC AUC is the probability that a random positive scores above a random
negative (ties count one half): the Mann-Whitney statistic, computed from
ranks in O(N log N).
"""
from __future__ import annotations

import numpy as np


def _check(y_true, scores):
    y = np.asarray(y_true).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def _ratio(a, b):
    return float(a / b) if b else float("nan")


def confusion_matrix(y_true, scores, threshold=0.5) -> np.ndarray:
    """[[TN, FP], [FN, TP]] (rows: true class 0, 1; columns: predicted 0, 1)."""
    y, s = _check(y_true, scores)
    pred = s >= threshold
    return np.array([[np.sum((y == 0) & ~pred), np.sum((y == 0) & pred)],
                     [np.sum((y == 1) & ~pred), np.sum((y == 1) & pred)]], dtype=np.int64)


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve from ranks (ties get their average rank)."""
    y, s = _check(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average rank (1-based) over each run of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.r_[0, boundaries]
    ends = np.r_[boundaries, len(s)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2.0
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y_true, scores):
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) to (1, 1)."""
    y, s = _check(y_true, scores)
    thresholds = np.r_[np.inf, np.unique(s)[::-1]]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    tpr = np.array([np.sum((s >= t) & (y == 1)) for t in thresholds]) / n_pos
    fpr = np.array([np.sum((s >= t) & (y == 0)) for t in thresholds]) / n_neg
    return fpr, tpr, thresholds


def classification_metrics(y_true, scores, threshold=0.5) -> dict:
    """Every figure the paper and a radiologist ask for, as a JSON-ready dict."""
    cm = confusion_matrix(y_true, scores, threshold)
    (tn, fp), (fn, tp) = cm.tolist()
    sens, prec = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
    f1 = _ratio(2 * prec * sens, prec + sens) if not (np.isnan(prec) or np.isnan(sens)) else float("nan")
    return {
        "n": int(cm.sum()), "positives": int(tp + fn), "negatives": int(tn + fp), "threshold": threshold,
        "accuracy": _ratio(tp + tn, cm.sum()), "sensitivity": sens, "specificity": _ratio(tn, tn + fp),
        "precision": prec, "f1": f1, "roc_auc": roc_auc(y_true, scores),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def format_metrics(m: dict) -> str:
    """A small table for the terminal."""
    cm = m["confusion_matrix"]
    rows = [("patches", f"{m['n']} ({m['positives']} positive, {m['negatives']} negative)")]
    rows += [(k, f"{m[k]:.4f}") for k in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")]
    lines = [f"{k:<12} {v}" for k, v in rows]
    lines += ["", f"confusion matrix (threshold {m['threshold']})", "              predicted 0  predicted 1",
              f"  true 0      {cm['tn']:>11}  {cm['fp']:>11}", f"  true 1      {cm['fn']:>11}  {cm['tp']:>11}"]
    return "\n".join(lines)
