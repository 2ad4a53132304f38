"""Pick the fastest kernel variant for this CPU by timing them, and remember the pick.

The CPU kernels come in a few *variants* (:mod:`shallowcnn.kernels.tiles` explains
why): the same arithmetic, blocked differently. Which is fastest depends on the CPU
-- how many FMA units it has, how wide its vectors are, what LLVM makes of it -- and
a table of CPU names would be wrong on the next CPU. So we measure:

1. The first time a kernel family meets a layer shape (its *signature*, e.g.
   ``tile fused float32 C6 F16 K9 Wo128``), :func:`choose` runs the real kernel on
   a small slice of the real input once per variant (this compiles it; Numba
   caches it on disk), then times each a few times and keeps the fastest.
2. The choice is saved in a small JSON file beside Numba's cache, named after this
   CPU model, LLVM's name for it and the package versions. Later runs (any
   process) read it and start with the right variant at once.
3. ``shallowcnn tune`` re-times them (after a hardware or software change, or on
   a quiet machine) and prints the table.

Timing uses one thread and the *process CPU time*, not the wall clock: on a shared
machine the wall clock also counts the time spent waiting for a core, which has
nothing to do with the variant. Each variant's time is the best of a few samples
of at least 5 ms each; all of it takes well under a second per layer shape, plus
Numba's compilation of each variant the first time (then cached on disk).

Tests and CI pin the variants instead of timing them: the environment variable
``SHALLOWCNN_KERNEL_VARIANT`` holds variant names, comma separated (``f4r1,g2``), or
``default`` (the default of every family, never time anything).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from .variants import FUSED_VARIANTS, SMALL_F_VARIANTS, TILE_VARIANTS

ENV = "SHALLOWCNN_KERNEL_VARIANT"
REPS = 3                      # timed samples per variant (the best is kept)
SAMPLE_S = 0.005              # CPU seconds per sample at least (short runs are repeated)

# family -> its variant names, the default first
FAMILIES = {"tile": tuple(TILE_VARIANTS), "fused": FUSED_VARIANTS, "small_f": tuple(SMALL_F_VARIANTS)}

_chosen: dict = {}            # signature -> record, for this process
_disk: dict | None = None     # the cache file's choices, read once
_force = False                # True while `shallowcnn tune` re-times everything
_warned = False               # the cache file's warning was printed


# ---------------------------------------------------------------- the machine

def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), or what Python knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine() or "unknown"


def llvm_target() -> str:
    """The CPU name LLVM compiles the kernels for (``NUMBA_CPU_NAME`` overrides the host's)."""
    import llvmlite.binding as ll
    import numba
    return numba.config.CPU_NAME or ll.get_host_cpu_name()


def isa_flags() -> list[str]:
    """The vector instruction sets the CPU reports (avx*, fma, sse4*), sorted."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(w for w in line.split(":", 1)[1].split()
                                  if w.startswith(("avx", "sse4", "fma", "amx")))
    except OSError:
        pass
    return []


def identity() -> dict:
    """What a cached choice is valid for: this CPU model and these package versions."""
    import numba
    from .. import __version__
    return {"cpu": cpu_model(), "llvm_target": llvm_target(), "shallowcnn": __version__,
            "numba": numba.__version__}


def cache_path() -> Path:
    """The JSON file of choices, beside Numba's cache of the kernels.

    That is ``NUMBA_CACHE_DIR`` when set, else where Numba keeps the compiled kernels
    (``shallowcnn/kernels/__pycache__``, or a per-user folder when that is read-only).
    """
    from . import tiles
    folder = getattr(getattr(tiles.conv_tile, "_cache", None), "_cache_path", None)
    folder = folder or os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    ident = identity()
    tag = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    return Path(folder) / f"shallowcnn-autotune-{tag}.json"


# ---------------------------------------------------------------- pins

def pins() -> dict:
    """family -> pinned variant name, from ``SHALLOWCNN_KERNEL_VARIANT`` ({} when unset)."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return {}
    if value == "default":
        return {fam: names[0] for fam, names in FAMILIES.items()}
    out = {}
    for name in (v.strip() for v in value.split(",") if v.strip()):
        fams = [f for f, names in FAMILIES.items() if name in names]   # f4r1 pins "tile" and "fused"
        if not fams:
            known = ", ".join(dict.fromkeys(n for names in FAMILIES.values() for n in names))
            raise ValueError(f"{ENV}={value!r}: unknown variant {name!r}; "
                             f"use 'default' or names among {known}")
        for fam in fams:
            out[fam] = name
    return out


# ---------------------------------------------------------------- the choice

def signature(kind, x, W) -> str:
    """The shapes a choice is made for, e.g. ``tile fused float32 C6 F16 K9 Wo128``:
    the kernel, dtype, channels, filters, kernel size and output row width (what
    the variants are sensitive to; the batch and the row count hardly matter)."""
    F, C, K, _ = W.shape
    return f"{kind} {x.dtype.name} C{C} F{F} K{K} Wo{x.shape[3] - K + 1}"


def tuning_slice(x, K, rows=32, patches=2):
    """What the variants are timed on: a few patches and output rows of x (N, C, H, W),
    with all its channels and columns."""
    import numpy as np
    return np.ascontiguousarray(x[:patches, :, :K - 1 + rows])


def pick(family: str, kind: str, x, W, run, rows: int = 32) -> str:
    """:func:`choose` for the kernel ``kind`` on input x (N, C, H, W) with weights W.

    ``run(xs, name)`` runs the kernel with variant ``name`` on ``xs``. The tuning
    slice of x (:func:`tuning_slice`, ``rows`` output rows) is cut only if the
    variants are timed now: a pinned or cached choice costs no copy of the input,
    which matters since every call of a kernel asks.
    """
    sliced = []

    def run_on_slice(name):
        if not sliced:
            sliced.append(tuning_slice(x, W.shape[2], rows))
        return run(sliced[0], name)

    return choose(family, signature(kind, x, W), run_on_slice)


def check(family, variant) -> str:
    """``variant`` if it is a name of ``family``, else a ValueError naming the choices."""
    if variant not in FAMILIES[family]:
        raise ValueError(f"unknown kernel variant {variant!r}; choose one of {', '.join(FAMILIES[family])}")
    return variant


def choose(family: str, signature: str, run) -> str:
    """The variant of ``family`` to use for the shapes ``signature``.

    ``run(name)`` runs the kernel once with variant ``name`` on a slice of the real
    input (the caller decides the slice: small, but the real channels, filters,
    kernel size and row width). A pinned variant wins; then this process's earlier
    choice; then the cache file; else the variants are timed now.
    """
    pinned = None if _force else pins().get(family)
    if pinned is not None:
        _chosen.setdefault(signature, {"variant": pinned, "how": f"pinned by {ENV}"})
        return pinned
    rec = None if _force else _chosen.get(signature)
    if rec is None and not _force:
        rec = _read_disk().get(signature)
        # a choice made among other variants (an older version's) is made again
        if rec is not None and set(rec.get("cpu_ms", ())) == set(FAMILIES[family]):
            rec = dict(rec, how="cached")
        else:
            rec = None
    if rec is None:
        rec = _time_variants(family, signature, run)
        _save(signature, rec)
    _chosen[signature] = rec
    return rec["variant"]


def _time_variants(family, signature, run) -> dict:
    import numba
    print(f"shallowcnn: timing {len(FAMILIES[family])} kernel variants for {signature} "
          f"(once for this CPU; `shallowcnn tune` redoes it)", file=sys.stderr, flush=True)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    times = {}
    try:
        for name in FAMILIES[family]:
            run(name)                          # compiles (or loads) this variant
            best = float("inf")
            for _ in range(REPS):              # a sample: as many runs as fill SAMPLE_S
                calls, t = 0, time.process_time()
                while calls == 0 or time.process_time() - t < SAMPLE_S:
                    run(name)
                    calls += 1
                best = min(best, (time.process_time() - t) / calls)
            times[name] = 1e3 * best
    finally:
        numba.set_num_threads(threads)
    winner = min(times, key=times.get)
    return {"variant": winner, "how": "timed", "cpu_ms": {k: round(v, 3) for k, v in times.items()}}


def _read_disk() -> dict:
    """The cache file's choices: {signature: {"variant", "cpu_ms"}}. A file of any other
    shape (choices not an object, a record that is not one, no or an unknown "variant",
    times that are not numbers), or a folder in its place, counts as no cache, with a
    warning naming it; the next timing (or ``shallowcnn tune``) writes it anew."""
    global _disk
    if _disk is None:
        _disk = {}
        path = cache_path()

        def unusable(why):
            global _warned
            if not _warned:                    # once per process (tune reads it again per save)
                print(f"shallowcnn: warning: ignoring the kernel choices in {path}: {why}; "
                      f"`shallowcnn tune` writes them anew", file=sys.stderr, flush=True)
            _warned = True

        if path.is_dir():
            unusable("a folder is in the cache file's place (remove it)")
            return _disk
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _disk                       # never tuned here: time when first needed
        except (OSError, ValueError, RecursionError) as e:
            unusable(f"unreadable ({e})")
            return _disk
        if not isinstance(data, dict) or data.get("identity") != identity():
            if not isinstance(data, dict):
                unusable(f"a JSON {type(data).__name__}, not an object")
            return _disk                       # another CPU or version's file: time again
        choices = data.get("choices", {})
        known = {name for names in FAMILIES.values() for name in names}
        if not isinstance(choices, dict):
            unusable(f'"choices" is a JSON {type(choices).__name__}, not an object')
            return _disk
        for sig, rec in choices.items():
            times = rec.get("cpu_ms") if isinstance(rec, dict) else None
            if (not isinstance(rec, dict) or rec.get("variant") not in known or not isinstance(times, dict)
                    or rec["variant"] not in times
                    or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times.values())):
                unusable(f"the record of {sig} is not {{\"variant\": one of {', '.join(sorted(known))}, "
                         f"\"cpu_ms\": {{...}}}}")
                return _disk
        _disk = dict(choices)
    return _disk


