"""Metrics against hand-computed confusion matrices and a brute-force AUC."""
import itertools
import math

import numpy as np
import pytest

from shallowcnn.metrics import classification_metrics, confusion_matrix, roc_auc, roc_curve


def test_confusion_matrix_and_ratios_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    s = [0.9, 0.6, 0.4, 0.2, 0.5, 0.1, 0.3, 0.8]
    # at 0.5: positives predicted: 0.9 0.6 0.5 0.8 -> TP 3 (0.9, 0.6, 0.8), FP 1 (0.5); FN 1 (0.4); TN 3
    np.testing.assert_array_equal(confusion_matrix(y, s), [[3, 1], [1, 3]])
    m = classification_metrics(y, s)
    assert m["accuracy"] == 6 / 8 and m["sensitivity"] == 3 / 4 and m["specificity"] == 3 / 4
    assert m["precision"] == 3 / 4 and m["f1"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 3}


def brute_force_auc(y, s):
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)                     # rounding makes many ties
    assert roc_auc(y, s) == pytest.approx(brute_force_auc(y, s), abs=1e-12)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_roc_curve_area_matches_auc():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = rng.random(300) + 0.5 * y
    fpr, tpr, _ = roc_curve(y, s)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))   # trapezoids
    assert area == pytest.approx(roc_auc(y, s), abs=1e-12)


def test_undefined_ratios_are_nan_and_bad_labels_refused():
    m = classification_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(m["sensitivity"]) and m["specificity"] == 1.0 and math.isnan(m["precision"])
    with pytest.raises(ValueError):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        classification_metrics([0, 1, 1], [0.1, 0.2])
