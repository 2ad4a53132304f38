"""Scoring whole-mammogram scans against the annotations: hits, misses and the FROC curve.

The truth of an image is its microcalcification clusters, as defined by
:func:`shallowcnn.data.clusters.find_clusters`: Cluster outlines, and groups of at least
3 calcifications within 1 cm^2. A detection (a peak window of the probability map,
:func:`shallowcnn.scan.find_peaks`, at the position the network points to,
:mod:`shallowcnn.evidence`) **hits** a cluster when its position lies within
``hit_radius`` (default 72 px = half a patch, 5 mm) of the cluster centre, inside the
cluster's outline, or inside the convex hull of its calcifications grown by ``hull_margin``
(default 1 mm = 14.3 px): a spread-out cluster without an outline is then hit anywhere on
it, not only near its centre. A detection that hits no cluster is a **false positive**; several
detections on one cluster count it once and are not false positives.

FROC (free-response ROC): for every threshold t,

    sensitivity(t)  = (clusters hit by some detection with probability >= t) / (clusters)
    fp_per_image(t) = (false positives with probability >= t) / (images)

Non-maximum suppression never lets a weaker window suppress a stronger one, so the
detections at threshold t are exactly the peaks found at threshold 0 with probability
>= t; each image is therefore scanned once and the curve swept afterwards. A cluster is
found from threshold ``best`` down (the highest probability among the detections that
hit it), a false positive from its own probability down: the curve is two sorted lists.

**Localization error**: for every detection (at the scan's threshold) that hits a
cluster, the distance in mm from the detection's position to that cluster's centre (the
nearest one it hits); reported as the median and 90th percentile over all hits
(:func:`localization_summary`). The hit rule above decides *whether* a cluster was
found; this says *how close* to it the detection points.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .constants import PATCH_SIZE, PIXEL_MM
from .data.clusters import find_clusters, points_in_polygon
from .storage import atomic_write_text

DEFAULT_HIT_RADIUS = PATCH_SIZE / 2     # 72 px = 5 mm at 0.07 mm
DEFAULT_HULL_MARGIN = 1.0 / PIXEL_MM    # 14.3 px = 1 mm around the hull of a cluster's calcifications


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """z component of the cross product of 2-D vectors (..., 2) x (..., 2): > 0 for a left turn."""
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def convex_hull(points: np.ndarray) -> np.ndarray:
    """(H, 2) vertices of the convex hull of (N, 2) points, counter-clockwise (monotone chain).

    Fewer than 3 distinct points, or points on one line, give the 1 or 2 extreme points.
    """
    pts = np.unique(np.asarray(points, dtype=np.float64).reshape(-1, 2), axis=0)   # sorted by x, then y
    if len(pts) < 3:
        return pts

    def half(sequence):
        chain = []
        for p in sequence:
            # drop the last point while it does not make a left turn towards p
            while len(chain) >= 2 and _cross(chain[-1] - chain[-2], p - chain[-2]) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def distance_to_hull(points: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """(N,) distance of each of the (N, 2) points to the filled convex polygon ``hull``
    (:func:`convex_hull`'s output, same coordinates): 0 inside, else to the nearest edge."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(hull) == 0:
        return np.full(len(points), np.inf)
    a = hull                                                   # (H, 2) edge starts
    b = np.roll(hull, -1, axis=0) if len(hull) > 1 else hull   # (H, 2) edge ends
    ab = b - a
    length2 = np.maximum((ab ** 2).sum(axis=1), 1e-300)
    t = np.clip(((points[:, None, :] - a) * ab).sum(axis=2) / length2, 0.0, 1.0)   # (N, H)
    nearest = a + t[..., None] * ab
    dist = np.sqrt(((points[:, None, :] - nearest) ** 2).sum(axis=2)).min(axis=1)
    if len(hull) >= 3:                # counter-clockwise: inside = left of (or on) every edge
        inside = (_cross(ab[None], points[:, None, :] - a[None]) >= 0).all(axis=1)
        dist[inside] = 0.0
    return dist


def match_detections(det_rc: np.ndarray, clusters: list, hit_radius: float,
                     hull_margin: float = DEFAULT_HULL_MARGIN) -> np.ndarray:
    """Which detection hits which cluster.

    det_rc      (D, 2) detection centres (row, col), same pixels as the clusters
    clusters    list of :class:`~shallowcnn.data.clusters.Cluster` (C of them)
    hit_radius  distance in pixels
    hull_margin distance in pixels around the convex hull of the cluster's calcifications
    returns     (D, C) bool: ``|det - centre| <= hit_radius``, det inside the outline, or
                det within ``hull_margin`` of the hull of the cluster's calcifications
    """
    det_rc = np.asarray(det_rc, dtype=np.float64).reshape(-1, 2)
    hits = np.zeros((len(det_rc), len(clusters)), dtype=bool)
    for c, cluster in enumerate(clusters):
        hits[:, c] = np.hypot(*(det_rc - np.asarray(cluster.centre)).T) <= hit_radius
        if cluster.outline is not None and len(det_rc):
            hits[:, c] |= points_in_polygon(det_rc[:, ::-1], cluster.outline)  # polygon is (x, y)
        if len(cluster.members) and len(det_rc):
            hits[:, c] |= distance_to_hull(det_rc, convex_hull(cluster.members)) <= hull_margin
    return hits


@dataclass
class ImageTruth:
    """One scanned image scored against its annotations.

    clusters         the true clusters (original image pixels)
    hit              (C,) bool: hit by a detection at the scan's threshold
    best             (C,) float: highest probability of a candidate hitting each cluster
                     (-1 when none does): the cluster counts as found for t <= best
    fp_probs         (P,) float: probabilities of the candidates that hit no cluster
    detection_cluster  for each detection at the threshold, the index of a cluster it hits
                     (the nearest), or None for a false positive
    detection_error_mm  for each detection at the threshold, its distance to the centre of
                     ``detection_cluster`` in mm (None for a false positive)
    """

    name: str
    clusters: list
    hit: np.ndarray
    best: np.ndarray
    fp_probs: np.ndarray
    detection_cluster: list
    detection_error_mm: list = field(default_factory=list)

    @property
    def false_positives(self) -> int:
        return sum(c is None for c in self.detection_cluster)

    def to_dict(self) -> dict:
        return {
            "true_clusters": [
                {"row": round(float(cl.centre[0]), 2), "col": round(float(cl.centre[1]), 2),
                 "source": cl.source, "calcifications": len(cl.members), "hit": bool(h),
                 "best_probability": None if b < 0 else float(b)}
                for cl, h, b in zip(self.clusters, self.hit, self.best)],
            "clusters_hit": int(self.hit.sum()),
            "clusters_missed": int((~self.hit).sum()),
            "false_positives": self.false_positives,
        }


def score_image(name: str, clusters: list, candidates: list, threshold: float,
                hit_radius: float = DEFAULT_HIT_RADIUS, pixel_mm: float = PIXEL_MM,
                hull_margin: float = DEFAULT_HULL_MARGIN) -> ImageTruth:
    """Score the NMS peaks of one image (``candidates``: list of
    :class:`~shallowcnn.scan.Detection`, all thresholds) against its clusters.

    hit_radius  in the clusters' pixels; pixel_mm: their size in mm (for the errors)
    """
    det_rc = np.array([(d.row, d.col) for d in candidates], dtype=np.float64).reshape(-1, 2)
    probs = np.array([d.probability for d in candidates], dtype=np.float64)
    hits = match_detections(det_rc, clusters, hit_radius, hull_margin)    # (D, C)
    best = np.where(hits, probs[:, None], -1.0).max(axis=0) if len(probs) else np.full(len(clusters), -1.0)
    fp_probs = probs[~hits.any(axis=1)]
    above = probs >= threshold
    hit = (hits & above[:, None]).any(axis=0)
    detection_cluster, errors = [], []
    for d in np.flatnonzero(above):
        if hits[d].any():
            dist = [np.hypot(*(det_rc[d] - clusters[c].centre)) if hits[d, c] else np.inf
                    for c in range(len(clusters))]
            detection_cluster.append(int(np.argmin(dist)))
            errors.append(float(np.min(dist)) * pixel_mm)
        else:
            detection_cluster.append(None)
            errors.append(None)
    return ImageTruth(name=name, clusters=clusters, hit=hit, best=best, fp_probs=fp_probs,
                      detection_cluster=detection_cluster, detection_error_mm=errors)


def image_truth(result, hit_radius: float = DEFAULT_HIT_RADIUS) -> ImageTruth | None:
    """Score a :class:`~shallowcnn.scan.ScanResult` against its image's annotations, or
    None when the truth of the image is unknown (not from an INbreast-layout folder).

    ``hit_radius`` is in 0.07 mm pixels (the hull margin is :data:`DEFAULT_HULL_MARGIN`);
    clusters are found with a 1 cm^2 window in the image's own pixels; errors are in mm of
    the image's own pixel size (the mean of its row and column spacing).
    """
    img = result.image
    if img.rois is None:
        return None
    clusters = find_clusters(img.rois, size=int(round(PATCH_SIZE * img.scale)))
    return score_image(img.name, clusters, result.candidates, result.threshold,
                       hit_radius * img.scale, pixel_mm=float(np.mean(img.spacing_mm)),
                       hull_margin=DEFAULT_HULL_MARGIN * img.scale)


@dataclass
class FrocCurve:
    """thresholds (T,) descending, sensitivity (T,), fp_per_image (T,), and the counts."""

    thresholds: np.ndarray
    sensitivity: np.ndarray
    fp_per_image: np.ndarray
    n_images: int
    n_clusters: int
    errors_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def at_threshold(self, t: float) -> dict:
        """The operating point of threshold t (the lowest swept threshold >= t)."""
        ok = np.flatnonzero(self.thresholds >= t)
        if len(ok) == 0:
            return {"threshold": float(t), "sensitivity": 0.0, "fp_per_image": 0.0}
        i = ok[-1]
        return {"threshold": float(t), "sensitivity": float(self.sensitivity[i]),
                "fp_per_image": float(self.fp_per_image[i])}

    def sensitivity_at_fpi(self, fpi: float) -> float:
        """Best sensitivity with at most ``fpi`` false positives per image."""
        ok = self.fp_per_image <= fpi
        return float(self.sensitivity[ok].max()) if ok.any() else 0.0


def froc_curve(truths: list) -> FrocCurve:
    """Sweep the threshold over every candidate probability of every image.

    truths  list of :class:`ImageTruth` (one per annotated image, normal images too:
            their candidates are all false positives)
    """
    n_images = len(truths)
    best = np.concatenate([t.best for t in truths]) if truths else np.zeros(0)
    fps = np.concatenate([t.fp_probs for t in truths]) if truths else np.zeros(0)
    n_clusters = len(best)
    thresholds = np.unique(np.concatenate([best[best >= 0], fps, [1.0]]))[::-1]
    # counts of values >= t for each threshold t, via sorted arrays
    found = len(best) - np.searchsorted(np.sort(best), thresholds, side="left")
    false = len(fps) - np.searchsorted(np.sort(fps), thresholds, side="left")
    sensitivity = found / max(n_clusters, 1)
    fpi = false / max(n_images, 1)
    errors = [e for t in truths for e in t.detection_error_mm if e is not None]
    return FrocCurve(thresholds=thresholds, sensitivity=sensitivity.astype(np.float64),
                     fp_per_image=fpi.astype(np.float64), n_images=n_images, n_clusters=n_clusters,
                     errors_mm=np.asarray(errors, dtype=np.float64))


def localization_summary(errors_mm) -> dict:
    """``{"hits", "median_mm", "p90_mm"}`` of the localization errors of the hits (mm);
    the figures are None when there is no hit. Percentiles by linear interpolation
    (:func:`numpy.percentile`'s default)."""
    errors = np.asarray(errors_mm, dtype=np.float64)
    if len(errors) == 0:
        return {"hits": 0, "median_mm": None, "p90_mm": None}
    return {"hits": int(len(errors)), "median_mm": round(float(np.median(errors)), 3),
            "p90_mm": round(float(np.percentile(errors, 90)), 3)}


def write_froc(curve: FrocCurve, path, threshold: float = 0.5) -> Path:
    """froc.json: the curve, the operating point at ``threshold``, the localization error
    of its hits, sensitivity at 0.5 / 1 / 2 / 4 false positives per image."""
    content = {
        "n_images": curve.n_images, "n_clusters": curve.n_clusters,
        "definition": "sensitivity = clusters hit / clusters; fp_per_image = detections hitting "
                      "no cluster / images; a detection hits a cluster within hit_radius of its "
                      "centre, inside its outline, or within 1 mm of the convex hull of its "
                      "calcifications",
        "operating_point": curve.at_threshold(threshold),
        "localization": {**localization_summary(curve.errors_mm),
                         "definition": "distance from each hit's position (the conv2 maximum the network "
                                       "used most) to the centre of the cluster it hits, in mm, over the "
                                       "detections at the operating point"},
        "sensitivity_at_fp_per_image": {str(f): curve.sensitivity_at_fpi(f) for f in (0.5, 1, 2, 4)},
        "thresholds": [float(t) for t in curve.thresholds],
        "sensitivity": [float(s) for s in curve.sensitivity],
        "fp_per_image": [float(f) for f in curve.fp_per_image],
    }
    return atomic_write_text(Path(path), json.dumps(content, indent=2) + "\n")