def _save(signature, rec):
    """Add one choice to the cache file (read again first: another process may have added some)."""
    from ..storage import atomic_write_text
    global _disk
    _disk = None
    choices = dict(_read_disk())
    choices[signature] = {k: v for k, v in rec.items() if k != "how"}
    _disk = choices
    try:
        atomic_write_text(cache_path(), json.dumps({"identity": identity(), "choices": choices},
                                                   indent=1, sort_keys=True))
    except OSError as e:                       # a read-only install: choose again next time
        print(f"shallowcnn: could not save the kernel choice to {cache_path()}: {e}",
              file=sys.stderr)


def chosen() -> dict:
    """signature -> {variant, how[, cpu_ms]} for the kernels this process has used."""
    return {k: dict(v) for k, v in _chosen.items()}


def context() -> dict:
    """The machine and the chosen variants, for benchmark reports."""
    import numba
    return {**identity(), "isa": isa_flags(), "numba_threads": numba.get_num_threads(),
            "threading_layer": _threading_layer(), "variants": chosen(), "pins": os.environ.get(ENV, "")}


def _threading_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:                         # no parallel kernel has run yet
        return None


# ---------------------------------------------------------------- `shallowcnn tune`

def retune(sizes=(144, 60), dtype="float32", batch=4, scan=True):
    """Time every variant again for the network's layers at these patch sizes (and
    for one scan tile), save the choices and return them (signature -> record)."""
    import numpy as np

    from ..model import ShallowCNN
    global _force
    rng = np.random.default_rng(0)
    model = ShallowCNN(backend="numba", seed=0)
    _force = True
    try:
        for size in sizes:
            model.forward(rng.random((batch, 1, size, size)).astype(dtype), training=False)
        if scan:
            import math

            from ..scan import DEFAULT_STRIDE, DEFAULT_TILE
            from .cpu_blockmax import conv_relu_blockmax
            g = math.gcd(DEFAULT_STRIDE, 128)      # the scan's block side (see scan.py)
            h = rng.random((1, 6, DEFAULT_TILE + 8, DEFAULT_TILE + 8)).astype(dtype)
            W2, b2 = model.params["conv2.W"], model.params["conv2.b"]
            conv_relu_blockmax(h, W2.astype(dtype), b2.astype(dtype), g)
    finally:
        _force = False
    return chosen()


