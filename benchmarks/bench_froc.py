"""Whole-image detection on unseen phantom cases: sensitivity at 0.5 / 1 / 2 / 4 false
positives per image, for several models, under the old and the new FROC hit rule.

    python benchmarks/bench_froc.py --work /tmp/froc                       # train (demo recipe + mining), then score
    python benchmarks/bench_froc.py --work /tmp/froc --no-train --model main=shallowcnn/web/bundled_model.npz
    python benchmarks/bench_froc.py --work /tmp/froc --no-train --scratch-rounds 1 --results scratch.json

With training (the default), the demo's pipeline runs in WORK/demo (phantom of 20 patients,
seed 0, patches, 12 epochs, then hard-negative mining) and both of its models are scored:
``no-mining`` (WORK/demo/run/model.npz, what the bundled model is without mining) and
``mined`` (WORK/demo/mine/model.npz). The test set is ``shallowcnn phantom --cases 8
--seed 31`` (28 images, 47 clusters), patients the models never saw. Each image is scanned
once per model and its candidates scored twice: ``new rule`` (inside the outline, within
5 mm of the centre, or within 1 mm of the hull of the cluster's calcifications) and
``old rule`` (outline or 5 mm only). Two ceilings say which stage limits the result:
``ceiling`` is the share of clusters that any NMS peak hits at all (the candidate stage's
limit), ``windows@1`` the share whose best window holding >= 3 of their calcifications scores
above the 1 FP/image cut (the classifier's limit, with a perfect candidate stage). Writes
WORK/bench_froc.json and prints a table.

``--scratch-rounds N`` mines again from WORK/demo/run/model.npz (an earlier run's), but
retrains from new weights for the full epochs each round (``from_scratch``), into
WORK/mine_scratch, and scores that model as ``mined-scratch``: continuing against starting
afresh.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from shallowcnn.constants import PATCH_SIZE
from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.inbreast import list_cases
from shallowcnn.data.phantom import generate_phantom
from shallowcnn.froc import DEFAULT_HIT_RADIUS, DEFAULT_HULL_MARGIN, froc_curve, score_image
from shallowcnn.model import ShallowCNN
from shallowcnn.operating_point import model_nms, model_threshold
from shallowcnn.scan import scan_image

RATES = (0.5, 1, 2, 4)
NO_HULL = -1.0      # a hull margin below 0: no detection is within it (the old rule)


def best_cluster_windows(result, clusters) -> np.ndarray:
    """(C,) the highest probability among the scanned windows that hold at least 3 of each
    cluster's calcifications (-1 where none does): what the classifier says of the cluster
    wherever a candidate stage could look for it, whichever window NMS keeps."""
    img, best = result.image, []
    for cluster in clusters:
        members = (np.asarray(cluster.members, dtype=np.float64).reshape(-1, 2) + 0.5) / img.scale - 0.5
        in_rows = (members[None, :, 0] >= result.window_rows[:, None]) & \
                  (members[None, :, 0] < result.window_rows[:, None] + result.window_size)       # (nR, n)
        in_cols = (members[None, :, 1] >= result.window_cols[:, None]) & \
                  (members[None, :, 1] < result.window_cols[:, None] + result.window_size)       # (nC, n)
        held = in_rows.astype(np.int32) @ in_cols.T.astype(np.int32)                             # (nR, nC)
        ok = (held >= 3) & np.isfinite(result.prob_map)
        best.append(float(result.prob_map[ok].max()) if ok.any() else -1.0)
    return np.array(best)


def window_ceiling(truths, window_best, fp_per_image: float = 1.0) -> float:
    """Sensitivity at ``fp_per_image`` of the FROC in which every cluster is found by its best
    window (:func:`best_cluster_windows`) and the false positives are the candidates' own: what
    a perfect candidate stage would find there with this classifier (an upper bound: the best
    window may owe its score to a neighbour)."""
    as_if = [replace(truth, best=best) for truth, best in zip(truths, window_best)]
    return froc_curve(as_if).sensitivity_at_fpi(fp_per_image)


def score_model(model, cases) -> dict:
    """Scan every case once; the FROC under both hit rules and the model's operating point."""
    truths = {"new rule": [], "old rule": []}
    window_best = []
    threshold, nms_px = model_threshold(model), model_nms(model)
    t0 = time.perf_counter()
    for case in cases:
        result = scan_image(model, case.dicom_path, threshold=threshold, nms_px=nms_px)
        img = result.image
        clusters = find_clusters(img.rois or [], size=int(round(PATCH_SIZE * img.scale)))
        window_best.append(best_cluster_windows(result, clusters))
        for rule, margin in (("new rule", DEFAULT_HULL_MARGIN), ("old rule", NO_HULL)):
            truths[rule].append(score_image(img.name, clusters, result.candidates, threshold,
                                            DEFAULT_HIT_RADIUS * img.scale, hull_margin=margin * img.scale))
    out = {"threshold": threshold, "nms_px": nms_px, "seconds_scanning": round(time.perf_counter() - t0, 1)}
    for rule, items in truths.items():
        curve = froc_curve(items)
        out[rule] = {"images": curve.n_images, "clusters": curve.n_clusters,
                     "sensitivity_at_fp_per_image": {str(f): curve.sensitivity_at_fpi(f) for f in RATES},
                     # clusters hit by any NMS peak at all: the most any threshold can find
                     "sensitivity_ceiling": float(curve.sensitivity.max()) if len(curve.sensitivity) else 0.0,
                     # clusters with some window (>= 3 calcifications) above the 1 FP/image cut
                     "window_ceiling_at_1_fp_per_image": window_ceiling(items, window_best),
                     "at_threshold": curve.at_threshold(threshold)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="working folder (phantoms, runs, results)")
    parser.add_argument("--no-train", action="store_true", help="only score the --model files")
    parser.add_argument("--mine-rounds", type=int, default=3, help="mining rounds (default 3)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default 12, the demo's)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="another model to score")
    parser.add_argument("--scratch-rounds", type=int, default=0, help="also mine retraining from scratch (rounds)")
    parser.add_argument("--results", default="bench_froc.json", help="results file in WORK (default bench_froc.json)")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    test = work / "ph_seed31"
    if not (test / "AllDICOMs").is_dir():
        generate_phantom(test, cases=8, seed=31, verbose=False)
    models = dict(item.split("=", 1) for item in args.model)
    timings = {}
    if not args.no_train:
        from shallowcnn.demo import run_demo

        t0 = time.perf_counter()
        run_demo(work / "demo", epochs=args.epochs, scan=False, verbose=True, mine_rounds=args.mine_rounds)
        timings["demo_seconds"] = round(time.perf_counter() - t0, 1)
        models["no-mining"] = str(work / "demo" / "run" / "model.npz")
        if args.mine_rounds:
            models["mined"] = str(work / "demo" / "mine" / "model.npz")
    if args.scratch_rounds:
        from shallowcnn.data.patches import load_patches
        from shallowcnn.mining import MiningConfig, mine
        from shallowcnn.train import TrainConfig

        t0 = time.perf_counter()
        demo = work / "demo"
        start = ShallowCNN.load(demo / "run" / "model.npz", backend="auto")
        mine(load_patches(demo / "patches.npz"), demo / "phantom", start, work / "mine_scratch",
             TrainConfig(epochs=args.epochs), MiningConfig(rounds=args.scratch_rounds, from_scratch=True))
        timings["scratch_seconds"] = round(time.perf_counter() - t0, 1)
        models["mined-scratch"] = str(work / "mine_scratch" / "model.npz")
    cases = [c for c in list_cases(test).cases]
    results = {"test_set": "shallowcnn phantom --cases 8 --seed 31", **timings, "models": {}}
    for name, path in models.items():
        results["models"][name] = {"path": path, **score_model(ShallowCNN.load(path, backend="auto"), cases)}
        (work / args.results).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'model':<14}{'rule':<10}" + "".join(f"{f:>8} FPI" for f in RATES)
          + "   ceiling  windows@1   operating point")
    for name, r in results["models"].items():
        for rule in ("old rule", "new rule"):
            s = r[rule]["sensitivity_at_fp_per_image"]
            op = r[rule]["at_threshold"]
            print(f"{name:<14}{rule:<10}" + "".join(f"{s[str(f)]:>12.3f}" for f in RATES)
                  + f"{r[rule]['sensitivity_ceiling']:>10.3f}{r[rule]['window_ceiling_at_1_fp_per_image']:>11.3f}"
                  f"   p >= {r['threshold']:.3f}, NMS {r['nms_px']:g} px: "
                  f"{op['sensitivity']:.3f} at {op['fp_per_image']:.2f} FPI")
    print(f"({results['models'][next(iter(models))]['new rule']['images']} images, "
          f"{results['models'][next(iter(models))]['new rule']['clusters']} clusters) -> {work / args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
