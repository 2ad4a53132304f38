"""CPU throughput of the paper's network: shallowcnn (numba, numpy) against PyTorch and Keras.

    python benchmarks/bench_train.py                      # batch 64, 144 x 144, all backends
    python benchmarks/bench_train.py --backends numba,torch --reps 9
    python benchmarks/bench_train.py --quick              # smoke test: small batch, few reps
    python benchmarks/bench_train.py --size 60            # the size of public MCC patch sets

Every framework builds the same network -- conv 6 x 9x9 valid, ReLU, conv 16 x 9x9,
ReLU, global max pool, dropout 0.2, dense 16 -> 1, sigmoid / BCE, Adam (lr 1e-3,
eps 1e-7) -- on the same float32 batch, with the same number of threads
(``--threads``, default ``os.cpu_count()``).  For each one it measures

* training:  patches/s of forward + loss + backward + Adam step;
* inference: patches/s of the forward pass (no dropout, no gradients);

as the median over ``--reps`` timed repetitions after ``--warmup`` untimed ones
(JIT compilation, graph tracing).  Each (framework, mode) runs in a fresh
subprocess, so its peak memory (``ru_maxrss``) is its own; we report the peak
and its growth over the process's state just before the first step (the model
and the batch already built, imports done).

FLOP counts used for GFLOP/s (per 144 x 144 patch):
* inference: the forward convolutions, 2 * (6*1*81*136^2 + 16*6*81*128^2) = 273 MFLOP;
* training: "dense-equivalent" 3 x forward = 818 MFLOP (forward, dX and dW of
  a framework's dense backward).  shallowcnn's sparse backward does far fewer
  operations, so its training GFLOP/s is the useful work a dense
  implementation would need for the same result, not arithmetic performed.
The NumPy float32 matmul rate measured in the same run is the practical peak.

It prints and saves its context: the CPU model, its vector instruction sets, the
CPU LLVM compiles for, the thread count, the kernel variant the autotuner chose
for each layer (``shallowcnn tune``; kernels/autotune.py) and the load average
before and after (other processes slow every number; compare ratios measured in
the same run).

Writes ``bench_train.json`` and ``bench_train.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ALL_BACKENDS = ("numba", "numpy", "torch", "tf")
LABELS = {"numba": "shallowcnn numba", "numpy": "shallowcnn numpy", "torch": "PyTorch CPU",
          "tf": "TensorFlow/Keras CPU"}


def forward_flops(size, K=9, c1=6, c2=16):
    h1 = size - K + 1
    h2 = h1 - K + 1
    return 2 * (c1 * 1 * K * K * h1 * h1 + c2 * c1 * K * K * h2 * h2)


# ---------------------------------------------------------------- workers
# Each runs in its own process and returns (step, batch) callables.

def _setup_shallowcnn(backend, mode, x, y, threads):
    if backend == "numba":
        import numba

        import shallowcnn.kernels.cpu  # noqa: F401  (first: it picks Numba's threading layer)
        numba.set_num_threads(threads)  # (this starts Numba's threads)
    from shallowcnn.model import ShallowCNN
    from shallowcnn.optim import Adam
    from shallowcnn.train import train_step

    model = ShallowCNN(backend=backend, seed=0)
    opt = Adam(model.params, lr=1e-3)

    def train():
        train_step(model, opt, x, y)        # forward, fused loss, backward, Adam

    def infer():
        model.forward(x, training=False)

    return train if mode == "train" else infer


def _setup_torch(mode, x, y, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 9), torch.nn.ReLU(),
        torch.nn.Conv2d(6, 16, 9), torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(),
        torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).reshape(-1, 1)

    def train():
        net.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()

    def infer():
        net.eval()
        with torch.inference_mode():
            net(xt)

    return train if mode == "train" else infer


def _setup_tf(mode, x, y, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras = tf.keras
    keras.utils.set_random_seed(0)
    size = x.shape[2]
    model = keras.Sequential([
        keras.Input((size, size, 1)),
        keras.layers.Conv2D(6, 9, activation="relu"),
        keras.layers.Conv2D(16, 9, activation="relu"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7),
                  loss="binary_crossentropy")
    xh = tf.constant(x.transpose(0, 2, 3, 1))        # Keras on CPU wants NHWC
    yh = tf.constant(y)

    def train():
        model.train_on_batch(xh, yh)

    def infer():
        model.predict_on_batch(xh)

    return train if mode == "train" else infer


def _worker(spec):
    import resource

    import numpy as np
    rng = np.random.default_rng(0)
    B, S = spec["batch"], spec["size"]
    x = rng.random((B, 1, S, S), dtype=np.float32)
    y = (np.arange(B) % 2).astype(np.float32)
    backend, mode, threads = spec["backend"], spec["mode"], spec["threads"]
    if backend in ("numba", "numpy"):
        fn = _setup_shallowcnn(backend, mode, x, y, threads)
    elif backend == "torch":
        fn = _setup_torch(mode, x, y, threads)
    else:
        fn = _setup_tf(mode, x, y, threads)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(spec["warmup"]):
        fn()
    times = []
    for _ in range(spec["reps"]):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"times": times, "rss_before_mb": rss0 / 1024, "rss_peak_mb": rss1 / 1024}
    if backend == "numba":
        from shallowcnn.kernels import autotune
        out["variants"] = autotune.chosen()      # which kernel variant each layer ran
    return out


def _kernel_worker(spec):
    """GFLOP/s of the numba convolution kernels alone at the benchmark's shapes."""
    import numba
    import numpy as np

    from shallowcnn.kernels import cpu      # before set_num_threads: cpu picks the threading layer
    numba.set_num_threads(spec["threads"])
    rng = np.random.default_rng(0)
    B, S = spec["batch"], spec["size"]
    x = rng.random((B, 1, S, S), dtype=np.float32)
    W1 = (rng.standard_normal((6, 1, 9, 9)) / 9).astype(np.float32)
    W2 = (rng.standard_normal((16, 6, 9, 9)) / 22).astype(np.float32)
    b1, b2 = np.zeros(6, np.float32), np.zeros(16, np.float32)
    h = np.maximum(cpu.conv2d_forward(x, W1, b1), 0)
    pooled, argmax = cpu.conv_relu_maxpool_forward(h, W2, b2)
    dp = rng.standard_normal(pooled.shape).astype(np.float32)
    dh = cpu.conv_relu_maxpool_backward(dp, h, W2, argmax, pooled)[0] * (h > 0)
    _, ctx = cpu.features_forward(x, W1, b1, W2, b2)
    h1, h2 = S - 8, S - 16
    f1, f2 = 2 * 6 * 81 * h1 * h1 * B, 2 * 16 * 6 * 81 * h2 * h2 * B
    cases = {
        "conv1 forward": (lambda: cpu.conv2d_forward(x, W1, b1), f1),
        "conv2 forward (dense output)": (lambda: cpu.conv2d_forward(h, W2, b2), f2),
        "conv2 fused forward (+ReLU+max)": (lambda: cpu.conv_relu_maxpool_forward(h, W2, b2), f2),
        "conv2 sparse backward (dx, dW, db)": (lambda: cpu.conv_relu_maxpool_backward(dp, h, W2, argmax, pooled), None),
        "conv1 backward, sparse dout, no dx": (lambda: cpu.conv2d_backward(dh, x, W1, need_dx=False), None),
        "feature stack forward (model path)": (lambda: cpu.features_forward(x, W1, b1, W2, b2), f1 + f2),
        "feature stack sparse backward (model)": (lambda: cpu.features_backward(dp, ctx), None),
        "conv2 dense backward (dx, dW, db)": (lambda: cpu.conv2d_backward(
            rng.standard_normal((B, 16, h2, h2)).astype(np.float32), h, W2), 2 * f2),
    }
    out = {}
    for name, (fn, flops) in cases.items():
        fn()
        ts = []
        for _ in range(spec["reps"]):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        med = statistics.median(ts)
        out[name] = {"ms": 1e3 * med, "gflops": flops / med / 1e9 if flops else None}
    from shallowcnn.kernels import autotune
    return {"kernels": out, "context": autotune.context()}


