"""How wide the CPU kernels' vectors are: 256 or 512 bits, chosen by measurement on each machine.

Why a choice at all.  On a CPU with AVX-512, LLVM may still compile for 256-bit vectors: its
tuning for many Intel cores (rocketlake, icelake-server, sapphirerapids, ...) sets the feature
``prefer-256-bit`` (512-bit instructions lower the clock of some of them, and most code gains
little). The tiles (:mod:`shallowcnn.kernels.tiles`) were written for 16 float32 lanes; whether
512-bit vectors make them faster depends on the CPU (AMD's Zen 4 runs a 512-bit instruction
as two 256-bit halves), so it is measured, not guessed: ``shallowcnn tune`` times the same
work at both widths, each in a process of its own (:func:`shallowcnn.commands.tune.measure_vector_width`),
and saves the result beside the kernel variants (:mod:`.autotune_cache`); :func:`decide` picks
512 only where it wins clearly and loses nowhere. A machine never measured keeps LLVM's choice.

When the setting takes effect (read in Numba 0.68's source: core/codegen.py, registry.py,
dispatcher.py, config.py, caching.py).  Numba reads ``numba.config.CPU_FEATURES`` once per
process, when it creates its CPU code generator (``JITCPUCodegen._init`` builds LLVM's target
machine with that feature string; None means the host's features). That happens lazily, when
the first dispatcher is made -- the first ``@njit`` *decoration* anywhere in the process
(``Dispatcher.__init__`` asks for the CPU target context), not ``import numba`` and not the
first compilation. So :func:`apply` sets ``numba.config.CPU_FEATURES`` at run time (numba may
already be imported), and ``tiles.py``, which every kernel module imports before it defines a
kernel, calls it first. If something defined a Numba function before, it is too late: we say
so and change nothing. (Numba's compiler re-reads the ``NUMBA_*`` environment when one of those
variables changed since the last read, which would undo our setting; once the code generator
exists, that no longer matters.) We set Numba's config, not the environment, so that child
processes decide for themselves.

Numba's on-disk cache: the key of every entry includes the feature string (``Cache._index_key``
-> ``codegen.magic_tuple()``: target triple, CPU name, features), so the 256- and 512-bit
compilations of a kernel lie side by side in one cache folder and index without clashing;
switching the width costs one compilation of each kernel, once.

Who decides, first match wins:

1. ``NUMBA_CPU_FEATURES`` (or ``numba.config.CPU_FEATURES`` set by the caller): the user's, never overridden;
2. ``SHALLOWCNN_VECTOR_WIDTH`` = ``256``, ``512`` or ``llvm`` (LLVM's own choice, any saved measurement ignored);
3. the width measured on this machine by ``shallowcnn tune`` (``auto``, the default);
4. LLVM's own choice (never measured here, or no AVX-512: 256 bits at most anyway).
"""
from __future__ import annotations

import os
import sys

ENV = "SHALLOWCNN_VECTOR_WIDTH"
VALUES = ("auto", "llvm", "256", "512")
WIDTHS = (256, 512)
CLEAR_WIN = 0.05      # 512 bits must save this fraction of the total time, and lose no more on any piece

_state: dict | None = None    # what apply() decided for this process


def requested() -> str:
    """The value of ``SHALLOWCNN_VECTOR_WIDTH`` (``auto`` when unset); a ValueError naming the
    variable, its value and the allowed values for anything else. Imports nothing heavy."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in VALUES:
        raise ValueError(f"{ENV}={os.environ[ENV]!r} is not a vector width: use 256 or 512 (bits), "
                         "llvm (LLVM's own choice) or auto (the default: the width `shallowcnn tune` "
                         "measured on this machine, else LLVM's choice)")
    return value


def features(bits: int) -> str:
    """Numba's feature string for vectors of ``bits``: the host's features (as Numba would use
    them) with LLVM's ``prefer-256-bit`` tuning switched off (512) or on (256)."""
    from numba.core.codegen import get_host_cpu_features
    return f"{get_host_cpu_features()},{'-' if bits == 512 else '+'}prefer-256-bit"


