"""``shallowcnn tune``: time the CPU kernel variants on this machine and remember the fastest.

The choosing and the cache are :mod:`shallowcnn.kernels.autotune`'s; this command runs
the network's real layers (and one scan tile) with every choice timed again. Then, on a
CPU with AVX-512, it measures whether the kernels run faster built for 512-bit vectors
than for 256-bit ones (:func:`measure_vector_width`; :mod:`shallowcnn.kernels.vector_width`
explains why that needs a process per width) and saves the width for later processes.
Last, with two or more threads, it times the network's forward with each of Numba's
threading layers, and with workqueue's threads pinned to a CPU each, a process each
(:func:`measure_threading_layer`; :mod:`shallowcnn.kernels.threading_layer` and
:mod:`shallowcnn.kernels.thread_placement` say why), and saves the fastest where it wins clearly.
"""
from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..constants import MIN_INPUT_SIDE
from ..kernels import autotune, autotune_cache, get_backend, thread_placement, threading_layer, vector_width
from ..model import ShallowCNN
from ..scan import DEFAULT_STRIDE, DEFAULT_TILE
from .common import CommandError, whole_number_in

# The work both vector widths are timed on: name -> (patch side, training step or inference)
WIDTH_WORK = {"train 144": (144, True), "infer 144": (144, False), "infer 60": (60, False)}
WIDTH_BATCH = 16
WIDTH_REPS = 5                # samples per piece of work in a process (the best is kept)
WIDTH_ROUNDS = 2              # processes per width, alternating (256, 512, 256, 512): a burst of load
                              # on a shared machine then rarely decides (the best of each piece is kept)

# The work the threading configurations are timed on: name -> patch side; inference at batch 64 with
# all of Numba's threads, wall-clock (what they change is how long threads wait, not CPU time)
LAYER_WORK = {"infer 144": 144, "infer 60": 60}
LAYER_BATCH = 64
LAYER_REPS = {144: 9, 60: 25}    # calls per piece in a process, right after 3 warm-up calls; their MEAN is
                                 # kept: late wake-ups and threads sharing a CPU are what tell the
                                 # configurations apart, and a user's batches pay for all of them
LAYER_ROUNDS = 3                 # processes per configuration, alternating; the mean over them is kept (a
                                 # process can be lucky or unlucky throughout: the best of a few favours luck)


def retune(sizes=(144, 60), dtype="float32", batch=64, scan=True):
    """Time every variant again for the network's layers at these patch sizes (and
    for one scan tile), save the choices and return them (signature -> record). Each layer's
    variants are timed on a slice of 4 patches; the stack of both layers on the whole batch
    (a training batch: conv1's output of the batch is what the stack keeps out of memory)."""
    rng = np.random.default_rng(0)
    model = ShallowCNN(backend="numba", seed=0)
    with autotune.timing_everything():
        for size in sizes:
            model.forward(rng.random((batch, 1, size, size)).astype(dtype), training=False)
        if scan:
            g = math.gcd(DEFAULT_STRIDE, 128)      # the scan's block side (see scan.py)
            h = rng.random((1, 6, DEFAULT_TILE + 8, DEFAULT_TILE + 8)).astype(dtype)
            W2, b2 = model.params["conv2.W"], model.params["conv2.b"]
            get_backend("numba").conv_relu_blockmax(h, W2.astype(dtype), b2.astype(dtype), g)
    return autotune.chosen()


def time_width_work(batch=WIDTH_BATCH) -> dict:
    """CPU ms (one thread, best of WIDTH_REPS samples) of each piece of WIDTH_WORK in this
    process, at whatever vector width it runs, with the kernel variants the autotuner chose.
    A new process per width runs it (:func:`measure_vector_width`)."""
    import numba

    from ..optim import Adam
    from ..train import train_step
    rng = np.random.default_rng(0)
    model = ShallowCNN(backend="numba", seed=0)
    opt = Adam(model.params, lr=1e-3)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)                   # CPU time of one thread: the waits of a shared machine do not count
    times = {}
    try:
        for name, (size, train) in WIDTH_WORK.items():
            x = rng.random((batch, 1, size, size)).astype(np.float32)
            y = (np.arange(batch) % 2).astype(np.float32)
            step = (functools.partial(train_step, model, opt, x, y) if train
                    else functools.partial(model.forward, x, training=False))
            step()                             # compiles (or loads) the kernels
            times[name] = round(autotune.cpu_ms(step, WIDTH_REPS), 3)
    finally:
        numba.set_num_threads(threads)
    return times


