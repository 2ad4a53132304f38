"""Measurement: how close does each detection sit to the cluster it found?

    python benchmarks/bench_localization.py                          # phantom ph, 6 cases, seed 11
    python benchmarks/bench_localization.py --model run/model.npz --phantom /tmp/ph --cases 6 --seed 11

What it does (issue 22's figure, reusable after the bundled model is retrained):

1. writes a phantom (``shallowcnn phantom PHANTOM --cases 6 --seed 11``) unless the folder
   already holds one;
2. scans every mammogram of it with the model (default: the bundled model) at the scan's
   defaults (stride 16, threshold 0.5, NMS 144 px);
3. for every detection (p >= threshold) finds the nearest true cluster centre
   (:func:`shallowcnn.data.clusters.find_clusters`, the FROC truth) and keeps those
   within ``--near`` mm (default 10 mm);
4. prints the median and 90th percentile of those distances in mm (the file's pixel size),
   and how many detections of all lie **outside their own 144 x 144 window** (the peak
   window whose probability they report), in original pixels;
5. and, for the same detections, the distance to the nearest annotated calcification of
   that cluster: a cluster spans up to 1 cm, so a detection that points exactly at one of
   its calcifications still lies about a millimetre from the cluster's centre (the mean
   of its calcifications). This second figure says how well the position points at a
   finding; the first is the one FROC's localization error reports.

Only what every version of ``shallowcnn.scan`` has is used (a detection's ``row``,
``col``, ``window``; the image's ``scale`` and ``spacing_mm``), so the same script measures
the code before and after a change. ``--json FILE`` writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from shallowcnn.constants import PATCH_SIZE
from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.images import expand_inputs, load_image
from shallowcnn.data.phantom import generate_phantom
from shallowcnn.model import ShallowCNN
from shallowcnn.scan import scan_image
from shallowcnn.web.bundled import BUNDLED_MODEL_PATH


def inside_own_window(det, scale: float, size: int = PATCH_SIZE) -> bool:
    """Whether the detection's position (original pixels, centres at whole numbers) lies in
    its peak window: scanned pixels ``top .. top + size - 1``, whose outer edges are the
    original coordinates ``top * scale - 0.5`` and ``(top + size) * scale - 0.5``."""
    top, left = det.window
    return all(start * scale - 0.5 <= value <= (start + size) * scale - 0.5
               for start, value in ((top, det.row), (left, det.col)))


def measure(model, paths, near_mm: float = 10.0, verbose: bool = True) -> dict:
    """Scan ``paths`` and collect the distances; returns the numbers as a dict."""
    distances, to_calcification, outside, total, images = [], [], 0, 0, 0
    for path in paths:
        image = load_image(path)
        result = scan_image(model, image)
        images += 1
        mm = float(np.mean(image.spacing_mm))               # original pixels -> mm
        clusters = find_clusters(image.rois or [], size=int(round(PATCH_SIZE * image.scale)))
        centres = np.array([c.centre for c in clusters], dtype=np.float64).reshape(-1, 2)
        for det in result.detections:
            total += 1
            outside += not inside_own_window(det, image.scale)
            if len(centres):
                gaps = np.hypot(centres[:, 0] - det.row, centres[:, 1] - det.col) * mm
                k = int(np.argmin(gaps))
                if gaps[k] <= near_mm:
                    distances.append(float(gaps[k]))
                    members = clusters[k].members
                    if len(members):
                        to_calcification.append(float(np.hypot(members[:, 0] - det.row,
                                                               members[:, 1] - det.col).min() * mm))
        if verbose:
            print(f"{Path(path).name}: {len(result.detections)} detection(s), {len(centres)} cluster(s)",
                  file=sys.stderr)
    def quantile(values, q):
        return round(float(np.percentile(values, q)), 3) if len(values) else None

    return {"images": images, "detections": total, "near_detections": len(distances), "near_mm": near_mm,
            "median_mm": quantile(distances, 50), "p90_mm": quantile(distances, 90),
            "outside_own_window": int(outside),
            "to_nearest_calcification_median_mm": quantile(to_calcification, 50),
            "to_nearest_calcification_p90_mm": quantile(to_calcification, 90)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(BUNDLED_MODEL_PATH), help="model .npz (default: the bundled one)")
    parser.add_argument("--phantom", default="ph", help="phantom folder; written if it holds none (default ./ph)")
    parser.add_argument("--cases", type=int, default=6, help="phantom patients when writing it (default 6)")
    parser.add_argument("--seed", type=int, default=11, help="phantom seed when writing it (default 11)")
    parser.add_argument("--near", type=float, default=10.0, help="keep detections this close to a cluster, mm")
    parser.add_argument("--backend", default="numba", help="numpy, numba, cuda or auto (default numba)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    folder = Path(args.phantom)
    if not (folder / "AllDICOMs").is_dir():
        generate_phantom(folder, cases=args.cases, seed=args.seed, verbose=False)
    model = ShallowCNN.load(args.model, backend=args.backend)
    numbers = measure(model, expand_inputs([folder]))
    numbers.update(model=str(args.model), phantom=str(folder))
    print(json.dumps(numbers, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