def has_avx512() -> bool:
    """True when the CPU (as Numba sees it: ``NUMBA_ENABLE_AVX=0`` hides AVX) has AVX-512F."""
    from numba.core.codegen import get_host_cpu_features
    return "+avx512f" in get_host_cpu_features().split(",")


def decide(ms_256: dict, ms_512: dict) -> int:
    """512 when the 512-bit build takes at least CLEAR_WIN less CPU time over all the pieces of
    work and no piece more than CLEAR_WIN longer; else 256. ``ms_*``: piece -> CPU ms."""
    total_256, total_512 = sum(ms_256.values()), sum(ms_512.values())
    loses_somewhere = any(ms_512[k] > (1 + CLEAR_WIN) * ms_256[k] for k in ms_256)
    return 512 if total_512 <= (1 - CLEAR_WIN) * total_256 and not loses_somewhere else 256


def numba_has_a_function() -> bool:
    """True once Numba has made its CPU code generator (after the first ``@njit`` decoration):
    from then on, the feature string is fixed for this process."""
    from numba.core import registry
    return "_toplevel_target_context" in vars(registry.cpu_target)


def apply() -> dict:
    """Set Numba's CPU features for this process's vector width; call before Numba defines a
    function (tiles.py does). Returns ``{"bits": 256 | 512 | None, "how": why}``, None meaning
    LLVM's (or the user's) choice. The second call returns the first's answer.

    A ValueError for a bad ``SHALLOWCNN_VECTOR_WIDTH``, or 512 on a CPU without AVX-512."""
    global _state
    if _state is None:
        _state = _decide_and_set()
    return dict(_state)


def applied() -> dict | None:
    """What :func:`apply` decided in this process (None before the kernels were imported)."""
    return None if _state is None else dict(_state)


def describe(state: dict) -> str:
    """``512 bits (measured by `shallowcnn tune`)``, or why LLVM's (or the user's) choice holds."""
    return f"{state['bits']} bits ({state['how']})" if state["bits"] else state["how"]


def _decide_and_set() -> dict:
    import numba

    from . import autotune_cache      # here, not at the top: `shallowcnn`'s start-up imports requested()
    asked = requested()
    if numba.config.CPU_FEATURES is not None:
        if asked in ("256", "512"):
            _warn(f"{ENV}={asked} ignored: NUMBA_CPU_FEATURES is set, and it decides")
        return {"bits": None, "how": "set by NUMBA_CPU_FEATURES"}
    if asked == "llvm":
        return {"bits": None, "how": f"LLVM's choice ({ENV}=llvm)"}
    if asked == "auto":
        saved = autotune_cache.read_vector_width()
        if saved is None:
            return {"bits": None, "how": "LLVM's choice (not measured on this machine: `shallowcnn tune`)"}
        bits, how = saved["bits"], "measured by `shallowcnn tune`"
    else:
        bits, how = int(asked), f"{ENV}={asked}"
    if not has_avx512():
        if asked == "512":
            raise ValueError(f"{ENV}=512: this CPU has no AVX-512 (as LLVM sees it), so there are no "
                             "512-bit vectors to use; use 256, llvm or auto")
        return {"bits": None, "how": "LLVM's choice (no AVX-512: 256 bits at most)"}
    if numba_has_a_function():
        _warn(f"the {bits}-bit vectors ({how}) cannot take effect: a Numba function was defined "
              "before shallowcnn's kernels were imported (import them first, or set NUMBA_CPU_FEATURES)")
        return {"bits": None, "how": "LLVM's choice (set too late)"}
    numba.config.CPU_FEATURES = features(bits)
    return {"bits": bits, "how": how}


def _warn(message: str) -> None:
    print(f"shallowcnn: warning: {message}", file=sys.stderr, flush=True)
