"""Statistics of a phantom (or INbreast-layout) folder for docs/phantom.md: tissue power-spectrum
exponent, clusters per image, calcifications per cluster, cluster extent, calcification size and
contrast-to-noise ratio.

    python benchmarks/phantom_stats.py FOLDER        # e.g. after: shallowcnn phantom ph --cases 8 --seed 31

The power spectrum needs breast regions of ROI x ROI pixels (256) free of calcifications; an
image too small for one (the tests' tiny phantom) adds nothing to that line, and a folder with
none says so instead of failing.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from shallowcnn.constants import PIXEL_MM
from shallowcnn.data.breast import breast_mask
from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.inbreast import list_cases, load_case
from shallowcnn.data.problems import InbreastError

ROI = 256                 # px per side of a power-spectrum region
ROIS_PER_IMAGE = 6        # random tries per image
BAND = (0.1, 1.0)         # cycles/mm: the band of Burgess et al. for the exponent beta
RING = (10, 15)           # px: the local background of a calcification lies between these radii


def spectrum_exponent(region: np.ndarray) -> float:
    """beta of P(f) ~ 1 / f^beta over BAND, for one (ROI, ROI) region (Hann-windowed periodogram)."""
    region = region - region.mean()
    window = np.hanning(ROI)[:, None] * np.hanning(ROI)[None, :]
    power = np.abs(np.fft.fftshift(np.fft.fft2(region * window))) ** 2
    fy, fx = np.meshgrid(np.arange(-ROI // 2, ROI // 2), np.arange(-ROI // 2, ROI // 2), indexing="ij")
    f = np.hypot(fx, fy) / ROI / PIXEL_MM
    band = (f >= BAND[0]) & (f <= BAND[1])
    return float(-np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0])


def image_exponents(px: np.ndarray, mask: np.ndarray, calcs: np.ndarray, rng) -> list:
    """beta of up to ROIS_PER_IMAGE random regions wholly inside the breast, away from calcifications."""
    H, W = px.shape
    if H <= ROI or W <= ROI:
        return []
    betas = []
    for _ in range(ROIS_PER_IMAGE):
        r, c = rng.integers(0, H - ROI), rng.integers(0, W - ROI)
        if mask[r:r + ROI, c:c + ROI].mean() < 0.999:
            continue
        near = ((calcs[:, 0] >= r - 10) & (calcs[:, 0] < r + ROI + 10)
                & (calcs[:, 1] >= c - 10) & (calcs[:, 1] < c + ROI + 10))
        if not near.any():
            betas.append(spectrum_exponent(px[r:r + ROI, c:c + ROI]))
    return betas


def calcification_cnr(px: np.ndarray, centre_rc) -> float | None:
    """(peak of the 3 x 3 centre - median of the background ring) / the ring's std, or None
    for a calcification too close to the border for its ring."""
    H, W = px.shape
    y, x = np.round(centre_rc).astype(int)
    outer = RING[1]
    if y < outer + 5 or x < outer + 5 or y >= H - outer - 5 or x >= W - outer - 5:
        return None
    patch = px[y - outer:y + outer + 1, x - outer:x + outer + 1]
    yy, xx = np.mgrid[-outer:outer + 1, -outer:outer + 1]
    background = patch[np.hypot(yy, xx) > RING[0]]
    return float((px[y - 1:y + 2, x - 1:x + 2].max() - np.median(background)) / (background.std() + 1e-9))


def folder_stats(folder) -> dict:
    """Every statistic of ``folder`` as lists of values (mm where a length)."""
    stats = {"beta": [], "per_image": [], "counts": [], "spans": [], "sizes": [], "cnr": []}
    cases = list_cases(folder).cases
    for case in cases:
        rng = np.random.default_rng(0)        # each image's regions drawn alike, whatever the order
        img, rois = load_case(case)
        px = img.pixels.astype(np.float64)
        calcs = np.array([r.centre_xy[::-1] for r in rois if r.kind == "calcification"]).reshape(-1, 2)
        stats["beta"] += image_exponents(px, breast_mask(img.pixels), calcs, rng)
        clusters = find_clusters(rois)
        stats["per_image"].append(len(clusters))
        for cluster in clusters:
            stats["counts"].append(len(cluster.members))
            if len(cluster.members):
                extent = cluster.members.max(0) - cluster.members.min(0)
                stats["spans"].append(float(np.hypot(*extent)) * PIXEL_MM)
        for roi in rois:
            if roi.kind != "calcification":
                continue
            if len(roi.points) > 1:
                stats["sizes"].append(2 * np.sqrt(np.mean(np.sum((roi.points - roi.centre_xy) ** 2, 1))) * PIXEL_MM)
            cnr = calcification_cnr(px, roi.centre_xy[::-1])
            if cnr is not None:
                stats["cnr"].append(cnr)
    stats["images"] = len(cases)
    return stats


def _quantiles(values) -> str:
    return str(np.percentile(values, [10, 50, 90]).round(2).tolist()) if len(values) else "(none)"


def report(stats: dict) -> str:
    beta = stats["beta"]
    lines = [f"images {stats['images']}; beta ({BAND[0]}-{BAND[1]} cycles/mm, {len(beta)} ROIs {ROI}^2): "
             + (f"mean {np.mean(beta):.2f} sd {np.std(beta):.2f} p10/50/90 {_quantiles(beta)}" if beta
                else f"no breast region of {ROI} x {ROI} px free of calcifications"),
             f"clusters per image p10/50/90 {_quantiles(stats['per_image'])} "
             f"(mean {np.mean(stats['per_image']) if stats['per_image'] else 0:.2f}); "
             f"calcifications per cluster p10/50/90 {_quantiles(stats['counts'])}",
             f"cluster span (max extent of members, mm) p10/50/90 {_quantiles(stats['spans'])}",
             f"contoured calcification diameter (mm) p10/50/90 {_quantiles(stats['sizes'])} (n={len(stats['sizes'])})",
             f"calcification CNR (peak - local median)/local std, p10/50/90 {_quantiles(stats['cnr'])} "
             f"(n={len(stats['cnr'])})"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="an INbreast-layout folder (AllDICOMs/, AllXML/), e.g. a phantom")
    args = parser.parse_args(argv)
    try:
        print(report(folder_stats(args.folder)))
    except InbreastError as e:
        print(f"phantom_stats: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
