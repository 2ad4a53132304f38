"""Microcalcification clusters: at least 3 calcifications within 1 cm^2 (BI-RADS).

INbreast annotates each microcalcification on its own (a point or a tiny contour) and
draws a Cluster outline only on some images, so clusters are found here from the
individual calcifications as well as from the outlines:

1. every calcification is reduced to its centre (row, col);
2. a calcification is *clustered* if some 144 x 144 window (1 cm^2 at 0.07 mm) holds it
   and at least two others; the calcifications of that window are linked together;
3. linked calcifications form one cluster (union-find), and a Cluster outline joins the
   clusters of the calcifications it encloses (an outline with none is a cluster too).

The cluster centres are the ground truth for FROC scoring of whole-mammogram scans, and
the clusters are what positive patches are cut around.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import PATCH_SIZE
from .unionfind import UnionFind

MIN_CALCIFICATIONS = 3  # BI-RADS: a cluster is >= 3 calcifications within 1 cm^2


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


def _best_window_members(centres: np.ndarray, i: int, size: int) -> np.ndarray:
    """Indices of the calcifications in the fullest size x size window that holds calc i.

    A window [r0, r0+size) x [c0, c0+size) holding calc i can be slid until its top edge
    touches some calcification's row and its left edge some column, without losing any
    point; so only those (row, col) pairs need to be tried.
    """
    r, c = centres[i]
    near = np.flatnonzero((np.abs(centres[:, 0] - r) < size) & (np.abs(centres[:, 1] - c) < size))
    rows = centres[near, 0]
    cols = centres[near, 1]
    top = np.unique(rows[rows <= r])          # candidate top edges, all within (r - size, r]
    left = np.unique(cols[cols <= c])
    inside_r = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + size)   # (T, n)
    inside_c = (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + size)  # (L, n)
    counts = inside_r.astype(np.int32) @ inside_c.T.astype(np.int32)                    # (T, L)
    t, l = np.unravel_index(np.argmax(counts), counts.shape)
    return near[inside_r[t] & inside_c[l]]


def find_clusters(rois, size: int = PATCH_SIZE, min_calcifications: int = MIN_CALCIFICATIONS) -> list:
    """All microcalcification clusters of one image (see the module docstring).

    rois     list of :class:`~shallowcnn.data.inbreast.ROI` of the image
    returns  list of :class:`Cluster`, ordered by centre (row, then col)
    """
    centres = calcification_centres(rois)
    count = len(centres)
    groups_of = UnionFind(count)
    root = groups_of.root
    clustered = np.zeros(count, dtype=bool)
    for i in range(count):
        members = _best_window_members(centres, i, size)
        if len(members) >= min_calcifications:
            clustered[members] = True
            for j in members:
                groups_of.join(i, j)

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


def cluster_centres(rois, size: int = PATCH_SIZE) -> np.ndarray:
    """(C, 2) float (row, col) centres of the true clusters of one image (for FROC)."""
    return np.array([cl.centre for cl in find_clusters(rois, size)], dtype=np.float64).reshape(-1, 2)
