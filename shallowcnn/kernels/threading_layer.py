"""Which of Numba's threading layers runs the CPU kernels' threads, chosen by measurement on each machine.

Why a choice at all.  A parallel kernel (``prange``) hands each thread a fixed share of the
batch and returns when the last share is done, so one late thread delays the whole call.
Between calls the threads of Numba's ``workqueue`` layer block until the next call wakes
them, and on some virtual machines that wake-up is slow: on a 2-core AMD EPYC VM,
``ShallowCNN.forward`` of 64 patches of 60 x 60 took 12.5-13.4 ms (median) with two
workqueue threads, 8.1-8.4 ms with the ``omp`` layer (GNU OpenMP's threads spin a little
before they sleep) and 8.6-9.1 ms with workqueue while a niced busy loop kept both vCPUs
awake (benchmarks/README.md, "Fifth round"). On a busy machine it can go the other way: a
sleeping OpenMP worker waits for a time slice, and conv1 of a 60 x 60 batch (1.2 ms of work)
took 7-16 ms with omp against 1.3-2.3 ms with workqueue ("Measurements behind the kernels").
So it is measured, not guessed: ``shallowcnn tune`` times the network's forward pass with
each layer, each in a process of its own (:func:`shallowcnn.commands.tune.measure_threading_layer`),
and saves the result beside the kernel variants (:mod:`.autotune_cache`); :func:`decide`
picks omp, or workqueue with its threads pinned (:mod:`.thread_placement`), only where it wins
clearly and loses nowhere. The layer changes when threads run, never what they compute:
every kernel gives each patch to one thread, so results are the same bits with either.

Who decides, first match wins:

1. ``NUMBA_THREADING_LAYER`` (or ``NUMBA_THREADING_LAYER_PRIORITY``): the user's, never overridden;
2. the layer measured on this machine by ``shallowcnn tune``, if Numba can load it here;
3. ``workqueue`` (never measured here; it ships with every Numba).

Two things to know about omp, where it is chosen: GNU OpenMP is not fork-safe (a process
that forks after a parallel kernel ran must not run one in the child; ``multiprocessing``'s
"spawn" and ``subprocess`` are fine, and shallowcnn forks nowhere), and unlike workqueue it
may be called from several Python threads at once.

Numba reads the layer when it starts its threads (the first parallel call, or
``numba.set_num_threads``), so :mod:`shallowcnn.kernels.cpu` applies it at import.
"""
from __future__ import annotations

import importlib
import math
import os

LAYERS = ("workqueue", "omp")
DEFAULT = "workqueue"
# What `shallowcnn tune` times: each layer, and workqueue with its threads pinned to a CPU each
# (kernels/thread_placement.py). The default configuration is the first.
CONFIGS = ("workqueue", "workqueue pinned", "omp")
CLEAR_WIN = 0.05      # another configuration must run the pieces of work this much faster (geometric mean of
                      # the speed-ups, so that 60 x 60's milliseconds count as much as 144 x 144's), and
                      # take no piece this fraction longer
_USER_VARIABLES = ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")


def available(layer: str) -> bool:
    """True when Numba can load ``layer`` here (omp needs a GNU OpenMP runtime it was built
    with; workqueue always loads). Loading it starts no thread."""
    module = {"workqueue": "numba.np.ufunc.workqueue", "omp": "numba.np.ufunc.omppool"}[layer]
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def decide(ms: dict) -> dict:
    """``{"layer", "pinned"}``: of the configurations timed in ``ms`` (name of CONFIGS -> {piece:
    wall ms}), the one with the largest speed-up over the default (workqueue, threads free) among
    those whose speed-ups (default's ms / theirs, per piece) have a geometric mean of at least
    1 + CLEAR_WIN and none below 1 / (1 + CLEAR_WIN); the default when none does."""
    base = ms[CONFIGS[0]]

    def speedups(t):
        return [base[k] / t[k] for k in base]

    def clearly_faster(t):
        return geometric_mean(speedups(t)) >= 1 + CLEAR_WIN and min(speedups(t)) >= 1 / (1 + CLEAR_WIN)

    winners = [c for c in CONFIGS[1:] if c in ms and clearly_faster(ms[c])]
    best = max(winners, key=lambda c: geometric_mean(speedups(ms[c])), default=CONFIGS[0])
    return {"layer": best.split()[0], "pinned": best.endswith(" pinned")}


def geometric_mean(values) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def set_by_user() -> bool:
    """True when the environment names the layer (``NUMBA_THREADING_LAYER`` or its priority list)."""
    return any(os.environ.get(name) for name in _USER_VARIABLES)


def choose() -> dict:
    """The layer for this process: ``{"layer": name or None, "how": why}``; None means the
    user's environment decides (Numba reads it). Imports the file of choices, not the kernels."""
    if set_by_user():
        return {"layer": None, "how": "set by NUMBA_THREADING_LAYER"}
    from . import autotune_cache
    saved = autotune_cache.read_threading_layer()
    if saved is None:
        return {"layer": DEFAULT, "how": "the default (not measured on this machine: `shallowcnn tune`)"}
    if not available(saved["layer"]):
        return {"layer": DEFAULT, "how": f"the default ({saved['layer']}, measured here, does not load)"}
    return {"layer": saved["layer"], "how": "measured by `shallowcnn tune`"}


def apply() -> dict:
    """Set ``numba.config.THREADING_LAYER`` to :func:`choose`'s layer (before Numba starts its
    threads) and return the choice. Numba's config, not the environment: child processes
    decide for themselves."""
    import numba
    chosen = choose()
    if chosen["layer"] is not None:
        numba.config.THREADING_LAYER = chosen["layer"]
    return chosen
