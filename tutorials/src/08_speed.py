# %% [markdown]
# # 8. Making it fast
#
# The NumPy reference of notebooks 2-3 is written to be read: a training step on a batch of 64
# paper-sized patches takes many seconds. This notebook finds where the time goes, then
# follows the three ideas of the Numba kernels in `shallowcnn/kernels/cpu.py` -- **blocking**,
# **fusion**, **sparsity** -- checks every fast path against the reference, looks at the CUDA
# kernels, and ends with a benchmark against PyTorch and Keras.
#
# Timings depend on the machine: the CPU that produced the stored outputs is recorded in the
# notebook's metadata (`metadata.shallowcnn.provenance`), and the prose quotes no fixed numbers.
# The checks compare numbers, never times. In quick mode (the tests) the sizes are tiny, and the
# PyTorch / Keras comparison runs only when `SHALLOWCNN_TUTORIAL_PEERS=1` is set and they are
# installed.
#
# | | |
# |---|---|
# | **You will learn** | to profile a training step; the three ideas of the fast kernels (blocking, fusion, sparsity) and how each is checked against the reference; how to read a benchmark |
# | **You need** | notebooks [2](02_convolution_forward.ipynb) and [3](03_backward.ipynb) (the arithmetic being sped up); a little about caches and SIMD helps |
# | **Time** | about 45 minutes of reading and running; the exercises are take-home |
# | **Previous / next** | [7. Training](07_training.ipynb) / [9. Scanning a whole mammogram](09_scanning.ipynb) |

# %%
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import matplotlib.pyplot as plt

warnings.filterwarnings("ignore", message="IProgress not found")
from shallowcnn.kernels import cpu, cuda_usable, get_backend, reference
from shallowcnn.layers import Conv2D, GlobalMaxPool2D, ReLU
from shallowcnn.losses import BinaryCrossEntropyWithLogits
from shallowcnn.model import ShallowCNN
from shallowcnn.optim import Adam

QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"           # the tests set it: tiny sizes
RUN_PEERS = os.environ.get("SHALLOWCNN_TUTORIAL_PEERS") == "1"      # PyTorch / Keras, if installed
plt.rcParams.update({"figure.dpi": 80})
rng = np.random.default_rng(0)
N, S = (4, 64) if QUICK else (16, 144)          # batch and patch size for the measurements

def best_of(f, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)

# %% [markdown]
# ## 8.1 Profiling the reference
#
# Time each layer of one training step of the textbook stack (`fused=False`, numpy backend),
# forward and backward. Notebook 2 predicted that conv2 carries 93% of the forward arithmetic, and
# its dense backward costs about twice its forward.

# %%
x = rng.random((N, 1, S, S), dtype=np.float32)
y = (rng.random(N) < 0.5).astype(np.float32)
model = ShallowCNN(backend="numpy", fused=False, seed=0)
layers = [("conv1", model.conv1), ("relu1", model.relu1), ("conv2", model.conv2), ("relu2", model.relu2),
          ("pool", model.pool), ("dropout", model.dropout), ("dense", model.dense)]
times = {}
h = x
for name, layer in layers:
    t0 = time.perf_counter(); h = layer.forward(h, training=True); times[f"{name} fwd"] = time.perf_counter() - t0
loss = BinaryCrossEntropyWithLogits()
loss.forward(h[:, 0], y)
d = loss.backward()[:, None]
for name, layer in reversed(layers):
    t0 = time.perf_counter(); d = layer.backward(d); times[f"{name} bwd"] = time.perf_counter() - t0
total = sum(times.values())
for k, v in sorted(times.items(), key=lambda kv: -kv[1])[:6]:
    print(f"{k:<12} {v * 1e3:8.1f} ms  {v / total:6.1%}")
print(f"total {total:.2f} s for {N} patches of {S} x {S}: {N / total:.1f} patches/s")

# %% check
conv2_share = (times["conv2 fwd"] + times["conv2 bwd"]) / total
assert conv2_share > 0.5                          # conv2 dominates, as the FLOP count says

