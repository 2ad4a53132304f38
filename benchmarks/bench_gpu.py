"""GPU throughput: shallowcnn's cuda backend against PyTorch on the same GPU.

    python benchmarks/bench_gpu.py                 # batch 64, 144 x 144 patches
    python benchmarks/bench_gpu.py --no-tf32       # PyTorch convolutions in true float32
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_gpu.py --quick --allow-simulator
                                                   # smoke test without a GPU (tiny shapes)

For each framework, the same network (conv1 6 x 9x9, ReLU, conv2 16 x 9x9, ReLU,
global max pool, dropout 0.2, dense 16 -> 1, BCE with logits, Adam lr 1e-3
eps 1e-7), batches of float32 patches kept in host memory as a training loop
has them, and:

* training:  patches/s of forward + loss + backward + Adam step;
* inference: patches/s of the forward pass (no dropout, no gradients).

Each number is the median over ``--reps`` timed repetitions after
``--warmup`` untimed ones (JIT compilation, cuDNN autotuning), each ended with
a device synchronisation. Two extra rows show the convolution stack with the
batch already on the GPU (no host-to-device copy) for both frameworks.

PyTorch lets cuDNN use TF32 tensor cores for float32 convolutions by default
(lower precision, much faster); the report says which setting was used.
Without a GPU (or without PyTorch with CUDA) the script says so and skips.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def median_time(fn, sync, warmup, reps):
    """Median wall time of ``fn()`` in seconds, synchronised, after warm-up."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_batch(batch, size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, size, size), dtype=np.float32)
    y = (rng.random(batch) < 0.5).astype(np.float32)
    return x, y


# --------------------------------------------------------------- shallowcnn
def bench_shallowcnn(args, x, y, channels, kernel_size):
    from numba import cuda

    from shallowcnn.kernels import cuda as kc
    from shallowcnn.model import ShallowCNN
    from shallowcnn.optim import Adam
    from shallowcnn.train import train_step as one_step

    model = ShallowCNN(backend="cuda", seed=0, channels=channels, kernel_size=kernel_size)
    optimizer = Adam(model.params, lr=1e-3, eps=1e-7)

    def train_step():
        one_step(model, optimizer, x, y)    # forward, fused loss, backward, Adam

    def infer():
        model.forward(x, training=False)

    p = model.params
    x_dev = cuda.to_device(x)

    def features_on_device():   # the feature stack alone, batch already on the GPU
        pooled, ctx = kc.features_forward(x_dev, p["conv1.W"], p["conv1.b"], p["conv2.W"], p["conv2.b"])
        kc.features_backward(np.ones_like(pooled), ctx)

    sync = cuda.synchronize
    n = len(x)
    out = {
        "train": n / median_time(train_step, sync, args.warmup, args.reps),
        "infer": n / median_time(infer, sync, args.warmup, args.reps),
        "features fwd+bwd, data on GPU": n / median_time(features_on_device, sync, args.warmup, args.reps),
    }
    return out


def kernel_resources():
    """Registers, local memory (spills) and static shared memory of the
    compiled kernels, to check that the register blocking worked: local
    memory should be 0 bytes."""
    from shallowcnn.kernels import cuda as kc

    lines = []
    for name, keys in _USED_KEYS.items():
        factory = getattr(kc, name).__wrapped__
        for key in keys:
            kernel = factory(*key)
            try:
                regs = kernel.get_regs_per_thread()
                local = kernel.get_local_mem_per_thread()
                shared = kernel.get_shared_mem_per_block()
            except Exception as e:  # an older or newer numba-cuda
                lines.append(f"  {name}{key}: {e}")
                continue
            for sig in regs:
                lines.append(f"  {name}{key}: {regs[sig]} registers, {local[sig]} B local, "
                             f"{shared[sig]} B static shared per block")
    return lines


_USED_KEYS: dict = {}


def _record_keys():
    """Wrap the kernel factories so that the keys used get recorded."""
    from shallowcnn.kernels import cuda as kc

    for name in ("tiled_conv_kernel", "finish_maxpool_kernel", "sum_rows_kernel",
                 "sparse_grad_partials_kernel", "conv1_grad_partials_kernel"):
        factory = getattr(kc, name)

        def wrapped(*key, _f=factory, _n=name):
            keys = _USED_KEYS.setdefault(_n, [])
            if key not in keys:
                keys.append(key)
            return _f(*key)

        wrapped.__name__ = name
        wrapped.cache_info = factory.cache_info
        wrapped.__wrapped__ = factory
        setattr(kc, name, wrapped)


