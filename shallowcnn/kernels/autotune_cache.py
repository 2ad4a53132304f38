"""The autotuner's memory: the chosen kernel variants, saved per machine in a JSON file.

A choice is valid for one CPU model, one LLVM target and one version of shallowcnn and
Numba (:func:`identity`); the file is named after them and lies beside Numba's cache of
the compiled kernels (:func:`cache_path`). :mod:`shallowcnn.kernels.autotune` reads it
before timing anything and adds each new choice to it. It also holds the vector width
measured for this machine (:mod:`shallowcnn.kernels.vector_width`), which is read before
Numba defines its first kernel, and the threading layer (:mod:`shallowcnn.kernels.threading_layer`),
read before Numba starts its threads: so nothing here may import the kernels.

    {"identity": {...},
     "choices": {signature: {"variant": "f4r2", "cpu_ms": {variant: ms, ...}}, ...},
     "vector_width": {"bits": 512, "cpu_ms": {"256": {work: ms, ...}, "512": {...}}},   (optional)
     "threading_layer": {"layer": "workqueue", "pinned": true,                                      (optional)
                         "wall_ms": {"workqueue": {work: ms, ...}, "workqueue pinned": {...}, "omp": {...}}}}

numba and llvmlite are imported inside the functions that need them: `shallowcnn tune`,
and so every start of the command line, imports this module.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from .. import __version__
from ..storage import atomic_write_text
from .variants import FUSED_VARIANTS, SMALL_F_VARIANTS, STACK_VARIANTS, TILE_VARIANTS

_disk: dict | None = None     # the cache file's {"choices", "vector_width", "threading_layer"}, read once
_MEASURED = ("vector_width", "threading_layer")     # the optional records beside the choices
_warned = False               # the warning about an unusable file was printed


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
    return {"cpu": cpu_model(), "llvm_target": llvm_target(), "shallowcnn": __version__,
            "numba": numba.__version__}


def cache_path() -> Path:
    """The JSON file of choices, beside Numba's cache of the kernels (:func:`numba_cache_folder`)."""
    ident = identity()
    tag = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    return Path(numba_cache_folder()) / f"shallowcnn-autotune-{tag}.json"


def numba_cache_folder() -> str:
    """Where Numba keeps the compiled kernels of tiles.py: ``NUMBA_CACHE_DIR`` (a sub-folder of
    it) when set, else ``shallowcnn/kernels/__pycache__``, or a per-user folder when that is
    read-only.

    Found as Numba finds it (its cache locators, tried in its order), without importing
    tiles.py: defining a kernel would fix the vector width before it is read from this file.
    """
    tiles_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiles.py")
    from numba.core import caching
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)   # (numba < 0.61)
    for locator in getattr(impl, "_locator_classes", ()):
        # a locator takes a function only for its line number (it names files, not the folder)
        found = locator.from_function(numba_cache_folder, tiles_py)
        if found is not None:
            return found.get_cache_path()
    return os.path.join(os.path.dirname(tiles_py), "__pycache__")


# ---------------------------------------------------------------- the file

def read_choices() -> dict:
    """signature -> record of this machine's cache file (read once per process; {} if none).

    A file of any other shape (choices not an object, a record that is not one, no or an
    unknown "variant", times that are not numbers; a vector width other than 256 or 512, a
    threading layer other than workqueue or omp), or a
    folder in its place, counts as no cache, with a warning naming it; the next timing (or
    ``shallowcnn tune``) writes it anew."""
    return _read()["choices"]


def read_vector_width() -> dict | None:
    """The vector width measured on this machine, ``{"bits": 256 | 512, "cpu_ms": ...}``, or None."""
    return _read()["vector_width"]


def read_threading_layer() -> dict | None:
    """The threading layer measured on this machine, ``{"layer": "workqueue" | "omp", "pinned": bool
    (absent in older files: False), "wall_ms": ...}``, or None."""
    return _read()["threading_layer"]