# %% [markdown]
# One bar looks wrong: conv1's backward costs many times its forward, although both do the same
# $81 \cdot 6 \cdot 136^2$ multiply-adds ($2 \cdot 81 \cdot 6 \cdot 136^2$ FLOP) per patch (conv1's $dx$ is not computed: nothing
# needs the gradient of the patch). The arithmetic is not the cause; the route NumPy takes is.
# The reference calls `einsum(..., optimize=True)` so that conv2's big contractions go to the
# matrix-multiply library (BLAS). For conv1's weight gradient, `einsum("nfhw,nchw->fc")` with
# $F = 6$ filters and $C = 1$ channel, that route means copying both operands into matrices and
# multiplying a $6 \times N\!\cdot\!136^2$ matrix by an $N\!\cdot\!136^2 \times 1$ one -- a shape that
# matrix libraries handle badly, and whose threads suffer most when the machine is busy -- 81
# times. NumPy's own einsum loop (no `optimize`) does the same sum without copies, and faster.
# Measured on one kernel offset:

# %%
g1 = rng.random((N, 6, S - 8, S - 8), dtype=np.float32)
window = x[:, :, 3:3 + S - 8, 5:5 + S - 8]                # one kernel offset, (p, q) = (3, 5)
t_fwd = best_of(lambda: np.einsum("fc,nchw->nfhw", model.conv1.params["W"][:, :, 3, 5], window, optimize=True))
t_blas = best_of(lambda: np.einsum("nfhw,nchw->fc", g1, window, optimize=True))
t_loop = best_of(lambda: np.einsum("nfhw,nchw->fc", g1, window))
print(f"one offset of conv1: forward {t_fwd * 1e3:.2f} ms; dW via BLAS (optimize=True) {t_blas * 1e3:.2f} ms, "
      f"dW by einsum's own loop {t_loop * 1e3:.2f} ms")

# %% check
assert np.allclose(np.einsum("nfhw,nchw->fc", g1, window, optimize=True), np.einsum("nfhw,nchw->fc", g1, window),
                   rtol=1e-3)                             # the same numbers by both routes

# %% [markdown]
# The reference is written to be read, not tuned; the Numba kernels below compute conv1's $dW$
# directly, and only at the few rows the sparse gradient reaches.

# %%
fig, ax = plt.subplots(figsize=(7, 3))
names = list(times)
ax.barh(names, [times[k] * 1e3 for k in names])
ax.invert_yaxis()
ax.set(xlabel="ms", title=f"reference training step, batch {N}, {S} x {S}")
plt.show()

# %% [markdown]
# ## 8.2 A first Numba kernel
#
# Numba compiles a Python function of loops over NumPy arrays to machine code. The seven loops of
# notebook 2, with the output column $j$ innermost so that consecutive iterations touch
# consecutive memory (which lets the compiler use SIMD vectors), and `prange` over the batch:

# %%
import numba
from numba import njit, prange

@njit(parallel=True, fastmath={"contract"}, cache=True)
def conv_loops_numba(x, W, b):
    N, C, H, Wd = x.shape
    F, _, K, _ = W.shape
    Ho, Wo = H - K + 1, Wd - K + 1
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    for n in prange(N):
        for f in range(F):
            out[n, f] = b[f]
            for c in range(C):
                for p in range(K):
                    for q in range(K):
                        w = W[f, c, p, q]
                        for i in range(Ho):
                            for j in range(Wo):
                                out[n, f, i, j] += w * x[n, c, i + p, j + q]
    return out

h1 = rng.random((N, 6, S - 8, S - 8), dtype=np.float32)
W2 = (rng.standard_normal((16, 6, 9, 9)) * 0.05).astype(np.float32)
b2 = np.zeros(16, np.float32)
conv_loops_numba(h1[:1], W2, b2)                       # compile once, outside the timing
flop = 2 * N * 16 * 6 * 81 * (S - 16) ** 2
t_ref = best_of(lambda: reference.conv2d_forward(h1, W2, b2), 2)
t_loops = best_of(lambda: conv_loops_numba(h1, W2, b2))
cpu.conv2d_forward(h1[:1], W2, b2)
t_cpu = best_of(lambda: cpu.conv2d_forward(h1, W2, b2))
for name, t in (("reference (NumPy)", t_ref), ("Numba, plain loops", t_loops), ("Numba, blocked (cpu.py)", t_cpu)):
    print(f"{name:<25} {t * 1e3:8.1f} ms  {flop / t / 1e9:6.1f} GFLOP/s")

# %% check
ref_out = reference.conv2d_forward(h1, W2, b2)
assert np.allclose(conv_loops_numba(h1, W2, b2), ref_out, rtol=1e-4, atol=1e-4)
assert np.allclose(cpu.conv2d_forward(h1, W2, b2), ref_out, rtol=1e-4, atol=1e-4)

