"""``shallowcnn tune``: time the CPU kernel variants on this machine and remember the fastest.

The choosing and the cache are :mod:`shallowcnn.kernels.autotune`'s; this command runs
the network's real layers (and one scan tile) with every choice timed again.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

from ..constants import MIN_INPUT_SIDE
from ..kernels import autotune, get_backend
from ..kernels.autotune_cache import cache_path
from ..model import ShallowCNN
from ..scan import DEFAULT_STRIDE, DEFAULT_TILE
from .common import whole_number_in


def retune(sizes=(144, 60), dtype="float32", batch=4, scan=True):
    """Time every variant again for the network's layers at these patch sizes (and
    for one scan tile), save the choices and return them (signature -> record)."""
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


def add_command(subparsers):
    p = subparsers.add_parser(
        "tune", help="time the CPU kernel variants on this machine and remember the fastest",
        description="Times each variant of the Numba CPU kernels (more filters or rows per "
                    "block: see shallowcnn/kernels/tiles.py; Winograd for the fused conv2: "
                    "kernels/winograd.py) on the network's layers, keeps "
                    "the fastest per layer shape in a file beside Numba's cache, and prints "
                    "the table. Later runs use the saved choice at once. Run it again after "
                    "changing the CPU or the packages, or on a quiet machine.")
    p.add_argument("--size", type=whole_number_in(MIN_INPUT_SIDE, 512, "patch side"), action="append",
                   metavar="PIXELS",
                   help=f"patch side to tune for, {MIN_INPUT_SIDE}..512 (repeatable; default 144 and 60)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="data type of the kernels (default float32)")
    p.add_argument("--no-scan", action="store_true", help="skip the scanning kernel")
    p.add_argument("--show", action="store_true",
                   help="only print the saved choices for this machine (no timing)")
    p.set_defaults(func=run_command)


def run_command(args):
    if args.show:
        rows = autotune.saved_choices()
        print(f"{cache_path()}:" if rows else f"no saved choices ({cache_path()})")
    else:
        if os.environ.get(autotune.ENV):
            print(f"tune: ignoring {autotune.ENV}={os.environ[autotune.ENV]!r} while timing", file=sys.stderr)
        rows = retune(args.size or [144, 60], args.dtype, scan=not args.no_scan)
        print(f"saved to {cache_path()}")
    ident = autotune.identity()
    print(f"CPU {ident['cpu']} (LLVM target {ident['llvm_target']}), shallowcnn {ident['shallowcnn']}, "
          f"numba {ident['numba']}")
    for sig, rec in sorted(rows.items()):
        times = "  ".join(f"{k} {v:.2f}" for k, v in rec.get("cpu_ms", {}).items())
        print(f"  {sig:44s} -> {rec['variant']:5s}  (CPU ms, one thread: {times})")
    return 0
