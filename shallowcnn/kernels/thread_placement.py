"""Where Numba's worker threads run: free (the OS places them) or pinned, one CPU each.

Why it matters.  A parallel kernel gives each thread a fixed share of the batch and returns
when the last share is done. Between calls Numba's ``workqueue`` threads sleep, and the next
call wakes them all at once; Linux then places each woken thread, and now and then it puts
two of them on the same CPU (the waker's, whose caches are warm) while another CPU sits idle.
The two shares then run one after the other until the scheduler's next balancing tick moves
one away -- on a 2-core AMD EPYC VM, 9% of the calls of a 2.6 ms parallel loop started with
both threads on one CPU and took twice as long (benchmarks/README.md, "Sixth round"). A
thread pinned to a CPU of its own is always woken there: thread w runs on the w-th CPU this
process may use (``os.sched_getaffinity``).

Pinning is not free of risk: two processes that each pin their threads to the same first
CPUs of a big machine would share those CPUs and leave the others idle. So it is a measured
choice, made with the threading layer (``shallowcnn tune``; :mod:`.threading_layer`), taken
only where it was clearly faster here, and only with the workqueue layer, whose threads
serve Numba alone (OpenMP's thread 0 is the Python thread itself). Who decides, first match
wins: ``SHALLOWCNN_PIN_THREADS`` (1 pins, 0 never), then ``shallowcnn tune``'s measurement,
then the default: free. Linux only (``sched_setaffinity``); and never when Numba has more
threads than the process has CPUs.

Pinning changes where threads run, never what they compute.
"""
from __future__ import annotations

import os
import sys

ENV = "SHALLOWCNN_PIN_THREADS"
applied: dict | None = None       # what apply() did in this process (None: not called yet)


def user_choice() -> bool | None:
    """``SHALLOWCNN_PIN_THREADS``: True (1), False (0) or None (unset). Any other value is an
    error that names the variable."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{ENV}={value!r}: use 1 (pin Numba's threads, one CPU each) or 0 (never pin)")
    return value == "1"


def cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def possible(layer: str, threads: int) -> str | None:
    """None when Numba's ``threads`` threads of ``layer`` can be pinned here, else why not."""
    if not sys.platform.startswith("linux"):
        return "pinning needs Linux's sched_setaffinity"
    if layer != "workqueue":
        return f"only the workqueue layer's threads are pinned (this process runs {layer})"
    if threads > len(cpus()):
        return f"{threads} Numba threads but {len(cpus())} CPUs for this process"
    return None


def masks(threads: int):
    """(threads, words) uint64: row w is the CPU set {cpus()[w]} as ``sched_setaffinity`` reads it."""
    import numpy as np
    allowed = cpus()
    words = max(allowed) // 64 + 1
    out = np.zeros((threads, words), dtype=np.uint64)
    for w in range(threads):
        cpu = allowed[w]
        out[w, cpu // 64] = np.uint64(1) << np.uint64(cpu % 64)
    return out


def pin(threads: int) -> list[int]:
    """Pin Numba's first ``threads`` threads, thread w to cpus()[w]; returns the CPU each task
    ran on afterwards, as the OS reports it (``sched_getcpu``). Raises OSError if the OS refused."""
    import numba
    import numpy as np

    from .affinity import pin_tasks, task_cpus
    before = numba.get_num_threads()
    numba.set_num_threads(threads)          # one task per thread: task w runs on thread w
    try:
        status = np.zeros(threads, dtype=np.int32)
        pin_tasks(masks(threads), status)
        if (status != 0).any():
            raise OSError(f"sched_setaffinity refused to pin Numba's threads (status {status.tolist()})")
        where = np.zeros(threads, dtype=np.int32)
        task_cpus(where)
    finally:
        numba.set_num_threads(before)
    return where.tolist()


def choose() -> dict:
    """``{"pinned": bool, "how": why}``: whether this process wants its threads pinned."""
    wanted = user_choice()
    if wanted is not None:
        return {"pinned": wanted, "how": f"set by {ENV}"}
    from . import autotune_cache
    saved = autotune_cache.read_threading_layer()
    if saved is None:
        return {"pinned": False, "how": "the default (not measured on this machine: `shallowcnn tune`)"}
    return {"pinned": bool(saved.get("pinned")), "how": "measured by `shallowcnn tune`"}


def apply() -> dict:
    """Pin Numba's threads if :func:`choose` says so and :func:`possible` allows (this starts
    the threads, so call it after the threading layer is set); returns the choice, with the
    CPUs the threads ran on when pinned."""
    global applied
    applied = chosen = choose()
    if chosen["pinned"]:
        import numba
        threads = numba.config.NUMBA_NUM_THREADS
        numba.set_num_threads(numba.get_num_threads())      # starts the threads: the layer is now known
        why_not = possible(numba.threading_layer(), threads)
        if not why_not:
            try:
                return (applied := dict(chosen, cpus=pin(threads)))
            except OSError as e:            # a container may forbid it: the threads then stay free
                why_not = str(e)
        applied = {"pinned": False, "how": f"{chosen['how']}, but not pinned: {why_not}"}
    return applied