# %% [markdown]
# ### Blocking
#
# The plain loop loads `x[n, c, i+p, j+q]` and the output `out[n, f, i, j]` once per multiply-add:
# it is limited by memory traffic, not by arithmetic. `cpu.py` rearranges the same sum so that
# every value loaded feeds several multiply-adds. These are the ideas (the exact block sizes
# live in `kernels/tiles.py`, and `kernels/autotune.py` picks among a few of them by timing
# them on the machine it runs on -- see `shallowcnn tune`):
#
# * **filter blocking**: one pass over an input row serves several filters at once, so each
#   loaded input value is used several times;
# * **keeping weights in registers**: the taps of those filters along a row are loaded once per
#   row, not once per output;
# * **tiling**: a block of output stays in the L1 cache while every input row $(c, p)$ that
#   contributes to it streams past, instead of going to memory once per tap;
# * **enough independent sums**: a pass over 4 filters x 2 output rows keeps 8 accumulators per
#   column vector in flight, so the FMA units never wait for the previous multiply-add of the
#   same sum (a 4-cycle latency on two FMA ports needs about 8).
#
# The cell above shows what each step buys on this machine.
#
# ## 8.3 Fusion: conv2 + ReLU + global max pool
#
# The network needs, per (patch, filter), only the maximum of conv2's output and its position.
# The fused kernel keeps a running maximum while it computes the tiles and never writes the
# $(N, 16, 128, 128)$ output -- at batch 64, $64 \times 16 \times 128^2 \times 4$ bytes $= 67$ MB that would
# otherwise go to memory and back.

# %%
cpu.conv_relu_maxpool_forward(h1[:1], W2, b2)
pooled_ref, arg_ref = reference.conv_relu_maxpool_forward(h1, W2, b2)
pooled_cpu, arg_cpu = cpu.conv_relu_maxpool_forward(h1, W2, b2)
t_unfused = best_of(lambda: np.maximum(cpu.conv2d_forward(h1, W2, b2).reshape(N, 16, -1).max(axis=2), 0))
cpu.conv_relu_maxpool_forward(h1[:1], W2, b2, variant="f4r2")           # compile the direct variant
t_fused = best_of(lambda: cpu.conv_relu_maxpool_forward(h1, W2, b2, variant="f4r2"))
print(f"conv2 then max: {t_unfused * 1e3:.1f} ms, fused (direct f4r2 kernel): {t_fused * 1e3:.1f} ms; "
      f"a batch of 64 would write {64 * 16 * 128 * 128 * 4:,} bytes without fusion")

# %% [markdown]
# Both timings use a direct kernel, so their difference is what fusion alone buys (the
# package's default fused kernel may be the Winograd variant below, which also halves the
# multiply-adds: do not credit fusion with that). If the fused kernel is no faster here, or
# even slower, that is not a measurement error. Fusion
# saves *memory traffic* -- the conv2 output written and read back -- not arithmetic: both do the
# same multiply-adds, and the fused one also compares every output with a running maximum and
# records its position. At this batch the unfused output is only
# $N \cdot 16 \cdot 128^2 \cdot 4$ bytes and mostly stays in cache, so the saving is small and the extra
# comparisons can cost as much. Fusion pays at the paper's batch of 64 (67 MB that would go to main
# memory) and during training, where it is what makes the sparse backward possible: the backward
# needs only the maximum and its position, which the fused forward keeps.

# %% check
assert 64 * 16 * 128 * 128 * 4 == 67_108_864
assert np.allclose(pooled_cpu, pooled_ref, rtol=1e-5, atol=1e-5)
assert np.mean(arg_cpu == arg_ref) > 0.95          # float32 near-ties may pick another position
same = arg_cpu == arg_ref
assert np.all(np.abs(pooled_cpu - pooled_ref)[~same] < 1e-4)

# %% [markdown]
# ### Less arithmetic: Winograd
#
# Once a kernel runs close to the machine's multiply-add rate, only doing fewer multiply-adds
# makes it faster. Winograd's minimal filtering algorithm F(4, 3) (Lavin & Gray, 2016) gets the
# 4 outputs of a 3-tap filter from 6 inputs with **6** multiplications instead of 12: transform
# the inputs ($B^T d$), transform the taps once ($G w$), multiply element by element, transform
# back ($A^T$). `kernels/winograd.py` applies it down the columns of conv2, with the 9 kernel rows
# as 3 groups of 3, and runs the transformed rows through the same tile passes as the direct
# kernel: half the multiply-adds. The price is rounding -- the transforms hold 4, 5, 8 and 1/24,
# so the float32 sums differ from the direct ones by about 1e-6 -- which is why it is a variant
# (`wino`) that the autotuner picks where it is faster, not the default.

