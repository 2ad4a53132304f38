"""Benchmark: whole-mammogram scan, fully convolutional against patch by patch; and the command.

    python benchmarks/bench_scan.py                      # full-size phantom, stride 16, numba
    python benchmarks/bench_scan.py --size 832x1024 --backend numpy --patch-sample 64
    python benchmarks/bench_scan.py --command MODEL [--dicom FULL.dcm] --repeats 5

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

``--command MODEL`` times instead what a user waits for: ``shallowcnn scan MODEL
FULL.dcm -o OUT`` as its own process, start-up included (``--dicom``, or a full-size
phantom DICOM written first), ``--repeats`` times after one untimed run (which fills
Numba's and the autotuner's caches), as wall-clock and CPU seconds (median); then
``--stage-runs`` more runs with a timer around the functions of each stage (:data:`STAGES`:
start-up and imports, model, reading, breast mask, window fractions, Numba's first dispatch,
the kernels, the evidence, figures, writing; no profiler, so nothing is inflated), the
median of each stage shown. It runs whatever ``shallowcnn`` PYTHONPATH finds, so
``PYTHONPATH=OLD_CHECKOUT python benchmarks/bench_scan.py --command ...`` measures an
earlier version with the same stages.
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


# (label, [function, ...]): a stage's time is the time spent inside those functions, less
# the time spent in the other stages' functions they call (so the stages add up). A function
# is "module:name" or "module:Class.name", patched where the scan's code calls it from.
STAGES = (
    ("model load (+ choosing the backend)", ["shallowcnn.model:ShallowCNN.load"]),
    ("read DICOM (pydicom, to int32 values)", ["shallowcnn.data.images:read_dicom"]),
    ("8-bit window, breast mask, largest region", ["shallowcnn.scan:as_scan_image"]),
    ("window breast fractions", ["shallowcnn.scan:window_fraction"]),
    ("Numba: first dispatch, cached kernels loaded", ["numba.core.dispatcher:_DispatcherBase._compile_for_args"]),
    ("scan kernels: conv1, conv2 + ReLU + block max (2 threads)", ["shallowcnn.scan:window_features"]),
    ("evidence: each NMS peak through the patch model", ["shallowcnn.scan:locate_detections"]),
    ("head, NMS, merging (rest of scan_image)", ["shallowcnn.scan_files:scan_image"]),
    ("overlay figure", ["shallowcnn.scan_files:plot_scan_overlay", "shallowcnn.plots:plot_scan_overlay"]),
    ("FROC: truth, curve, figure", ["shallowcnn.scan_files:image_truth", "shallowcnn.scan_files:froc_curve",
                                    "shallowcnn.scan_files:plot_froc", "shallowcnn.plots:plot_froc"]),
    ("writing .npy, .json (rest of write_scan_outputs)", ["shallowcnn.scan_files:write_scan_outputs"]),
)
MATPLOTLIB = "import matplotlib (plots.py: the figures before Pillow drew them)"

# Run inside the child: time `import shallowcnn.cli` and the imports the patching needs, patch
# every function of STAGES with a timer, run the command line, print the stages as JSON.
_TIMED = """
import importlib, json, os, sys, time
clock = time.process_time if os.environ.get("BENCH_SCAN_TIMER") == "cpu" else time.perf_counter
t0 = clock()
import shallowcnn.cli
import shallowcnn.scan_files
spent, stack, missing = {}, [], []
stages, matplotlib_label = json.loads(sys.argv[1]), sys.argv[2]
if not hasattr(shallowcnn.scan_files, "plot_scan_overlay"):   # figures drawn by matplotlib (plots.py)
    t = clock()
    import shallowcnn.plots
    spent[matplotlib_label] = clock() - t

def timed(label, function):
    def run(*args, **kwargs):
        start = clock()
        stack.append(0.0)
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = clock() - start
            spent[label] = spent.get(label, 0.0) + elapsed - stack.pop()
            if stack:
                stack[-1] += elapsed
    return run

for label, targets in stages:
    for target in targets:
        module_name, name = target.split(":")
        if module_name.startswith("shallowcnn.plots") and "shallowcnn.plots" not in sys.modules:
            continue
        owner = importlib.import_module(module_name)
        if "." in name:
            cls, name = name.split(".")
            owner = getattr(owner, cls)
        raw = vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if raw is None:
            missing.append(target)
            continue
        if isinstance(raw, classmethod):
            setattr(owner, name, classmethod(timed(label, raw.__func__)))
        else:
            setattr(owner, name, timed(label, raw))
