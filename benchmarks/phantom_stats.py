"""Statistics of a phantom (or INbreast-layout) folder for docs/phantom.md: tissue power-spectrum
exponent, clusters per image, calcifications per cluster, cluster extent, calcification size and
contrast-to-noise ratio.

    python benchmarks/phantom_stats.py FOLDER        # e.g. after: shallowcnn phantom ph --cases 8 --seed 31
"""
import sys

import numpy as np

from shallowcnn.data.inbreast import list_cases, load_case
from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.breast import breast_mask
folder = sys.argv[1]
betas, sizes, cnr, spans, counts, per_image = [], [], [], [], [], []
cases = list_cases(folder).cases
for case in cases:
    img, rois = load_case(case)
    px = img.pixels.astype(np.float64)
    mask = breast_mask(img.pixels)
    H, W = px.shape
    # power spectrum of 256x256 breast regions away from calcifications
    calcs = np.array([r.centre_xy[::-1] for r in rois if r.kind == "calcification"]).reshape(-1, 2)
    rng = np.random.default_rng(0)
    for _ in range(6):
        r, c = rng.integers(0, H - 256), rng.integers(0, W - 256)
        if mask[r:r+256, c:c+256].mean() < 0.999:
            continue
        near = (calcs[:, 0] >= r - 10) & (calcs[:, 0] < r + 266) & (calcs[:, 1] >= c - 10) & (calcs[:, 1] < c + 266)
        if near.any():
            continue
        roi = px[r:r+256, c:c+256]
        roi = roi - roi.mean()
        win = np.hanning(256)[:, None] * np.hanning(256)[None, :]
        p = np.abs(np.fft.fftshift(np.fft.fft2(roi * win))) ** 2
        fy, fx = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
        f = np.hypot(fx, fy) / 256 / 0.07      # cycles/mm
        sel = (f >= 0.1) & (f <= 1.0)           # the band of Burgess et al.
        slope = np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)[0]
        betas.append(-slope)
    clusters = find_clusters(rois)
    per_image.append(len(clusters))
    for cl in clusters:
        counts.append(len(cl.members))
        if len(cl.members):
            d = np.max(cl.members, 0) - np.min(cl.members, 0)
            spans.append(np.hypot(*d) * 0.07)
    # calcification contrast-to-noise: peak minus local background median, over local background std
    for r in rois:
        if r.kind != "calcification":
            continue
        y, x = np.round(r.centre_xy[::-1]).astype(int)
        if y < 20 or x < 20 or y >= H - 20 or x >= W - 20:
            continue
        if len(r.points) > 1:
            sizes.append(2 * np.sqrt(np.mean(np.sum((r.points - r.centre_xy) ** 2, 1))) * 0.07)
        ring = px[y-15:y+16, x-15:x+16].copy()
        yy, xx = np.mgrid[-15:16, -15:16]
        bg = ring[np.hypot(yy, xx) > 10]
        cnr.append((px[y-1:y+2, x-1:x+2].max() - np.median(bg)) / (bg.std() + 1e-9))
q = lambda a: np.percentile(a, [10, 50, 90]).round(2).tolist()
print(f"images {len(cases)}; beta (0.1-1 cycles/mm, {len(betas)} ROIs 256^2): mean {np.mean(betas):.2f} "
      f"sd {np.std(betas):.2f} p10/50/90 {q(betas)}")
print(f"clusters per image p10/50/90 {q(per_image)} (mean {np.mean(per_image):.2f}); "
      f"calcifications per cluster p10/50/90 {q(counts)}")
print(f"cluster span (max extent of members, mm) p10/50/90 {q(spans)}")
print(f"contoured calcification diameter (mm) p10/50/90 {q(sizes)} (n={len(sizes)})")
print(f"calcification CNR (peak - local median)/local std, p10/50/90 {q(cnr)} (n={len(cnr)})")
