"""Benchmark: finding microcalcification clusters among many calcifications.

    python benchmarks/bench_clusters.py                  # 100 ... 10,000 points, full-size image
    python benchmarks/bench_clusters.py --counts 600,10000 --repeats 5

Times :func:`shallowcnn.data.clusters.find_clusters` on point calcifications placed at
random in two ways:

* **spread** -- uniformly over a full-size (3328 x 4084) INbreast image, the realistic
  case (most points have a handful of neighbours within 1 cm);
* **crowded** -- all inside one 1 cm^2 window (144 x 144 px), the absurd case of a
  damaged or hostile XML (every point neighbours every other one).

The target is 10,000 points in under a second (the figures so far: benchmarks/README.md).
The best of ``--repeats`` runs is printed per count, with the number of clusters found.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from shallowcnn.data.clusters import PATCH_SIZE, find_clusters
from shallowcnn.data.inbreast import ROI_TYPE_POINT, make_roi

FULL_SIZE = (4084, 3328)   # rows, cols of INbreast's larger images


def point_rois(count: int, extent, rng) -> list:
    """``count`` one-point calcification ROIs, uniform over rows [0, extent[0]) x cols [0, extent[1])."""
    rows_cols = rng.uniform(0, extent, size=(count, 2))
    return [make_roi("Calcification", ROI_TYPE_POINT, [[c, r]], index=k) for k, (r, c) in enumerate(rows_cols)]


def best_time(rois, repeats: int) -> tuple:
    """(best seconds over ``repeats`` runs, clusters found)."""
    best, found = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        found = len(find_clusters(rois))
        best = min(best, time.perf_counter() - start)
    return best, found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,200,400,600,1000,3000,10000",
                        help="comma-separated numbers of calcifications (default 100 ... 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per count; the best is kept (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    rng = np.random.default_rng(args.seed)
    print(f"{'points':>8}  {'spread s':>9} {'clusters':>8}  {'crowded s':>9} {'clusters':>8}")
    for count in counts:
        spread, n_spread = best_time(point_rois(count, FULL_SIZE, rng), args.repeats)
        crowded, n_crowded = best_time(point_rois(count, (PATCH_SIZE, PATCH_SIZE), rng), args.repeats)
        print(f"{count:>8}  {spread:>9.3f} {n_spread:>8}  {crowded:>9.3f} {n_crowded:>8}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
