"""Benchmark: whole-mammogram scan, fully convolutional against patch by patch.

    python benchmarks/bench_scan.py                      # full-size phantom, stride 16, numba
    python benchmarks/bench_scan.py --size 832x1024 --backend numpy --patch-sample 64

What is timed, on one full-size (3328 x 4084, INbreast's larger size) synthetic mammogram
made in this script by the phantom generator:

* **fully convolutional** -- :func:`shallowcnn.scan.scan_image`: both convolutions run once
  over the breast in tiles, windows are block maxima; includes the window geometry, the
  dense layer, and non-maximum suppression. conv2 runs as the backend's
  ``conv_relu_blockmax`` (numba: ``kernels/cpu_blockmax.py``, never storing the conv2 map).
* **patch by patch** -- :func:`shallowcnn.scan.scan_patchwise`: cut each in-breast window
  out and run the patch model (``predict_proba``, batches of 64). Running all ~30,000
  windows would take minutes, so it is timed on a random sample of ``--patch-sample``
  windows and **extrapolated** linearly to all in-breast windows (the work per window is
  the same everywhere); the sample is also checked against the fully convolutional map.

Both scan the same windows (those with at least half their area in the breast). JIT
compilation is done on a small image first and kept out of the timings. The numbers
depend on the machine: the script prints the CPU count and the numba thread count.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from shallowcnn.data.breast import breast_mask, largest_component, to_uint8
from shallowcnn.data.images import ScanImage
from shallowcnn.data.phantom import parse_size
from shallowcnn.data.phantom_render import ImagePlan, render_image
from shallowcnn.model import ShallowCNN
from shallowcnn.scan import scan_image, scan_patchwise


def make_image(size: str, seed: int) -> ScanImage:
    """A synthetic mammogram with two clusters, windowed to 8 bits as patches are."""
    width, height = parse_size(size)
    plan = ImagePlan(laterality="L", view="MLO", clusters=2, outline=True, isolated=3,
                     other_finding="Mass", density=0.0)
    pixels, _ = render_image(np.random.default_rng(seed), width, height, plan)
    mask = breast_mask(pixels)
    u8, window = to_uint8(pixels, mask)
    return ScanImage(pixels=u8, mask=largest_component(mask), window=window)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="full", help="WIDTHxHEIGHT, 'demo' or 'full' (default full: 3328x4084)")
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--backend", default="numba", help="numpy, numba or cuda (default numba)")
    parser.add_argument("--model", default=None, help="a trained model.npz (default: random seeded weights)")
    parser.add_argument("--patch-sample", type=int, default=512,
                        help="windows timed patch by patch, then extrapolated (default 512)")
    parser.add_argument("--repeats", type=int, default=2, help="fully convolutional runs; best is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    model = (ShallowCNN.load(args.model, backend=args.backend) if args.model
             else ShallowCNN(backend=args.backend, seed=args.seed))
    t0 = time.perf_counter()
    image = make_image(args.size, args.seed)
    print(f"image {image.pixels.shape[1]} x {image.pixels.shape[0]} (width x height), "
          f"breast {image.mask.mean():.0%}, made in {time.perf_counter() - t0:.1f} s")

    threads = None
    if args.backend == "numba":
        import numba
        threads = numba.get_num_threads()
    print(f"backend {model.backend}, {os.cpu_count()} CPUs" + (f", numba threads {threads}" if threads else ""))

    # warm-up: compile every kernel on a small image (kept out of the timings)
    small = np.ascontiguousarray(image.pixels[:300, :300])
    scan_image(model, small, stride=args.stride, mask=np.ones_like(small, bool))
    model.predict_proba(np.repeat(small[None, :144, :144], 2, axis=0))

    results = {"size": list(image.pixels.shape), "stride": args.stride, "backend": model.backend,
               "cpus": os.cpu_count(), "numba_threads": threads}
    timings = {}
    scans = {}
    for label in (f"{model.backend} conv_relu_blockmax",):
        best = np.inf
        for _ in range(args.repeats):
            t = time.perf_counter()
            result = scan_image(model, image, stride=args.stride)
            best = min(best, time.perf_counter() - t)
        timings[label] = best
        scans[label] = result
        print(f"fully convolutional ({label}): {best:.2f} s for {result.n_windows} windows "
              f"({result.n_windows / best:,.0f} windows/s)")
    fast_label = min(timings, key=timings.get)
    result = scans[fast_label]
    valid = np.isfinite(result.prob_map)
    n_windows = int(valid.sum())

    # patch by patch on a random sample of the same windows, then extrapolated
    rng = np.random.default_rng(args.seed)
    k_idx, l_idx = np.nonzero(valid)
    pick = rng.choice(len(k_idx), size=min(args.patch_sample, len(k_idx)), replace=False)
    sample = np.zeros_like(valid)
    sample[k_idx[pick], l_idx[pick]] = True
    t = time.perf_counter()
    reference = scan_patchwise(model, image.pixels, stride=args.stride, valid=sample, batch_size=64)
    sample_seconds = time.perf_counter() - t
    per_window = sample_seconds / sample.sum()
    patchwise_total = per_window * n_windows
    max_diff = float(np.nanmax(np.abs(reference[sample] - result.prob_map[sample])))
    print(f"patch by patch: {sample.sum()} sampled windows in {sample_seconds:.2f} s "
          f"({1 / per_window:,.0f} windows/s) -> extrapolated {patchwise_total:.1f} s for {n_windows} windows")
    print(f"max |difference| of probabilities on the sample: {max_diff:.2e}")
    speedup = patchwise_total / timings[fast_label]
    print(f"speed-up of the fully convolutional scan ({fast_label}): {speedup:.0f}x")
    if model.backend == "numba":
        from shallowcnn.kernels import autotune
        results["numba_context"] = ctx = autotune.context()
        print(f"CPU {ctx['cpu']} (LLVM target {ctx['llvm_target']}); kernel variants: "
              + ", ".join(f"{k} -> {r['variant']} ({r['how']})" for k, r in ctx["variants"].items()))
    results.update({"windows": n_windows, "fully_convolutional_s": timings,
                    "patchwise_sample_windows": int(sample.sum()), "patchwise_sample_s": sample_seconds,
                    "patchwise_extrapolated_s": patchwise_total, "speedup": speedup,
                    "max_abs_difference": max_diff, "detections": len(result.detections)})
    if args.json:
        from shallowcnn.storage import atomic_write_text
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    ok = max_diff <= 1e-5
    if not ok:
        print("ERROR: the two scans disagree", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