# %%
from shallowcnn.kernels import winograd

d, w = rng.standard_normal(6), rng.standard_normal(3)
direct = np.array([w @ d[i:i + 3] for i in range(4)])              # 4 x 3 = 12 multiplications
fast = winograd.AT @ ((winograd.G @ w) * (winograd.BT @ d))           # 6 (the transforms only add,
print("direct:", direct.round(6), "\nF(4,3):", fast.round(6))       #  or multiply by constants)
cpu.conv_relu_maxpool_forward(h1[:1], W2, b2, variant="wino")          # compile
pooled_w, arg_w = cpu.conv_relu_maxpool_forward(h1, W2, b2, variant="wino")
t_direct = best_of(lambda: cpu.conv_relu_maxpool_forward(h1, W2, b2, variant="f4r2"))
t_wino = best_of(lambda: cpu.conv_relu_maxpool_forward(h1, W2, b2, variant="wino"))
print(f"fused conv2, direct: {t_direct * 1e3:.1f} ms, Winograd: {t_wino * 1e3:.1f} ms")

# %% check
assert np.allclose(fast, direct, rtol=1e-12, atol=1e-12)
assert np.allclose(pooled_w, pooled_ref, rtol=1e-4, atol=1e-4)

# %% [markdown]
# ## 8.4 Sparsity: the backward pass
#
# Notebook 3 showed that the max pool leaves one non-zero gradient per (patch, filter), so
# $dW_2$, $db_2$ and $dh_1$ cost $O(N \cdot 16 \cdot 486)$ instead of $O(N \cdot 16 \cdot 128^2 \cdot 486)$. `cpu.py`
# implements that sparse backward; conv1's backward then skips the rows of its output gradient
# that are zero. Compare with the reference's dense backward, same inputs:

# %%
g = rng.standard_normal((N, 16)).astype(np.float32)
dense_grads = reference.conv_relu_maxpool_backward(g, h1, W2, arg_ref, pooled_ref)
cpu.conv_relu_maxpool_backward(g[:1], h1[:1], W2, arg_ref[:1], pooled_ref[:1])
t_dense = best_of(lambda: reference.conv_relu_maxpool_backward(g, h1, W2, arg_ref, pooled_ref), 1)
t_sparse = best_of(lambda: cpu.conv_relu_maxpool_backward(g, h1, W2, arg_ref, pooled_ref))
sparse_grads = cpu.conv_relu_maxpool_backward(g, h1, W2, arg_ref, pooled_ref)
print(f"dense backward {t_dense * 1e3:.1f} ms, sparse backward {t_sparse * 1e3:.2f} ms ({t_dense / t_sparse:.0f}x)")

# %% check
for a, b in zip(sparse_grads, dense_grads):
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5)

# %% [markdown]
# ## 8.5 The whole network, both backends
#
# `ShallowCNN(backend="numba")` uses these kernels (and the fused layer) everywhere. With the same
# seed it must give the same logits and the same gradients as the numpy reference, to float32
# rounding.

# %%
def step_grads(backend):
    m = ShallowCNN(backend=backend, seed=1, p_drop=0.0)
    bce = BinaryCrossEntropyWithLogits()
    logits = m.forward(x, training=True)
    bce.forward(logits, y)
    m.backward(bce.backward())
    return logits, {k: v.copy() for k, v in m.grads.items()}

logits_np, grads_np = step_grads("numpy")
logits_nb, grads_nb = step_grads("numba")
print({k: float(np.abs(grads_np[k] - grads_nb[k]).max() / (np.abs(grads_np[k]).max() + 1e-12)) for k in grads_np})

# %% check
assert np.allclose(logits_nb, logits_np, rtol=1e-4, atol=1e-5)
assert all(np.allclose(grads_nb[k], grads_np[k], rtol=1e-3, atol=1e-3 * np.abs(grads_np[k]).max()) for k in grads_np)