def _run_worker(spec, timeout=1800):
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker {spec['backend']}/{spec['mode']} failed:\n{r.stderr[-3000:]}")


def _available(backend):
    mod = {"torch": "torch", "tf": "tensorflow"}.get(backend)
    if mod is None:
        return True, ""
    code = f"import {mod}"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1]


def matmul_peak(n=2048, reps=7):
    """Best float32 GFLOP/s of an n x n matmul (NumPy's BLAS, all its threads)."""
    import numpy as np
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    best = min(_timeit(lambda: a @ a) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _loadavg():
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except (AttributeError, OSError):
        return None


def _timeit(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=144, help="patch side (default 144)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--numpy-reps", type=int, default=2, help="repetitions for the slow numpy backend")
    ap.add_argument("--backends", default=",".join(ALL_BACKENDS),
                    help="comma list of numba, numpy, torch, tf")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--quick", action="store_true", help="smoke test: batch 8, 64 x 64, 2 reps")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker:
        spec = json.loads(args._worker)
        res = _kernel_worker(spec) if spec["backend"] == "kernels" else _worker(spec)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    if args.quick:
        args.batch, args.size, args.reps, args.warmup, args.numpy_reps = 8, 64, 2, 1, 1
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ALL_BACKENDS:
            ap.error(f"unknown backend {b!r}")
    os.makedirs(args.out, exist_ok=True)

    fwd = forward_flops(args.size)
    flops = {"infer": fwd, "train": 3 * fwd}
    print(f"batch {args.batch}, {args.size} x {args.size}, {args.threads} threads, "
          f"median of {args.reps} reps after {args.warmup} warm-up")
    print(f"FLOPs per patch: inference {fwd / 1e6:.0f} M (forward convolutions); "
          f"training {3 * fwd / 1e6:.0f} M (dense-equivalent: 3 x forward)")
    from shallowcnn.kernels import autotune_cache
    machine = {"cpu": autotune_cache.cpu_model(), "llvm_target": autotune_cache.llvm_target(),
               "isa": autotune_cache.isa_flags(), "cpu_count": os.cpu_count()}
    print(f"CPU {machine['cpu']} ({machine['cpu_count']} logical CPUs), LLVM target "
          f"{machine['llvm_target']}; vector ISA: {' '.join(machine['isa']) or 'unknown'}")
    load0 = _loadavg()
    peak = matmul_peak()
    print(f"NumPy float32 matmul peak: {peak:.0f} GFLOP/s; load average {load0} "
          f"(compare runs only when both agree: other processes slow every number)\n")

    results = {"batch": args.batch, "size": args.size, "threads": args.threads,
               "reps": args.reps, "warmup": args.warmup, "matmul_peak_gflops": peak,
               "flops_per_patch": flops, "flop_note": "training = dense-equivalent 3 x forward",
               "frameworks": {}, "skipped": {}, "loadavg_before": load0, "machine": machine}
    for b in backends:
        ok, why = _available(b)
        if not ok:
            print(f"-- {LABELS[b]}: skipped (not importable: {why})")
            results["skipped"][b] = why
            continue
        results["frameworks"][b] = {}
        for mode in ("train", "infer"):
            reps = args.numpy_reps if b == "numpy" else args.reps
            warm = min(args.warmup, 1) if b == "numpy" else args.warmup
            spec = dict(backend=b, mode=mode, batch=args.batch, size=args.size,
                        threads=args.threads, reps=reps, warmup=warm)
            r = _run_worker(spec)
            med = statistics.median(r["times"])
            r.update(median_s=med, patches_per_s=args.batch / med,
                     gflops=args.batch * flops[mode] / med / 1e9)
            r["pct_of_matmul_peak"] = 100 * r["gflops"] / peak
            results["frameworks"][b][mode] = r
            print(f"{LABELS[b]:22s} {mode:5s} {r['patches_per_s']:8.1f} patches/s  "
                  f"{r['gflops']:6.1f} GFLOP/s ({r['pct_of_matmul_peak']:4.1f}% of peak)  "
                  f"peak RSS {r['rss_peak_mb']:7.0f} MB (+{r['rss_peak_mb'] - r['rss_before_mb']:.0f} MB in steps)")

    fw = results["frameworks"]
    if "numba" in fw:
        print("\nshallowcnn numba relative to peers (x times their patches/s):")
        for mode in ("train", "infer"):
            ours = fw["numba"][mode]["patches_per_s"]
            parts = [f"{LABELS[p]} {ours / fw[p][mode]['patches_per_s']:.2f}x"
                     for p in fw if p != "numba"]
            print(f"  {mode:5s}: " + (", ".join(parts) or "no peers"))
            results.setdefault("ratios", {})[mode] = {
                p: ours / fw[p][mode]["patches_per_s"] for p in fw if p != "numba"}
        for name, rec in fw["numba"]["train"].get("variants", {}).items():
            print(f"  kernel variant for {name}: {rec['variant']} ({rec['how']})")
        kw = _run_worker(dict(backend="kernels", mode="", batch=args.batch, size=args.size,
                              threads=args.threads, reps=args.reps, warmup=1))
        kr = kw["kernels"]
        results["numba_kernels"] = kr
        results["numba_context"] = kw["context"]
        print(f"\nnumba kernels at batch {args.batch} (median ms; GFLOP/s of useful work):")
        for name, v in kr.items():
            g = f"{v['gflops']:6.1f} GFLOP/s ({100 * v['gflops'] / peak:4.1f}% of peak)" if v["gflops"] else ""
            print(f"  {name:38s} {v['ms']:8.2f} ms  {g}")
        ctx = kw["context"]
        chosen = ", ".join(f"{k} -> {r['variant']}" for k, r in ctx["variants"].items())
        from shallowcnn.kernels.vector_width import describe
        pinned = ", pinned to a CPU each" if ctx.get("threads_pinned") else ""
        print(f"  ({ctx['numba_threads']} numba threads{pinned}, {ctx['threading_layer']} threading layer; "
              f"variants: {chosen}; vector width: {describe(ctx['vector_width'])})")

    results["loadavg_after"] = _loadavg()
    print(f"\nload average after: {results['loadavg_after']}")
    from shallowcnn.storage import atomic_write_text
    path = atomic_write_text(os.path.join(args.out, "bench_train.json"), json.dumps(results, indent=2))
    png = _plot(results, os.path.join(args.out, "bench_train.png"))
    print(f"\nwrote {path}" + (f" and {png}" if png else ""))
    return 0


def _plot(results, path):
    from shallowcnn.plots import save_figure, plt       # Agg backend, atomic PNG write

    fw = results["frameworks"]
    names = list(fw)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, mode in zip(axes, ("train", "infer")):
        vals = [fw[n][mode]["patches_per_s"] for n in names]
        bars = ax.bar([LABELS[n].replace(" ", "\n", 1) for n in names], vals,
                      color=["C0" if n == "numba" else "C7" if n == "numpy" else "C1" for n in names])
        ax.bar_label(bars, fmt="%.0f")
        ax.set_title(f"{'training step' if mode == 'train' else 'inference'}: patches/s")
        ax.set_ylabel("patches / s (higher is better)")
    fig.suptitle(f"batch {results['batch']}, {results['size']}x{results['size']}, "
                 f"{results['threads']} CPU threads")
    fig.tight_layout()
    return save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