imports = clock() - t0 - spent.get(matplotlib_label, 0.0)
try:
    shallowcnn.cli.main(sys.argv[3:])
except SystemExit:
    pass
print("STAGES", json.dumps({"imports": imports, "inside": clock() - t0, "spent": spent, "missing": missing}))
"""


def _run(cmd, env=None):
    """(wall seconds, CPU seconds of the child, completed process) of one command."""
    import resource
    import subprocess
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done


def stage_run(cmd, timer="wall") -> dict:
    """label -> seconds of one run of ``cmd`` (``shallowcnn scan ...`` as a process) with the
    functions of :data:`STAGES` timed (timer "wall": wall clock; "cpu": CPU time of the process,
    all threads), plus Python's start-up, the imports and "everything else"."""
    wall, cpu, done = _run([sys.executable, "-c", _TIMED, json.dumps(STAGES), MATPLOTLIB, *cmd[3:]],
                           env=dict(os.environ, BENCH_SCAN_TIMER=timer))
    found = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("STAGES"))[7:])
    total = wall if timer == "wall" else cpu
    stages = {"Python start-up (before the first import)": total - found["inside"],
              "imports: shallowcnn.cli, the scan command's modules, NumPy, Numba": found["imports"]}
    stages.update(found["spent"])
    if found["missing"]:
        print(f"not in this version (not timed): {', '.join(found['missing'])}", file=sys.stderr)
    stages["everything else"] = total - sum(stages.values())
    stages["total"] = total
    return stages


def time_command(model_path, dicom, repeats, backend=None, timer="wall", stage_runs=3) -> dict:
    """Time ``shallowcnn scan MODEL DICOM -o OUT`` as a user runs it, ``repeats`` times, then
    ``stage_runs`` more runs split into stages (the median of each stage)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "shallowcnn", "scan", str(model_path), str(dicom), "-o", tmp, "--quiet"]
        if backend:
            cmd += ["--backend", backend]
        _run(cmd)                                   # fills Numba's and the autotuner's caches
        runs = [_run(cmd)[:2] for _ in range(max(1, repeats))]
        walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
        staged = [stage_run(cmd, timer) for _ in range(max(1, stage_runs))]
    labels = list(dict.fromkeys(label for run in staged for label in run))
    stages = {label: float(np.median([run.get(label, 0.0) for run in staged])) for label in labels}
    return {"command": " ".join(["shallowcnn", *cmd[3:]]), "wall_s": walls, "cpu_s": cpus,
            "wall_median_s": float(np.median(walls)), "cpu_median_s": float(np.median(cpus)),
            "timer": timer, "stage_runs": len(staged), "stages_s": stages}


def full_size_dicom(folder) -> str:
    """One full-size (3328 x 4084) phantom DICOM written into ``folder``."""
    from shallowcnn.data.phantom import generate_phantom
    generate_phantom(os.path.join(folder, "phantom"), cases=1, seed=0, size="full", verbose=False)
    return sorted(str(p) for p in __import__("pathlib").Path(folder, "phantom", "AllDICOMs").glob("*.dcm"))[0]


def command_main(args) -> int:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        dicom = args.dicom or full_size_dicom(tmp)
        res = time_command(args.command, dicom, args.repeats, args.backend if args.backend != "numba" else None,
                           args.timer, args.stage_runs)
    print(f"{res['command']}: wall {res['wall_median_s']:.2f} s, CPU {res['cpu_median_s']:.2f} s (median of "
          f"{len(res['wall_s'])}; walls {', '.join(f'{w:.2f}' for w in res['wall_s'])}); load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    stages = dict(res["stages_s"])
    total = stages.pop("total")
    print(f"by stage, {res['timer']} seconds (median of {res['stage_runs']} timed runs; total {total:.2f} s):")
    for label, sec in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {sec:6.2f} s  {label}")
    if args.json:
        from shallowcnn.storage import atomic_write_text
        atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
    return 0


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
    parser.add_argument("--command", metavar="MODEL", default=None,
                        help="time `shallowcnn scan MODEL DICOM -o OUT` as a process, by stage (see above)")
    parser.add_argument("--dicom", default=None, help="with --command: the DICOM to scan (default: a full-size "
                                                      "phantom one, written first)")
    parser.add_argument("--timer", choices=("wall", "cpu"), default="wall",
                        help="with --command: the stages in wall-clock or CPU seconds (a loaded machine: cpu)")
    parser.add_argument("--stage-runs", type=int, default=3,
                        help="with --command: runs split into stages, the median of each stage is shown (default 3)")
    args = parser.parse_args(argv)
    if args.command:
        return command_main(args)

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