# %% [markdown]
# ## 8.6 The CUDA kernels
#
# `shallowcnn/kernels/cuda.py` has the same functions written with `numba.cuda`: a tiled
# convolution in which a block of threads copies an input tile and the weights of one channel
# into shared memory and every thread keeps $4 \times 16$ partial sums in registers; the fused max
# pool reduces (value, index) pairs within a block; the sparse backward gives one thread per
# (patch, weight) or per input pixel, so no two threads write the same number (no atomics).
# During training the feature stack stays on the GPU (`features_forward` / `features_backward`),
# and only the 16 pooled features per patch and the weight gradients come back.
#
# Without a GPU, Numba's CUDA **simulator** runs the same kernels on the CPU (slowly: tiny shapes
# only). It must be switched on before Numba is imported, so we ask a fresh Python for it:

# %%
sim_code = """
import numpy as np
from shallowcnn.kernels import get_backend, reference
cu = get_backend("cuda")
rng = np.random.default_rng(0)
x = rng.random((2, 2, 14, 14)).astype(np.float32)
W = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
b = rng.standard_normal(3).astype(np.float32) * 0.1
p, a = cu.conv_relu_maxpool_forward(x, W, b)
pr, ar = reference.conv_relu_maxpool_forward(x, W, b)
g = rng.standard_normal((2, 3)).astype(np.float32)
grads = cu.conv_relu_maxpool_backward(g, x, W, a, p)
ref = reference.conv_relu_maxpool_backward(g, x, W, ar, pr)
print(float(np.abs(p - pr).max()), bool((a == ar).all()), max(float(np.abs(u - v).max()) for u, v in zip(grads, ref)))
"""
env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
out = subprocess.run([sys.executable, "-c", sim_code], env=env, capture_output=True, text=True, timeout=300)
print(out.stdout or out.stderr[-2000:])
sim_pool_err, sim_same_argmax, sim_grad_err = out.stdout.split()

# %% check
assert float(sim_pool_err) < 1e-5 and sim_same_argmax == "True" and float(sim_grad_err) < 1e-4

# %% [markdown]
# On a machine with a GPU the real thing runs (and is checked) here:

# %%
HAS_GPU = cuda_usable()
if HAS_GPU:
    cu = get_backend("cuda")
    pooled_gpu, arg_gpu = cu.conv_relu_maxpool_forward(h1, W2, b2)
    print("GPU fused forward, max difference", float(np.abs(pooled_gpu - pooled_ref).max()))
else:
    print("no usable GPU here: the cuda backend would raise BackendUnavailable")

# %% check
if HAS_GPU:
    assert np.allclose(pooled_gpu, pooled_ref, rtol=1e-4, atol=1e-4)

# %% [markdown]
# ## 8.7 Benchmark
#
# Patches per second for a training step (forward, loss, backward, Adam) and for inference, on
# the same float32 batch, for every backend available here. The peers -- the same network in
# PyTorch and in Keras -- run only with `SHALLOWCNN_TUTORIAL_PEERS=1` and when installed.
# `benchmarks/bench_train.py` is the careful version (separate processes, memory, more repeats).

# %%
xb = rng.random((N, 1, S, S), dtype=np.float32)
yb = (rng.random(N) < 0.5).astype(np.float32)

def shallowcnn_fns(backend):
    m = ShallowCNN(backend=backend, seed=0)
    opt, bce = Adam(m.params), BinaryCrossEntropyWithLogits()

    def train():
        bce.forward(m.forward(xb, training=True), yb)
        m.backward(bce.backward())
        opt.step(m.grads)
    return train, lambda: m.forward(xb)

candidates = {"shallowcnn numpy": lambda: shallowcnn_fns("numpy"),
              "shallowcnn numba": lambda: shallowcnn_fns("numba")}
if HAS_GPU:
    candidates["shallowcnn cuda"] = lambda: shallowcnn_fns("cuda")

# %%
def torch_fns():
    import torch
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 9), torch.nn.ReLU(), torch.nn.Conv2d(6, 16, 9), torch.nn.ReLU(),
                              torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Dropout(0.2),
                              torch.nn.Linear(16, 1))
    opt, bce = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7), torch.nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)[:, None]

    def train():
        opt.zero_grad()
        bce(net.train()(xt), yt).backward()
        opt.step()

    def infer():
        with torch.inference_mode():
            net.eval()(xt)
    return train, infer

def keras_fns():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    net = keras.Sequential([keras.Input((S, S, 1)), keras.layers.Conv2D(6, 9, activation="relu"),
                            keras.layers.Conv2D(16, 9, activation="relu"), keras.layers.GlobalMaxPooling2D(),
                            keras.layers.Dropout(0.2), keras.layers.Dense(1, activation="sigmoid")])
    net.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-7), loss="binary_crossentropy")
    xh = np.ascontiguousarray(xb.transpose(0, 2, 3, 1))      # Keras on CPU wants NHWC
    return (lambda: net.train_on_batch(xh, yb)), (lambda: net.predict_on_batch(xh))

