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
   CPU model, LLVM's name for it and the package versions (:mod:`.autotune_cache`). Later runs (any
   process) read it and start with the right variant at once.
3. ``shallowcnn tune`` re-times them (after a hardware or software change, or on
   a quiet machine) and prints the table. It also measures whether 512-bit vectors
   beat 256-bit ones here (:mod:`.vector_width`: that needs a process per width).

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

import contextlib
import functools
import os
import sys
import time

from . import autotune_cache, thread_placement
from .autotune_cache import identity, isa_flags
from .variants import BLOCKMAX_VARIANTS, FUSED_VARIANTS, SMALL_F_FAMILY, STACK_VARIANTS, TILE_VARIANTS

# numba is imported inside the functions that need it: `shallowcnn tune`, and so every
# start of the command line, imports this module.

ENV = "SHALLOWCNN_KERNEL_VARIANT"
REPS = 3                      # timed samples per variant (the best is kept)
SAMPLE_S = 0.005              # CPU seconds per sample at least (short runs are repeated)

# family -> its variant names, the default first
# ("fused": the fused conv2 + global max; "blockmax": the scan's conv2 + block max; "stack":
# conv1 and the fused conv2 as two kernels or one loop; "wino" is in "fused", "blockmax" and
# "small_f", "wino2d" in "fused", "small_f" and "stack")
FAMILIES = {"tile": tuple(TILE_VARIANTS), "fused": FUSED_VARIANTS, "blockmax": BLOCKMAX_VARIANTS,
            "small_f": SMALL_F_FAMILY, "stack": STACK_VARIANTS}

_chosen: dict = {}            # signature -> record, for this process
_force = False                # True inside timing_everything() (`shallowcnn tune`)


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


def tuning_slice(x, K, rows=48, patches=4):
    """What the variants are timed on: a few patches and output rows of x (N, C, H, W),
    with all its channels and columns. 48 rows hold a whole 60 x 60 patch's conv2 (44 rows)
    and whole bands of the 2-D Winograd kernels; 4 patches spread the per-call costs (packing
    the weights) as a batch would, more than 2 did."""
    import numpy as np
    return np.ascontiguousarray(x[:patches, :, :K - 1 + rows])


def pick(family: str, kind: str, x, W, run, rows: int = 48, patches: int = 4) -> str:
    """:func:`choose` for the kernel ``kind`` on input x (N, C, H, W) with weights W.

    ``run(xs, name)`` runs the kernel with variant ``name`` on ``xs``. The tuning
    slice of x (:func:`tuning_slice`, ``rows`` output rows of ``patches`` patches) is cut only if the
    variants are timed now: a pinned or cached choice costs no copy of the input,
    which matters since every call of a kernel asks.
    """
    sliced = []

    def run_on_slice(name):
        if not sliced:
            sliced.append(tuning_slice(x, W.shape[2], rows, patches))
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
        rec = autotune_cache.read_choices().get(signature)
        # a choice made among other variants (an older version's) is made again
        if rec is not None and set(rec.get("cpu_ms", ())) == set(FAMILIES[family]):
            rec = dict(rec, how="cached")
        else:
            rec = None
    if rec is None:
        rec = _time_variants(family, signature, run)
        autotune_cache.save_choice(signature, rec)
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
            times[name] = cpu_ms(functools.partial(run, name))
    finally:
        numba.set_num_threads(threads)
    winner = min(times, key=times.get)
    return {"variant": winner, "how": "timed", "cpu_ms": {k: round(v, 3) for k, v in times.items()}}


def cpu_ms(run, reps=REPS) -> float:
    """The process CPU time of one ``run()`` in ms: the best of ``reps`` samples, a sample being
    as many runs as fill SAMPLE_S (one run when it takes longer)."""
    best = float("inf")
    for _ in range(reps):
        calls, t = 0, time.process_time()
        while calls == 0 or time.process_time() - t < SAMPLE_S:
            run()
            calls += 1
        best = min(best, (time.process_time() - t) / calls)
    return 1e3 * best


@contextlib.contextmanager
def timing_everything():
    """Within this block every choice is timed again, pins and saved choices ignored
    (what ``shallowcnn tune`` does); the new choices are saved."""
    global _force
    _force = True
    try:
        yield
    finally:
        _force = False


def forget_choices() -> None:
    """Forget this process's choices and the cache file read so far (as a new process would)."""
    _chosen.clear()
    autotune_cache.forget()


def saved_choices() -> dict:
    """signature -> record of the cache file for this machine ({} when there is none)."""
    return dict(autotune_cache.read_choices())


def chosen() -> dict:
    """signature -> {variant, how[, cpu_ms]} for the kernels this process has used."""
    return {k: dict(v) for k, v in _chosen.items()}


def context() -> dict:
    """The machine and the chosen variants, for benchmark reports."""
    import numba
    from . import vector_width
    return {**identity(), "isa": isa_flags(), "numba_threads": numba.get_num_threads(),
            "threading_layer": _threading_layer(),
            "threads_pinned": bool((thread_placement.applied or {}).get("pinned")), "variants": chosen(),
            "pins": os.environ.get(ENV, ""), "vector_width": vector_width.applied()}


def _threading_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:                         # no parallel kernel has run yet
        return None
