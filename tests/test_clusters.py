"""find_clusters against a naive reference, and its cost on many calcifications."""
from __future__ import annotations

import numpy as np
import pytest

from shallowcnn.data.clusters import link_by_windows, find_clusters
from shallowcnn.data.inbreast import ROI_TYPE_POINT, make_roi


def naive_links(centres, size, min_calcifications=3):
    """The rule of clusters.py written as plain loops over every point and candidate window.

    For each point: every window on whole pixels holding it whose top row and left column
    each touch a point inside ("snug"), tried in (top, left) order; the first fullest wins
    and, if it holds enough points, they are all linked.
    """
    px = np.floor(np.asarray(centres)).astype(int).reshape(-1, 2)
    n = len(px)
    group = list(range(n))

    def root(k):
        while group[k] != k:
            k = group[k]
        return k

    clustered = [False] * n
    for i in range(n):
        r, c = px[i]
        best_count, best_members = -1, None
        for top in sorted({int(v) for v in px[:, 0] if r - size < v <= r}):
            for left in sorted({int(v) for v in px[:, 1] if c - size < v <= c}):
                members = [j for j in range(n) if top <= px[j, 0] < top + size and left <= px[j, 1] < left + size]
                snug = any(px[j, 0] == top for j in members) and any(px[j, 1] == left for j in members)
                count = len(members) if snug else 0
                if count > best_count:
                    best_count, best_members = count, members
        if best_count >= min_calcifications:
            for j in best_members:
                clustered[j] = True
                group[root(j)] = root(i)
    return clustered, [root(k) for k in range(n)]


def same_partition(a, b) -> bool:
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


@pytest.mark.parametrize("seed", range(12))
def test_links_match_the_naive_rule(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(3, 9))
    centres = rng.uniform(-5, 30, size=(int(rng.integers(0, 30)), 2))
    clustered, groups = link_by_windows(centres, size, 3)
    want_clustered, want_roots = naive_links(centres, size)
    assert clustered.tolist() == want_clustered
    assert same_partition(groups.roots(), want_roots)


def test_hand_worked_clusters():
    # size 10: three points within one window form a cluster; a fourth 30 px away is alone.
    rois = [make_roi("Calcification", ROI_TYPE_POINT, [[x, y]]) for x, y in
            [(1.5, 1.5), (5.2, 3.0), (9.9, 9.9), (40.0, 40.0)]]
    clusters = find_clusters(rois, size=10)
    assert len(clusters) == 1
    np.testing.assert_allclose(clusters[0].centre, [(1.5 + 3.0 + 9.9) / 3, (1.5 + 5.2 + 9.9) / 3])
    # Pixels 1, 5 and 11: a 10-pixel window spans pixels t .. t+9, so 1 and 11 never share one.
    far = [make_roi("Calcification", ROI_TYPE_POINT, [[x, x]]) for x in (1.5, 5.0, 11.0)]
    assert find_clusters(far, size=10) == []


def test_damaged_coordinates_are_refused():
    rois = [make_roi("Calcification", ROI_TYPE_POINT, [[x, 1.0]]) for x in (1.0, 2.0, float("nan"))]
    with pytest.raises(ValueError, match="finite"):
        find_clusters(rois)


@pytest.mark.parametrize("extent", [144.0, 1e8])
def test_many_calcifications_finish(extent):
    """10,000 points, crowded into 1 cm^2 or spread absurdly far: bounded work (no timing assert;
    benchmarks/bench_clusters.py times it). Crowded, they form one cluster."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, extent, size=(10_000, 2))
    clustered, groups = link_by_windows(centres, 144, 3)
    if extent == 144.0:
        assert clustered.all() and len(set(groups.roots())) == 1
    else:
        assert not clustered.any()