import importlib.util
peers = {"PyTorch": ("torch", torch_fns), "Keras": ("keras", keras_fns)}
for name, (module, fns) in peers.items():
    if RUN_PEERS and importlib.util.find_spec(module) is not None:
        candidates[name] = fns
print("benchmarking:", ", ".join(candidates))

# %%
results = {}
for name, make in candidates.items():
    train, infer = make()
    train(); infer()                                     # warm-up: JIT compilation, graph tracing
    reps = 1 if "numpy" in name else 3
    results[name] = (N / best_of(train, reps), N / best_of(infer, reps))
    print(f"{name:<18} train {results[name][0]:8.1f} patches/s   infer {results[name][1]:8.1f} patches/s")

# %% check
assert {"shallowcnn numpy", "shallowcnn numba"} <= set(results)
assert all(np.isfinite(v).all() and min(v) > 0 for v in results.values())

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.2))
names = list(results)
pos = np.arange(len(names))
ax.barh(pos - 0.2, [results[k][0] for k in names], 0.4, label="training step")
ax.barh(pos + 0.2, [results[k][1] for k in names], 0.4, label="inference")
ax.set_yticks(pos, names)
ax.invert_yaxis()
ax.set(xscale="log", xlabel="patches / s (log scale)", title=f"batch {N}, {S} x {S}, {os.cpu_count()} CPU cores")
ax.legend()
plt.show()

# %% [markdown]
# Where the sparse backward pays: a framework's training step costs about three forward passes
# (forward, and the dense $dx$ and $dW$ of every convolution). shallowcnn's conv2 backward
# nearly vanishes, because the max pool's gradient is almost all zeros, but its training step
# is not free either: the forward of a training step also records where each maximum is, and
# conv1's weight gradient, dropout, Adam and the per-batch overheads remain. On an idle
# two-core machine it costs about two forward passes (2.3 measured); the ratio printed below is
# this run's, and on a busy machine it is mostly noise.

# %%
for name, (train_rate, infer_rate) in results.items():
    print(f"{name:<18} a training step costs {infer_rate / train_rate:.1f} forward passes")

# %% [markdown]
# These numbers are smaller than the README's speed table, and should be: this cell times a
# batch of 16 (the README: 64, in separate processes, with more repeats, on an otherwise idle
# machine), and a notebook kernel shares the CPU with whatever else runs. Per-batch overheads
# (Python, thread start-up in `prange`) weigh four times as much on a batch of 16. Use
# `benchmarks/bench_train.py` for numbers to quote.
#
# ## Takeaways
#
# * Profile first: conv2 dominates, as the FLOP count says, and the reference's backward
#   pays for memory copies more than for arithmetic.
# * Blocking makes each loaded value feed several multiply-adds; fusion avoids writing a map that
#   is only needed for its maximum; sparsity skips the gradient's zeros; Winograd does half the
#   multiply-adds, for a little rounding.
# * Every fast path is checked against the reference, to float32 rounding; the CUDA kernels are
#   checked in the simulator where there is no GPU.
# * Benchmarks depend on the batch, the machine and its load: compare like with like.
#
# ## Exercises (take-home: they need benchmark runs)
#
# 1. Run `python benchmarks/bench_train.py` and compare with the numbers above. Which backend
#    wins at inference, and why can shallowcnn's training beat a framework that infers faster?
# 2. Time `cpu.conv_relu_maxpool_forward(h1, W2, b2, variant=v)` for each `v` in
#    `shallowcnn.kernels.variants.FUSED_VARIANTS` (or run `shallowcnn tune --show`). Which wins on
#    your machine? Why is there no 8-filter x 2-row variant on a CPU with 32 vector registers?
#    Why does `wino` save less than half the time, though it does half the multiply-adds?
# 3. In `conv_loops_numba`, move the loop over `f` inside the loop over `(c, p, q)`. Predict
#    the effect on speed from the memory traffic, then measure.
# 4. The fused forward never stores conv2's output. What has the *backward* pass of the fused
#    layer to recompute, and why is that cheap?
# 5. With `NUMBA_ENABLE_CUDASIM=1`, run `tests/test_kernels_cuda.py` and read one kernel of
#    `cuda.py` side by side with its twin in `cpu.py`.
#
# Next: [9. Scanning a whole mammogram](09_scanning.ipynb).
