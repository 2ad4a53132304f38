"""Every variant of the numba kernels, interleaved in one process: the figures the autotuner chooses from.

    python benchmarks/bench_variants.py              # 7 rounds
    python benchmarks/bench_variants.py --rounds 15

Times, round after round (so that a change of load hits every variant alike), each variant
of: conv1 (the few-filter family: g3, g2, g4, wino) on batches of 64 patches of 144 x 144
and 60 x 60 and on one batch of 16 scan tiles (272 x 272); the scan's conv2 + ReLU + 16 x 16
block max (its family: f4r2, f4r1, f8r1, wino) on 16 tiles; the fused conv2 (f4r2, f4r1, f8r1, wino, wino2d) +
ReLU + global max pool at 144 x 144 and 60 x 60; and, for scale, the model's whole inference
forward (``ShallowCNN.forward``, the autotuner's variants) on the same two batches. Prints the
median wall-clock and process-CPU milliseconds of one call (CPU: all threads; on a loaded
machine read the CPU column, and `NUMBA_NUM_THREADS=1` gives the steadiest figures).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (median reported; default 7)")
    args = ap.parse_args(argv)
    from shallowcnn.kernels import autotune, cpu
    from shallowcnn.kernels.autotune_cache import cpu_model, llvm_target
    from shallowcnn.kernels.cpu_blockmax import conv_relu_blockmax

    rng = np.random.default_rng(0)
    W1 = (rng.standard_normal((6, 1, 9, 9)) / 9).astype(np.float32)
    b1 = np.zeros(6, np.float32)
    W2 = (rng.standard_normal((16, 6, 9, 9)) / 20).astype(np.float32)
    b2 = np.zeros(16, np.float32)
    cases = []
    for name, shape in (("conv1 64 x 144", (64, 1, 144, 144)), ("conv1 64 x 60", (64, 1, 60, 60)),
                        ("conv1 scan 16 x 272", (16, 1, 272, 272))):
        x = rng.random(shape, dtype=np.float32)
        for v in autotune.FAMILIES["small_f"]:
            cases.append((name, v, lambda x=x, v=v: cpu.conv2d_forward(x, W1, b1, relu=True, variant=v)))
    h = rng.random((16, 6, 264, 264), dtype=np.float32)
    for v in autotune.FAMILIES["blockmax"]:
        cases.append(("blockmax scan 16 x 264, g 16", v, lambda v=v: conv_relu_blockmax(h, W2, b2, 16, variant=v)))
    for size in (136, 52):                   # conv2's input in 144 x 144 and 60 x 60 patches
        h2 = rng.random((64, 6, size, size), dtype=np.float32)
        for v in autotune.FAMILIES["fused"]:
            cases.append((f"fused conv2 64 x {size}", v,
                          lambda h2=h2, v=v: cpu.conv_relu_maxpool_forward(h2, W2, b2, variant=v)))
    from shallowcnn.model import ShallowCNN
    model = ShallowCNN(backend="numba", seed=0)
    for size in (144, 60):
        x = rng.random((64, 1, size, size), dtype=np.float32)
        cases.append((f"model forward 64 x {size}", "auto", lambda x=x: model.forward(x)))
    for _, _, run in cases:                  # compile or load every variant first
        run()
    times = {}
    for _ in range(args.rounds):
        for name, v, run in cases:
            t, c = time.perf_counter(), time.process_time()
            run()
            times.setdefault((name, v), []).append((time.perf_counter() - t, time.process_time() - c))
    import numba
    print(f"{cpu_model()} (LLVM target {llvm_target()}), {numba.get_num_threads()} Numba threads, "
          f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}; median of {args.rounds} rounds")
    for (name, v), ts in times.items():
        ts = np.array(ts) * 1e3
        print(f"  {name:30s} {v:5s} wall {np.median(ts[:, 0]):8.1f} ms   CPU {np.median(ts[:, 1]):8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