# ------------------------------------------------------------------ PyTorch
def bench_torch(args, x, y, channels, kernel_size, device="cuda"):
    """PyTorch's numbers; ``device="cpu"`` only to smoke-test this code."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.backends.cudnn.benchmark = True          # let cuDNN pick its fastest algorithms
    torch.backends.cudnn.allow_tf32 = not args.no_tf32
    torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
    dev = torch.device(device)
    on_gpu = dev.type == "cuda"
    c1, c2 = channels

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, c1, kernel_size)
            self.conv2 = nn.Conv2d(c1, c2, kernel_size)
            self.drop = nn.Dropout(0.2)
            self.dense = nn.Linear(c2, 1)

        def forward(self, h):
            h = F.relu(self.conv1(h))
            h = F.relu(self.conv2(h))
            h = torch.amax(h, dim=(2, 3))
            return self.dense(self.drop(h))[:, 0]

    torch.manual_seed(0)
    net = Net().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    x_host, y_host = torch.from_numpy(x), torch.from_numpy(y)

    def train_step(xb=None):
        net.train()
        xb = x_host.to(dev) if xb is None else xb
        yb = y_host.to(dev)
        opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(net(xb), yb)
        loss.backward()
        opt.step()

    def infer():
        net.eval()
        with torch.no_grad():
            net(x_host.to(dev)).cpu()   # the probabilities come back to the host

    x_dev = x_host.to(dev)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    n = len(x)
    return {
        "train": n / median_time(train_step, sync, args.warmup, args.reps),
        "infer": n / median_time(infer, sync, args.warmup, args.reps),
        "train, data on GPU": n / median_time(lambda: train_step(x_dev), sync, args.warmup, args.reps),
        "device": torch.cuda.get_device_name() if on_gpu else "CPU",
        "tf32": torch.backends.cudnn.allow_tf32,
        "version": torch.__version__,
    }


def torch_cuda_problem():
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (pip install torch)"
    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA GPU (a CPU-only build, or no driver)"
    return None


# --------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=144, help="patch side in pixels")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--no-tf32", action="store_true", help="forbid TF32 in PyTorch's convolutions")
    ap.add_argument("--quick", action="store_true",
                    help="tiny network and batch, 2 repetitions (a smoke test)")
    ap.add_argument("--allow-simulator", action="store_true",
                    help="run under NUMBA_ENABLE_CUDASIM=1 (correctness of the script only; "
                         "the numbers mean nothing)")
    args = ap.parse_args(argv)

    from shallowcnn.kernels import cuda as kc

    channels, kernel_size = (6, 16), 9
    if args.quick:
        args.batch, args.size, args.warmup, args.reps = 2, 12, 1, 2
        channels, kernel_size = (2, 3), 3

    reason = kc._availability()
    simulated = kc.simulator_enabled()
    if reason is not None:
        print(f"skipped: the cuda backend cannot run here: {reason}\n"
              "  needs an NVIDIA GPU, its driver and numba-cuda (pip install \"shallowcnn[cuda]\").")
        return 0
    if simulated and not args.allow_simulator:
        print("skipped: NUMBA_ENABLE_CUDASIM=1 is set, so the kernels would run in the simulator; "
              "timings would mean nothing (add --allow-simulator for a smoke test).")
        return 0
    if simulated:
        # small thread blocks: the simulator runs one Python thread per CUDA thread
        kc.set_launch_config(conv_block_x=4, conv_block_y=4, conv_pixels=2, conv_filters=4,
                             threads=64, reduce_x=16, reduce_y=2)

    _record_keys()
    x, y = make_batch(args.batch, args.size)
    print(f"batch {args.batch} x 1 x {args.size} x {args.size} float32, channels {channels}, "
          f"kernel {kernel_size}x{kernel_size}; median of {args.reps} after {args.warmup} warm-up"
          + ("  [CUDA SIMULATOR: numbers are meaningless]" if simulated else ""))

    ours = bench_shallowcnn(args, x, y, channels, kernel_size)
    print(f"shallowcnn cuda:  train {ours['train']:10.1f} patches/s   infer {ours['infer']:10.1f} patches/s")
    print(f"                  feature stack fwd+bwd, data on GPU: "
          f"{ours['features fwd+bwd, data on GPU']:10.1f} patches/s")
    resources = kernel_resources()
    if not simulated:
        print("kernel resources:", *resources, sep="\n")

    torch_device = "cuda"
    problem = torch_cuda_problem()
    if simulated:
        # exercise the PyTorch code on the CPU, if PyTorch is installed at all
        torch_device = "cpu"
        problem = problem if problem and "not installed" in problem else None
    if problem:
        print(f"PyTorch CUDA: skipped ({problem})")
        return 0
    theirs = bench_torch(args, x, y, channels, kernel_size, torch_device)
    print(f"PyTorch {theirs['version']} on {theirs['device']} (cuDNN TF32 {'on' if theirs['tf32'] else 'off'}):")
    print(f"                  train {theirs['train']:10.1f} patches/s   infer {theirs['infer']:10.1f} patches/s")
    print(f"                  train, data on GPU: {theirs['train, data on GPU']:10.1f} patches/s")
    print(f"ratio shallowcnn / PyTorch:  train {ours['train'] / theirs['train']:.2f}   "
          f"infer {ours['infer'] / theirs['infer']:.2f}   (>= 1 means as fast or faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