def _read() -> dict:
    global _disk
    if _disk is None:
        _disk = {"choices": {}, "vector_width": None, "threading_layer": None}
        problem = _file_problem(cache_path())
        if problem:
            _warn_once(f"ignoring the kernel choices in {cache_path()}: {problem}; `shallowcnn tune` writes them anew")
    return _disk


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:                            # once per process (tune reads the file again per save)
        print(f"shallowcnn: warning: {message}", file=sys.stderr, flush=True)
    _warned = True


def _file_problem(path: Path) -> str | None:
    """Fill ``_disk`` from ``path``; say what is wrong with the file, or None (also for no
    file, or one of another CPU or version: both mean "time again", quietly)."""
    global _disk
    if path.is_dir():
        return "a folder is in the cache file's place (remove it)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None                            # never tuned here: time when first needed
    except (OSError, ValueError, RecursionError) as e:
        return f"unreadable ({e})"
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if data.get("identity") != identity():
        return None                            # another CPU or version's file: time again
    choices = data.get("choices", {})
    if not isinstance(choices, dict):
        return f'"choices" is a JSON {type(choices).__name__}, not an object'
    known = {*TILE_VARIANTS, *FUSED_VARIANTS, *SMALL_F_VARIANTS, *STACK_VARIANTS}
    for sig, rec in choices.items():
        times = rec.get("cpu_ms") if isinstance(rec, dict) else None
        if (not isinstance(rec, dict) or rec.get("variant") not in known or not isinstance(times, dict)
                or rec["variant"] not in times
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times.values())):
            return f"the record of {sig} is not {{\"variant\": one of {', '.join(sorted(known))}, \"cpu_ms\": {{...}}}}"
    width = data.get("vector_width")
    if width is not None and (not isinstance(width, dict) or width.get("bits") not in (256, 512)
                              or isinstance(width.get("bits"), bool)):
        return '"vector_width" is not {"bits": 256 or 512, ...}'
    layer = data.get("threading_layer")
    if layer is not None and (not isinstance(layer, dict) or layer.get("layer") not in ("workqueue", "omp")
                              or layer.get("pinned", False) not in (True, False)):
        return '"threading_layer" is not {"layer": "workqueue" or "omp", "pinned": true or false, ...}'
    _disk = {"choices": dict(choices), "vector_width": width, "threading_layer": layer}
    return None


def save_choice(signature, rec):
    """Add one choice to the cache file (read again first: another process may have added some)."""
    data = _read_again()
    data["choices"][signature] = {k: v for k, v in rec.items() if k != "how"}
    _save(data)


def save_vector_width(rec: dict) -> None:
    """Save the vector width measured on this machine (``{"bits": 256 | 512, "cpu_ms": ...}``)."""
    data = _read_again()
    data["vector_width"] = dict(rec)
    _save(data)


def save_threading_layer(rec: dict) -> None:
    """Save the threading layer measured on this machine (``{"layer", "pinned", "wall_ms"}``)."""
    data = _read_again()
    data["threading_layer"] = dict(rec)
    _save(data)


def _read_again() -> dict:
    """A copy of the file's data as it is now (another process may have added choices)."""
    global _disk
    _disk = None
    now = _read()
    return {"choices": dict(now["choices"]), **{key: now[key] for key in _MEASURED}}


def _save(data: dict) -> None:
    """``data`` ({"choices", "vector_width", "threading_layer"}) as this process's and the file's,
    written atomically."""
    global _disk
    _disk = data
    out = {"identity": identity(), "choices": data["choices"]}
    out.update({key: data[key] for key in _MEASURED if data[key] is not None})
    try:
        atomic_write_text(cache_path(), json.dumps(out, indent=1, sort_keys=True))
    except OSError as e:                       # a read-only install: choose again next time
        print(f"shallowcnn: could not save the kernel choice to {cache_path()}: {e}",
              file=sys.stderr)


def forget() -> None:
    """Read the file again next time (as a new process would)."""
    global _disk
    _disk = None