def add_command(subparsers):
    from ..options import whole_number_in

    p = subparsers.add_parser(
        "tune", help="time the CPU kernel variants on this machine and remember the fastest",
        description="Times each variant of the Numba CPU kernels (more filters or rows per "
                    "block: see shallowcnn/kernels/tiles.py; Winograd for the fused conv2: "
                    "kernels/winograd.py) on the network's layers, keeps "
                    "the fastest per layer shape in a file beside Numba's cache, and prints "
                    "the table. Later runs use the saved choice at once. Run it again after "
                    "changing the CPU or the packages, or on a quiet machine.")
    p.add_argument("--size", type=whole_number_in(17, 512, "patch side"), action="append", metavar="PIXELS",
                   help="patch side to tune for, 17..512 (repeatable; default 144 and 60)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="data type of the kernels (default float32)")
    p.add_argument("--no-scan", action="store_true", help="skip the scanning kernel")
    p.add_argument("--show", action="store_true",
                   help="only print the saved choices for this machine (no timing)")
    p.set_defaults(func=run_command)


def run_command(args):
    if args.show:
        rows = _read_disk()
        print(f"{cache_path()}:" if rows else f"no saved choices ({cache_path()})")
    else:
        sizes = args.size or [144, 60]
        if any(s < 17 for s in sizes):
            print("tune: --size must be at least 17 (two 9 x 9 convolutions)", file=sys.stderr)
            return 2
        if os.environ.get(ENV):
            print(f"tune: ignoring {ENV}={os.environ[ENV]!r} while timing", file=sys.stderr)
        rows = retune(sizes, args.dtype, scan=not args.no_scan)
        print(f"saved to {cache_path()}")
    ident = identity()
    print(f"CPU {ident['cpu']} (LLVM target {ident['llvm_target']}), shallowcnn {ident['shallowcnn']}, "
          f"numba {ident['numba']}")
    for sig, rec in sorted(rows.items()):
        times = "  ".join(f"{k} {v:.2f}" for k, v in rec.get("cpu_ms", {}).items())
        print(f"  {sig:44s} -> {rec['variant']:5s}  (CPU ms, one thread: {times})")
    return 0
