"""Microcalcification clusters: at least 3 calcifications within 1 cm^2 (BI-RADS).

INbreast annotates each microcalcification on its own (a point or a tiny contour) and
draws a Cluster outline only on some images, so clusters are found here from the
individual calcifications as well as from the outlines:

1. every calcification is reduced to its centre (row, col);
2. a calcification is *clustered* if some 144 x 144 window (1 cm^2 at 0.07 mm, on whole
   pixels as patches are) holds it and at least two others; the calcifications of its
   fullest such window are linked together;
3. linked calcifications form one cluster (union-find), and a Cluster outline joins the
   clusters of the calcifications it encloses (an outline with none is a cluster too).

Step 2 looks only at each calcification's neighbours (a grid of 1 cm cells), so an image
with n calcifications costs about n times the crowd around each, not n^2: 10,000
calcifications take well under a second (benchmarks/bench_clusters.py).

The cluster centres are the ground truth for FROC scoring of whole-mammogram scans, and
the clusters are what positive patches are cut around.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import PATCH_SIZE
from .unionfind import UnionFind

MIN_CALCIFICATIONS = 3  # BI-RADS: a cluster is >= 3 calcifications within 1 cm^2
MAX_COORDINATE = 1e9    # px; beyond this a coordinate is damage, not a mammogram


@dataclass
class Cluster:
    """One microcalcification cluster of an image.

    centre   (2,) float (row, col): the mean of the outline points if there is an
             outline, else the mean of the member calcifications
    members  (n, 2) float (row, col) centres of the calcifications it holds (n may be 0
             for an outline drawn without calcification annotations)
    outline  (K, 2) float (x, y) polygon of the Cluster ROI, or None
    """

    centre: np.ndarray
    members: np.ndarray
    outline: np.ndarray | None = None

    @property
    def source(self) -> str:
        """'points', 'outline' or 'points+outline': what the cluster was found from."""
        if self.outline is None:
            return "points"
        return "points+outline" if len(self.members) else "outline"

    @property
    def bbox(self) -> tuple:
        """(row0, col0, row1, col1) float bounds of members and outline together."""
        pieces = [self.members]
        if self.outline is not None:
            pieces.append(self.outline[:, ::-1])
        allpts = np.concatenate([p for p in pieces if len(p)])
        return (float(allpts[:, 0].min()), float(allpts[:, 1].min()),
                float(allpts[:, 0].max()), float(allpts[:, 1].max()))


def calcification_centres(rois) -> np.ndarray:
    """(K, 2) float (row, col) centres of the calcification ROIs (points or contour means)."""
    centres = [roi.centre_xy[::-1] for roi in rois if roi.kind == "calcification"]
    return np.array(centres, dtype=np.float64).reshape(-1, 2)


def points_in_polygon(points_xy: np.ndarray, polygon_xy: np.ndarray) -> np.ndarray:
    """Even-odd rule: which of the (N, 2) points (x, y) lie inside the closed (K, 2) polygon.

    returns (N,) bool. A ray from each point towards +x crosses the polygon edges an odd
    number of times exactly when the point is inside.
    """
    points_xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    x, y = points_xy[:, 0:1], points_xy[:, 1:2]                 # (N, 1)
    x0, y0 = polygon_xy[:, 0], polygon_xy[:, 1]                 # (K,)
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    straddles = (y0 > y) != (y1 > y)                            # (N, K) edge crosses the ray's row
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    crossings = straddles & (x < x_cross)
    return (crossings.sum(axis=1) % 2) == 1


def _grid_cells(pixels: np.ndarray, size: int) -> dict:
    """``{(cell_row, cell_col): indices}``: the points bucketed into size x size cells.

    Every window of side ``size`` that holds a point of cell (a, b) lies inside the 3 x 3
    cells around it, so the work per point depends on its neighbours, not on all points.
    """
    cells = {}
    keys = pixels // size
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    sorted_keys = keys[order]
    breaks = np.flatnonzero(np.any(np.diff(sorted_keys, axis=0) != 0, axis=1)) + 1
    for chunk in np.split(order, breaks):
        if len(chunk):
            cells[(int(keys[chunk[0], 0]), int(keys[chunk[0], 1]))] = chunk
    return cells


def _window_counts(rows: np.ndarray, cols: np.ndarray, size: int) -> tuple:
    """How many points each candidate window holds, on compressed coordinates.

    rows, cols  (n,) int pixel coordinates of the points of a neighbourhood
    returns     ``(top_values, left_values, counts)``: the sorted distinct rows (R,) and
                columns (C,), and counts (R, C): points inside the window whose top-left
                corner is (top_values[a], left_values[b]), or 0 if no point inside lies on
                its top row or none on its left column

    A window can always be slid down and right until a point inside lies on its top row
    and one on its left column, without losing a point. Counting only such *snug* windows
    gives each set of points one position, so ties between equally full windows are broken
    by the points themselves, not by which other points happen to be near. Counts come from
    a 2-D prefix sum over the compressed grid.
    """
    top_values, row_index = np.unique(rows, return_inverse=True)
    left_values, col_index = np.unique(cols, return_inverse=True)
    hist = np.zeros((len(top_values) + 1, len(left_values) + 1), dtype=np.int64)
    np.add.at(hist, (row_index.ravel() + 1, col_index.ravel() + 1), 1)
    prefix = hist.cumsum(axis=0).cumsum(axis=1)              # prefix[a, b]: points in rows < a, cols < b
    last_row = np.searchsorted(top_values, top_values + size)   # first row index outside each window
    last_col = np.searchsorted(left_values, left_values + size)
    # in_rows[a, b]: points in the window's rows (a .. last_row[a]) and columns < b
    in_rows = prefix[last_row] - prefix[:-1]
    on_top = prefix[1:] - prefix[:-1]                          # the same for the top row alone
    counts = in_rows[:, last_col] - in_rows[:, :-1]
    snug = (on_top[:, last_col] > on_top[:, :-1]) & (in_rows[:, 1:] > in_rows[:, :-1])
    return top_values, left_values, np.where(snug, counts, 0)


def link_by_windows(centres: np.ndarray, size: int, min_calcifications: int) -> tuple:
    """For every calcification, its fullest size x size window; link that window's members.

    centres  (n, 2) float (row, col)
    returns  ``(clustered (n,) bool, groups UnionFind)``: whether each calcification's
             fullest window holds >= ``min_calcifications``, and the groups linked so far

    Windows sit on whole pixels, as patches do: a point at row 670.9 lies in the rows of
    pixel 670. Points are bucketed into size x size cells (``_grid_cells``), and each
    cell's windows are counted once (``_window_counts``), so n points spread over an image
    cost about n times their neighbourhood, not n squared.
    """
    count = len(centres)
    groups = UnionFind(count)
    clustered = np.zeros(count, dtype=bool)
    if not np.all(np.abs(centres) < MAX_COORDINATE):
        raise ValueError(f"calcification centres must be finite pixel coordinates below {MAX_COORDINATE:.0e}")
    if count < min_calcifications:
        return clustered, groups
    pixels = np.floor(centres).astype(np.int64)
    cells = _grid_cells(pixels, size)
    for (a, b), own in cells.items():
        block = np.concatenate([cells[(a + da, b + db)] for da in (-1, 0, 1) for db in (-1, 0, 1)
                                if (a + da, b + db) in cells])
        if len(block) < min_calcifications:
            continue
        rows, cols = pixels[block, 0], pixels[block, 1]
        top_values, left_values, counts = _window_counts(rows, cols, size)
        linked = set()   # windows of this cell already linked (neighbours often share one)
        for i in own:
            r, c = pixels[i]
            # windows holding point i: top in (r - size, r], left in (c - size, c]
            t0, t1 = np.searchsorted(top_values, [r - size + 1, r + 1])
            l0, l1 = np.searchsorted(left_values, [c - size + 1, c + 1])
            sub = counts[t0:t1, l0:l1]
            best = np.unravel_index(np.argmax(sub), sub.shape)   # fullest snug window; ties: smallest top, left
            if sub[best] < min_calcifications:
                continue
            top, left = top_values[t0 + best[0]], left_values[l0 + best[1]]
            if (top, left) in linked:
                continue
            linked.add((top, left))
            inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
            members = block[inside]
            clustered[members] = True
            for j in members:
                groups.join(int(i), int(j))
    return clustered, groups


def find_clusters(rois, size: int = PATCH_SIZE, min_calcifications: int = MIN_CALCIFICATIONS) -> list:
    """All microcalcification clusters of one image (see the module docstring).

    rois     list of :class:`~shallowcnn.data.inbreast.ROI` of the image
    returns  list of :class:`Cluster`, ordered by centre (row, then col)
    """
    centres = calcification_centres(rois)
    count = len(centres)
    clustered, groups_of = link_by_windows(centres, size, min_calcifications)
    root = groups_of.root

    outlines = [roi.points for roi in rois if roi.kind == "cluster" and len(roi.points) >= 3]
    # Each outline claims the groups of the calcifications it encloses; those groups join.
    group_of_outline = {}
    for k, outline in enumerate(outlines):
        inside = np.flatnonzero(points_in_polygon(centres[:, ::-1], outline)) if count else np.array([], int)
        for j in inside:
            clustered[j] = True
            if k in group_of_outline:
                groups_of.join(group_of_outline[k], j)
            else:
                group_of_outline[k] = j
    groups = {}
    for i in np.flatnonzero(clustered):
        groups.setdefault(root(i), []).append(i)

    clusters = []
    outline_of_group = {}
    for k, j in group_of_outline.items():
        outline_of_group.setdefault(root(j), []).append(outlines[k])
    for group_root, members in groups.items():
        member_centres = centres[members]
        attached = outline_of_group.get(group_root)
        if attached:
            outline = np.concatenate(attached)  # several outlines around one group: treat as one
            clusters.append(Cluster(centre=outline.mean(axis=0)[::-1], members=member_centres,
                                    outline=outline))
        else:
            clusters.append(Cluster(centre=member_centres.mean(axis=0), members=member_centres))
    for k, outline in enumerate(outlines):
        if k not in group_of_outline:
            clusters.append(Cluster(centre=outline.mean(axis=0)[::-1], members=np.zeros((0, 2)),
                                    outline=outline))
    clusters.sort(key=lambda cl: (cl.centre[0], cl.centre[1]))
    return clusters