def _run_in_child(code: str, env_changes: dict, what: str) -> dict:
    """Run ``code`` in a new Python process (this shallowcnn first on the path, the
    environment changed by ``env_changes``, None removing a variable, and no variant pins:
    the autotuner's choices count) and return the JSON object it printed last; a
    CommandError saying ``what`` failed if the process did."""
    package_root = str(Path(__file__).resolve().parents[2])     # the same shallowcnn as this process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    env.pop(autotune.ENV, None)
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise CommandError(f"{what} failed:\n{r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _time_width_in_child(bits: int) -> dict:
    """:func:`time_width_work` in a new Python process with ``SHALLOWCNN_VECTOR_WIDTH=bits``."""
    code = ("import json; from shallowcnn.commands.tune import time_width_work; "
            "from shallowcnn.kernels import vector_width; "
            "print(json.dumps({'cpu_ms': time_width_work(), 'width': vector_width.applied()}))")
    out = _run_in_child(code, {vector_width.ENV: str(bits)}, f"timing the {bits}-bit kernels")
    if (out["width"] or {}).get("bits") != bits:
        raise CommandError(f"the process meant to run {bits}-bit kernels ran {out['width']}")
    return out["cpu_ms"]


def measure_vector_width(time_in_child=_time_width_in_child) -> dict | None:
    """Time WIDTH_WORK with 256- and with 512-bit vectors (WIDTH_ROUNDS processes each), print the table,
    save the width :func:`vector_width.decide` picks for this machine and return its record
    (``{"bits", "cpu_ms": {"256": ..., "512": ...}}``); None, saying why, where there is no
    choice to make (no AVX-512) or the user's NUMBA_CPU_FEATURES decides."""
    if os.environ.get("NUMBA_CPU_FEATURES") is not None:
        print("vector width: not measured (NUMBA_CPU_FEATURES is set, and it decides)")
        return None
    if not vector_width.has_avx512():
        print("vector width: nothing to measure (this CPU has no AVX-512: 256 bits at most)")
        return None
    print(f"vector width: timing the kernels built for 256- and for 512-bit vectors, {WIDTH_ROUNDS} processes "
          "each (the first time at a width compiles every kernel: a minute or two)", flush=True)
    ms = {bits: {} for bits in vector_width.WIDTHS}
    for _ in range(WIDTH_ROUNDS):
        for bits in vector_width.WIDTHS:
            for name, t in time_in_child(bits).items():
                ms[bits][name] = min(t, ms[bits].get(name, t))
    bits = vector_width.decide(ms[256], ms[512])
    rec = {"bits": bits, "cpu_ms": {str(b): t for b, t in ms.items()}}
    autotune_cache.save_vector_width(rec)
    _print_width(rec)
    return rec


def time_layer_work(batch=LAYER_BATCH) -> dict:
    """Wall ms (mean of LAYER_REPS calls, all of Numba's threads) of each piece of LAYER_WORK
    in this process, with whatever threading layer it runs. A new process per layer runs it
    (:func:`measure_threading_layer`)."""
    import time

    rng = np.random.default_rng(0)
    model = ShallowCNN(backend="numba", seed=0)
    times = {}
    for name, size in LAYER_WORK.items():
        x = rng.random((batch, 1, size, size)).astype(np.float32)
        for _ in range(3):                     # compiles (or loads) the kernels, starts the threads
            model.forward(x, training=False)
        samples = []
        for _ in range(LAYER_REPS[size]):
            start = time.perf_counter()
            model.forward(x, training=False)
            samples.append(1e3 * (time.perf_counter() - start))
        times[name] = round(float(np.mean(samples)), 3)
    return times


def _time_layer_in_child(config: str) -> dict:
    """:func:`time_layer_work` in a new Python process running ``config`` (a name of
    threading_layer.CONFIGS: the layer, and whether workqueue's threads are pinned)."""
    layer, pinned = config.split()[0], config.endswith(" pinned")
    code = ("import json, numba; from shallowcnn.kernels import cpu; from shallowcnn.commands.tune import "
            "time_layer_work; ms = time_layer_work(); print(json.dumps({'wall_ms': ms, 'layer': "
            "numba.threading_layer(), 'pinned': cpu.PLACEMENT['pinned']}))")
    out = _run_in_child(code, {"NUMBA_THREADING_LAYER": layer, "NUMBA_THREADING_LAYER_PRIORITY": None,
                               thread_placement.ENV: "1" if pinned else "0"},
                        f"timing the kernels with Numba's {config} threads")
    if out["layer"] != layer or out["pinned"] != pinned:
        raise CommandError(f"the process meant to run Numba's {config} threads ran {out['layer']}"
                           f"{' pinned' if out['pinned'] else ''}")
    return out["wall_ms"]


def measure_threading_layer(time_in_child=_time_layer_in_child, threads=None) -> dict | None:
    """Time LAYER_WORK with each configuration of threading_layer.CONFIGS that can run here
    (LAYER_ROUNDS processes each), print the table, save what :func:`threading_layer.decide`
    picks for this machine and return its record (``{"layer", "pinned", "wall_ms": {config:
    ...}}``); None, saying why, where there is nothing to choose (one thread; neither OpenMP
    nor pinning here) or the user's NUMBA_THREADING_LAYER decides."""
    import numba
    threads = numba.config.NUMBA_NUM_THREADS if threads is None else threads
    if threading_layer.set_by_user():
        print("threading layer: not measured (NUMBA_THREADING_LAYER is set, and it decides)")
        return None
    if threads < 2:
        print("threading layer: nothing to measure (one thread: no thread waits for another)")
        return None
    configs = [c for c in threading_layer.CONFIGS
               if not (c == "omp" and not threading_layer.available("omp"))
               and not (c.endswith(" pinned") and thread_placement.possible("workqueue", threads))]
    if len(configs) == 1:
        print("threading layer: nothing to measure (Numba has no OpenMP layer here, and its threads cannot be "
              f"pinned: {thread_placement.possible('workqueue', threads)}): workqueue")
        return None
    print(f"threading layer: timing inference with Numba's {', '.join(configs)} threads, {threads} threads, "
          f"{LAYER_ROUNDS} processes each", flush=True)
    runs = {config: [] for config in configs}
    for _ in range(LAYER_ROUNDS):
        for config in configs:
            runs[config].append(time_in_child(config))
    ms = {config: {name: round(float(np.mean([run[name] for run in rs])), 3) for name in rs[0]}
          for config, rs in runs.items()}
    rec = {**threading_layer.decide(ms), "wall_ms": ms}
    autotune_cache.save_threading_layer(rec)
    _print_layer(rec)
    return rec


def _print_layer(rec):
    ms = rec["wall_ms"]
    base = ms[threading_layer.CONFIGS[0]]
    print(f"  {'wall ms, batch ' + str(LAYER_BATCH) + ' (mean)':32s} " + " ".join(f"{c:>17s}" for c in ms)
          + f"  (mean of {LAYER_ROUNDS} processes; x: faster than {threading_layer.CONFIGS[0]})")
    for name in base:
        print(f"  {name:32s} " + " ".join(f"{t[name]:9.2f} ({base[name] / t[name]:.2f}x)" for t in ms.values()))
    print(f"  {'geometric mean of the speed-ups':32s} " + " ".join(
        f"{'':9s} ({threading_layer.geometric_mean([base[k] / t[k] for k in base]):.2f}x)" for t in ms.values()))
    chosen = rec["layer"] + (" pinned" if rec.get("pinned") else "")
    print(f"  -> {chosen} for the processes to come (another than {threading_layer.CONFIGS[0]} only when "
          f"{100 * threading_layer.CLEAR_WIN:.0f}% faster (geometric mean) and nowhere "
          f"{100 * threading_layer.CLEAR_WIN:.0f}% slower; NUMBA_THREADING_LAYER and {thread_placement.ENV} override)")


def _print_width(rec):
    ms256, ms512 = rec["cpu_ms"]["256"], rec["cpu_ms"]["512"]
    print(f"  {'CPU ms, one thread, batch ' + str(WIDTH_BATCH):32s} {'256 bits':>9s} {'512 bits':>9s}  (best of "
          f"{WIDTH_ROUNDS} processes)")
    for name in [k for k in WIDTH_WORK if k in ms256] + [k for k in ms256 if k not in WIDTH_WORK]:
        print(f"  {name:32s} {ms256[name]:9.2f} {ms512[name]:9.2f}  ({ms256[name] / ms512[name]:.2f}x)")
    total256, total512 = sum(ms256.values()), sum(ms512.values())
    print(f"  {'total':32s} {total256:9.2f} {total512:9.2f}  ({total256 / total512:.2f}x)")
    print(f"  -> {rec['bits']} bits for the processes to come (512 only when {100 * vector_width.CLEAR_WIN:.0f}% "
          f"faster in total and nowhere {100 * vector_width.CLEAR_WIN:.0f}% slower; {vector_width.ENV} overrides)")


def add_command(subparsers):
    p = subparsers.add_parser(
        "tune", help="time the CPU kernel variants on this machine and remember the fastest",
        description="Times each variant of the Numba CPU kernels (more filters or rows per "
                    "block: see shallowcnn/kernels/tiles.py; Winograd for the fused conv2: "
                    "kernels/winograd.py) on the network's layers, keeps "
                    "the fastest per layer shape in a file beside Numba's cache, and prints "
                    "the table. On a CPU with AVX-512 it then times the network at 144 and 60 "
                    "pixels with 256- and with 512-bit vectors, a process each, and keeps 512 "
                    "only where it is clearly faster (SHALLOWCNN_VECTOR_WIDTH=256|512|llvm "
                    "overrides the saved width, NUMBA_CPU_FEATURES overrides both). With two or "
                    "more threads it then times inference with Numba's workqueue threads (free, "
                    "or pinned to a CPU each) and omp threads and keeps another than free "
                    "workqueue only where it is clearly faster (NUMBA_THREADING_LAYER and "
                    "SHALLOWCNN_PIN_THREADS=1|0 override). "
                    "Later runs use the saved choices at once. Run it again after "
                    "changing the CPU or the packages, or on a quiet machine.")
    p.add_argument("--size", type=whole_number_in(MIN_INPUT_SIDE, 512, "patch side"), action="append",
                   metavar="PIXELS",
                   help=f"patch side to tune for, {MIN_INPUT_SIDE}..512 (repeatable; default 144 and 60)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="data type of the kernels (default float32)")
    p.add_argument("--no-scan", action="store_true", help="skip the scanning kernel")
    p.add_argument("--no-width", action="store_true",
                   help="do not measure the vector width (256 or 512 bits; it takes a minute or two)")
    p.add_argument("--no-threading", action="store_true",
                   help="do not measure Numba's threading layer (workqueue, pinned or not, or omp; a minute)")
    p.add_argument("--show", action="store_true",
                   help="only print the saved choices for this machine (no timing)")
    p.set_defaults(func=run_command)


def run_command(args):
    if args.show:
        rows = autotune.saved_choices()
        print(f"{autotune_cache.cache_path()}:" if rows else f"no saved choices ({autotune_cache.cache_path()})")
    else:
        if os.environ.get(autotune.ENV):
            print(f"tune: ignoring {autotune.ENV}={os.environ[autotune.ENV]!r} while timing", file=sys.stderr)
        rows = retune(args.size or [144, 60], args.dtype, scan=not args.no_scan)
        print(f"saved to {autotune_cache.cache_path()}")
    ident = autotune.identity()
    print(f"CPU {ident['cpu']} (LLVM target {ident['llvm_target']}), shallowcnn {ident['shallowcnn']}, "
          f"numba {ident['numba']}")
    for sig, rec in sorted(rows.items()):
        times = "  ".join(f"{k} {v:.2f}" for k, v in rec.get("cpu_ms", {}).items())
        print(f"  {sig:44s} -> {rec['variant']:5s}  (CPU ms, one thread: {times})")
    if not args.show and not args.no_width:
        measure_vector_width()
    elif args.show and (measured := autotune_cache.read_vector_width()):
        print("vector width measured here:")
        _print_width(measured)
    if not args.show and not args.no_threading:
        measure_threading_layer()
    elif args.show and (layer := autotune_cache.read_threading_layer()):
        print("threading layer measured here:")
        _print_layer(layer)
    return 0
