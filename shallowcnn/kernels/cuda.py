"""GPU kernels written with ``numba.cuda`` (the ``cuda`` backend): the host side.

The functions of the backend contract (:mod:`shallowcnn.kernels`; host NumPy
arrays in, host NumPy arrays out; the transfers happen inside). Its
:func:`features_forward` and :func:`features_backward` keep conv1's activations
on the GPU during a training step and bring back only (N, 16) numbers and the
gradients. The kernels themselves (device code) are in
:mod:`shallowcnn.kernels.cuda_kernels`; this module chooses their launch shapes.

Convolution is the valid, stride-1 cross-correlation of deep-learning libraries::

    z[n, f, i, j] = b[f] + sum_{c, p, q} W[f, c, p, q] * x[n, c, i + p, j + q]

How the work is split over threads
==================================

Tiled convolution forward (:func:`tiled_conv_kernel`, used by conv1, by
:func:`conv2d_forward` and, fused, by conv2)
    A thread block of ``BX x BY`` threads computes an output tile of
    ``BY`` rows by ``BX * R`` columns of one patch ``n``, for a group of up to
    ``FB`` filters (``blockIdx.z`` = patch x filter group). Thread (tx, ty)
    owns output row ``i0 + ty`` and the ``R`` columns ``j0 + tx + r * BX``
    (interleaved, so neighbouring threads read neighbouring shared-memory
    words: no bank conflicts), and keeps its ``FB * R`` partial sums in
    registers. Channel by channel, the block copies the input tile it needs
    (``(BY + K - 1) x (BX * R + K - 1)`` values) and the ``FB x K x K``
    weights of that channel into shared memory, then every thread runs over
    the ``K x K`` offsets: each input value read from shared memory feeds
    ``FB`` multiply-adds and each weight (read by all threads at once, a
    broadcast) feeds ``R``. Defaults: 8 x 16 threads, 4 pixels, 16 filters:
    64 accumulators per thread, a 32 x 16 output tile.

    The *epilogue* differs: plain convolution writes ``z``; conv1 writes
    ``relu(z)``; the fused conv2 never writes its (N, 16, 128, 128) output.
    Instead each thread finds, per filter, the largest of its own pixels, the
    block reduces the ``(value, index)`` pairs in shared memory, and one
    partial maximum per (patch, filter, block) goes to global memory. A second
    small kernel (:func:`finish_maxpool_kernel`, one thread per (patch,
    filter)) reduces those partials.

Ties: the reference keeps the *first* maximum in row-major order. Comparing
pairs with "larger value wins, equal values -> smaller flat index wins" is an
associative, commutative choice, so any reduction tree gives that same answer.

Sparse backward of the fused conv2 + ReLU + global max pool
    The gradient reaches the pre-activation ``z`` at one position per (patch,
    filter), ``(i*, j*) = argmax``, and only if the ReLU was open::

        g[n, f]       = dpooled[n, f] * (pooled[n, f] > 0)
        dW[f, c, p, q] = sum_n g[n, f] x[n, c, i* + p, j* + q]
        db[f]          = sum_n g[n, f]
        dx[n, c, y, x] = sum_f g[n, f] W[f, c, y - i*, x - j*]   (inside the window)

    ``dW``/``db``: one thread per (patch, weight) writes a per-patch partial;
    ``dx``: one thread per input pixel gathers over the filters (no atomics).

conv1's weight gradient, straight from the sparse conv2 gradient
    With ``a1 = relu(z1)`` the conv1 output and ``m = (a1 > 0)`` its mask, the
    gradient of z1 is ``dz1 = m * sum_f2 (g[n, f2] W2[f2] placed at window
    f2)``. Because the mask multiplies pointwise, the sum over f2 can be
    taken outside, and every window contributes on its own::

        dW1[f1, c, p, q] = sum_{n, f2} g[n, f2] sum_{u, v} W2[f2, f1, u, v]
                              m[n, f1, i* + u, j* + v] x[n, c, i* + u + p, j* + v + q]
        db1[f1]          = sum_{n, f2} g[n, f2] sum_{u, v} W2[f2, f1, u, v] m[n, f1, i* + u, j* + v]

    so conv1's gradient costs O(N x 16 x 81 x 486) instead of a dense pass
    over the 136 x 136 map, and conv1's activation gradient is never stored.
    One thread block per (patch, f2) window, one thread per conv1 weight.

Deterministic sums
    Every gradient that sums over patches is first written as per-patch (or
    per-window) partials and then summed by :func:`sum_rows_kernel` in a fixed
    order (no ``cuda.atomic.add``), so two runs give bit-identical gradients.

Intermediate buffers that do not outlive a call (partial maxima, partial
gradients) are kept from call to call instead of being allocated each time;
the functions are therefore not meant to be called from several Python threads
at once.

Register blocking relies on the compiler unrolling the short constant-length
loops over ``FB`` and ``R`` so that the local accumulator arrays live in
registers; ``benchmarks/bench_gpu.py`` prints the registers and local memory
per thread of each kernel so this can be checked on a real GPU.

Every kernel also runs, slowly, in Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported), which is how the
tests run on machines without a GPU.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from . import BackendUnavailable, check_shapes
from .cuda_kernels import (MAXPOOL, NONE, RELU, blockmax_kernel, conv1_grad_partials_kernel,
                           dense_dx_kernel, dense_grad_partials_kernel, finish_maxpool_kernel,
                           sparse_dx_kernel, sparse_grad_partials_kernel, sum_rows_kernel,
                           tiled_conv_kernel)

try:  # numba-cuda is an optional extra: pip install "shallowcnn[cuda]"
    import numba
    from numba import cuda
    _IMPORT_ERROR = None
except Exception as e:  # pragma: no cover - depends on the installation
    numba = cuda = None
    _IMPORT_ERROR = e

_HOW_TO = (
    "To use the GPU backend: install numba-cuda (pip install \"shallowcnn[cuda]\"), "
    "and have an NVIDIA GPU with its driver (nvidia-smi must work). "
    "Without a GPU, Numba's CUDA simulator runs the kernels (very slowly) if "
    "NUMBA_ENABLE_CUDASIM=1 is set in the environment before Python starts. "
    "Or choose backend='numba' (CPU) or 'auto'."
)

# ---------------------------------------------------------------------------
# Availability
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _availability() -> str | None:
    """None when kernels can run, otherwise the reason why not."""
    if cuda is None:
        return f"numba.cuda cannot be imported ({_IMPORT_ERROR})."
    try:
        if cuda.is_available():
            return None
        return "numba.cuda sees no usable GPU."
    except Exception as e:  # pragma: no cover - driver problems
        return f"the CUDA driver failed: {e}."


def check_available() -> None:
    """Raise :class:`BackendUnavailable`, saying how to fix it, without a GPU."""
    reason = _availability()
    if reason is not None:
        raise BackendUnavailable(f"backend 'cuda' is unavailable: {reason} {_HOW_TO}")


def simulator_enabled() -> bool:
    """True when the kernels run in Numba's CUDA simulator (Python threads)."""
    return cuda is not None and bool(getattr(numba.config, "ENABLE_CUDASIM", 0))


# ---------------------------------------------------------------------------
# Launch configuration
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchConfig:
    """Thread-block shapes. The defaults suit a modern GPU; the tests shrink
    them so that the simulator (one Python thread per CUDA thread) stays fast
    and so that outputs span several blocks and several filter groups."""

    conv_block_x: int = 8     # BX: threads along an output row
    conv_block_y: int = 16    # BY: threads down the columns (= output rows per tile)
    conv_pixels: int = 4      # R: output pixels per thread, along the row
    conv_filters: int = 16    # FB: filters per thread (register accumulators FB * R)
    threads: int = 128        # block size of the one-dimensional kernels
    reduce_x: int = 32        # sum_rows_kernel block: columns ...
    reduce_y: int = 8         # ... times row lanes (a power of two)


_config = LaunchConfig()

# Static + dynamic shared memory a block may use without opting in to more.
_SHARED_LIMIT = 48 * 1024
_MAX_GRID_Z = 65535


def set_launch_config(config: LaunchConfig | None = None, **changes) -> LaunchConfig:
    """Replace the launch configuration (``set_launch_config(conv_pixels=2)``);
    returns the previous one so a caller can restore it."""
    global _config
    previous = _config
    new = config if config is not None else replace(_config, **changes)
    if new.reduce_y & (new.reduce_y - 1):
        raise ValueError("reduce_y must be a power of two")
    _config = new
    return previous


# ---------------------------------------------------------------------------
# Host-side helpers
# ---------------------------------------------------------------------------


def _is_device_array(a) -> bool:
    return hasattr(a, "copy_to_host") and hasattr(a, "shape")


def _float_dtype(*arrays) -> np.dtype:
    """float32 or float64, as the reference's ``np.result_type`` would give."""
    dt = np.result_type(*[a.dtype for a in arrays])
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)


def _to_device(a, dtype):
    """Device copy of a host array (contiguous, ``dtype``); a numba device
    array of the right dtype passes through untouched."""
    if _is_device_array(a):
        if a.dtype != dtype:
            raise TypeError(f"device array has dtype {a.dtype}, expected {dtype}")
        return a
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


_scratch: dict = {}


def _scratch_array(tag: str, shape, dtype):
    """A device buffer reused from call to call (saves a cudaMalloc per use).

    Only for intermediates that are consumed before the public function
    returns, never for what ``ctx`` keeps: every launch goes to the default
    stream, so a later reuse waits for the kernels that read it. One buffer per
    tag; a new shape or dtype replaces it. (Not safe for concurrent calls from
    several Python threads.)
    """
    shape = tuple(int(s) for s in shape)
    buf = _scratch.get(tag)
    if buf is None or buf.shape != shape or buf.dtype != np.dtype(dtype):
        buf = _scratch[tag] = cuda.device_array(shape, dtype)
    return buf


def _blocks(total: int, per_block: int) -> int:
    return (total + per_block - 1) // per_block


def _tiled_conv_shared_bytes(FB, K, itemsize, maxpool) -> int:
    """Dynamic shared memory of one tiled-convolution block: the input tile and
    FB x K x K weights, plus, fused with the max pool, the reduction's FB x NT
    values and int32 indices."""
    cfg = _config
    NT = cfg.conv_block_x * cfg.conv_block_y
    tile = (cfg.conv_block_y + K - 1) * (cfg.conv_block_x * cfg.conv_pixels + K - 1)
    need = (tile + FB * K * K) * itemsize
    if maxpool:
        need += FB * NT * (itemsize + 4)
    return need


def _filters_per_thread(F, K, itemsize, maxpool) -> int:
    """FB: at most the configured value, at most F, and small enough that the
    block's shared memory (input tile + FB weights [+ reduction]) fits."""
    FB = max(1, min(_config.conv_filters, F))
    while True:
        need = _tiled_conv_shared_bytes(FB, K, itemsize, maxpool)
        if need <= _SHARED_LIMIT or FB == 1:
            break
        FB = max(1, FB // 2)
    if need > _SHARED_LIMIT:
        raise ValueError(f"a {K}x{K} kernel needs more shared memory than one block has; "
                         "use smaller conv_block_x/conv_block_y/conv_pixels")
    return FB


def _tiled_conv(x_d, W_d, b_d, epilogue, out_d=None):
    """Launch the tiled convolution. Returns ``out_d`` (N, F, Ho, Wo) for the
    NONE/RELU epilogues, or device (pooled, argmax) (N, F) for MAXPOOL."""
    cfg = _config
    N, C, H, Wd = x_d.shape
    F, _, K, _ = W_d.shape
    Ho, Wo = H - K + 1, Wd - K + 1
    dtype = np.dtype(x_d.dtype)
    maxpool = epilogue == MAXPOOL
    FB = _filters_per_thread(F, K, dtype.itemsize, maxpool)
    BX, BY, R = cfg.conv_block_x, cfg.conv_block_y, cfg.conv_pixels
    kernel = tiled_conv_kernel(dtype.str, FB, BX, BY, R, epilogue)
    gx, gy = _blocks(Wo, BX * R), _blocks(Ho, BY)
    n_groups = _blocks(F, FB)
    shared = _tiled_conv_shared_bytes(FB, K, dtype.itemsize, maxpool)

    if maxpool:
        part_v = _scratch_array("part_v", (N, F, gx * gy), dtype)
        part_i = _scratch_array("part_i", (N, F, gx * gy), np.int32)
        out_d = _scratch_array("no_out", (1, 1, 1, 1), dtype)   # unused
    else:
        if out_d is None:
            out_d = cuda.device_array((N, F, Ho, Wo), dtype)
        part_v = _scratch_array("no_part_v", (1, 1, 1), dtype)  # unused
        part_i = _scratch_array("no_part_i", (1, 1, 1), np.int32)

    per_launch = max(1, _MAX_GRID_Z // n_groups)                # grid z limit
    for n0 in range(0, N, per_launch):
        n_here = min(per_launch, N - n0)
        kernel[(gx, gy, n_here * n_groups), (BX, BY, 1), 0, shared](
            x_d, W_d, b_d, out_d, part_v, part_i, n0)

    if not maxpool:
        return out_d
    pooled_d = cuda.device_array((N, F), dtype)
    argmax_d = cuda.device_array((N, F), np.int64)
    finish_maxpool_kernel(dtype.str)[_blocks(N * F, cfg.threads), cfg.threads](
        part_v, part_i, pooled_d, argmax_d)
    return pooled_d, argmax_d


def _sum_rows(parts_d, tag):
    """Device (rows, E) -> device (E,) (a scratch buffer named ``tag``),
    summed over rows in a fixed order."""
    cfg = _config
    E = parts_d.shape[1]
    out = _scratch_array(tag, (E,), parts_d.dtype)
    kernel = sum_rows_kernel(np.dtype(parts_d.dtype).str, cfg.reduce_x, cfg.reduce_y)
    shared = cfg.reduce_x * cfg.reduce_y * np.dtype(parts_d.dtype).itemsize
    kernel[_blocks(E, cfg.reduce_x), (cfg.reduce_x, cfg.reduce_y, 1), 0, shared](parts_d, out)
    return out


def _sparse_dW_db(g_d, argmax_d, x_d, Wshape):
    """Device dW (F, C, K, K) and db (F,) of the fused layer, as host arrays."""
    cfg = _config
    F, C, K, _ = Wshape
    N = x_d.shape[0]
    E = F * C * K * K
    parts = _scratch_array("sparse_parts", (N, E + F), x_d.dtype)
    sparse_grad_partials_kernel(np.dtype(x_d.dtype).str)[
        (N, _blocks(E + F, cfg.threads)), cfg.threads](g_d, argmax_d, x_d, K, parts)
    total = _sum_rows(parts, "sparse_sum").copy_to_host()
    return total[:E].reshape(Wshape), total[E:]


def _sparse_dx(g_d, argmax_d, W_d, xshape, dtype):
    cfg = _config
    dx_d = cuda.device_array(xshape, dtype)
    total = int(np.prod(xshape))
    sparse_dx_kernel(np.dtype(dtype).str)[_blocks(total, cfg.threads), cfg.threads](
        g_d, argmax_d, W_d, dx_d)
    return dx_d


def _relu_gate(dpooled, pooled, dtype):
    """g = dpooled where the ReLU was open (pooled > 0), else 0; host (N, F)."""
    dpooled = np.asarray(dpooled)
    pooled = np.asarray(pooled)
    return np.ascontiguousarray(np.where(pooled > 0, dpooled, 0), dtype=dtype)


# ---------------------------------------------------------------------------
# The kernel API (host arrays in and out)
# ---------------------------------------------------------------------------


def conv2d_forward(x, W, b, relu=False):
    """Valid cross-correlation on the GPU; with ``relu=True`` its ReLU (the RELU epilogue).

    x (N, C, H, W), W (F, C, K, K), b (F,) -> out (N, F, H-K+1, W-K+1)
    ``out[n,f,i,j] = b[f] + sum_{c,p,q} W[f,c,p,q] x[n,c,i+p,j+q]`` (``max(out, 0)`` when relu)
    """
    check_available()
    check_shapes(x, W)
    dt = _float_dtype(x, W, b)
    out = _tiled_conv(_to_device(x, dt), _to_device(W, dt), _to_device(b, dt), RELU if relu else NONE)
    return out.copy_to_host()


def conv2d_backward(dout, x, W, need_dx=True):
    """Gradients of the valid cross-correlation (dense; see the fused path for
    the sparse one).

    dout (N, F, Ho, Wo), x (N, C, H, W), W (F, C, K, K) ->
    dx (N, C, H, W) or None, dW (F, C, K, K), db (F,)

    ``dW[f,c,p,q] = sum_{n,i,j} dout[n,f,i,j] x[n,c,i+p,j+q]``,
    ``db[f] = sum_{n,i,j} dout[n,f,i,j]``,
    ``dx[n,c,y,x] = sum_{f,p,q} dout[n,f,y-p,x-q] W[f,c,p,q]``.
    """
    check_available()
    check_shapes(x, W)
    cfg = _config
    dt = _float_dtype(dout, x, W)
    F, C, K, _ = W.shape
    N = x.shape[0]
    if tuple(dout.shape) != (N, F, x.shape[2] - K + 1, x.shape[3] - K + 1):
        raise ValueError(f"dout has shape {dout.shape}, expected {(N, F, x.shape[2] - K + 1, x.shape[3] - K + 1)}")
    dout_d, x_d = _to_device(dout, dt), _to_device(x, dt)
    E = F * C * K * K
    parts = _scratch_array("dense_parts", (N, E + F), dt)
    dense_grad_partials_kernel(dt.str)[(N, _blocks(E + F, cfg.threads)), cfg.threads](
        dout_d, x_d, K, parts)
    total = _sum_rows(parts, "dense_sum").copy_to_host()
    dW, db = total[:E].reshape(W.shape), total[E:]
    dx = None
    if need_dx:
        dx_d = cuda.device_array(x.shape, dt)
        dense_dx_kernel(dt.str)[_blocks(dx_d.size, cfg.threads), cfg.threads](
            dout_d, _to_device(W, dt), dx_d)
        dx = dx_d.copy_to_host()
    return dx, dW, db


def conv_relu_maxpool_forward(x, W, b):
    """Convolution, ReLU and global max pooling fused: the (N, F, Ho, Wo)
    convolution output is never written to memory.

    x (N, C, H, W), W (F, C, K, K), b (F,) -> pooled (N, F), argmax (N, F) int64
    ``pooled[n,f] = max_{i,j} relu(z[n,f,i,j])``; ``argmax[n,f]`` the flat
    index ``i * Wo + j`` of the first maximum of z (row-major).
    """
    check_available()
    check_shapes(x, W)
    dt = _float_dtype(x, W, b)
    pooled_d, argmax_d = _tiled_conv(_to_device(x, dt), _to_device(W, dt), _to_device(b, dt), MAXPOOL)
    return pooled_d.copy_to_host(), argmax_d.copy_to_host()


def conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled, need_dx=True):
    """Sparse backward of :func:`conv_relu_maxpool_forward`.

    dpooled (N, F), x (N, C, H, W), W (F, C, K, K), argmax and pooled (N, F) ->
    dx (N, C, H, W) or None, dW (F, C, K, K), db (F,)

    ``g = dpooled * (pooled > 0)``; ``dW[f,c,p,q] = sum_n g[n,f] x[n,c,i*+p,j*+q]``;
    ``db[f] = sum_n g[n,f]``; ``dx`` = each g[n,f] W[f] placed at its window.
    """
    check_available()
    check_shapes(x, W)
    dt = _float_dtype(dpooled, x, W)
    g_d = cuda.to_device(_relu_gate(dpooled, pooled, dt))
    argmax_d = cuda.to_device(np.ascontiguousarray(argmax, dtype=np.int64))
    x_d = _to_device(x, dt)
    dW, db = _sparse_dW_db(g_d, argmax_d, x_d, W.shape)
    dx = None
    if need_dx:
        dx = _sparse_dx(g_d, argmax_d, _to_device(W, dt), tuple(x.shape), dt).copy_to_host()
    return dx, dW, db


# ---------------------------------------------------------------------------
# The whole feature stack, device-resident
# ---------------------------------------------------------------------------


def features_forward(x, W1, b1, W2, b2):
    """conv1 -> ReLU -> fused conv2 + ReLU + global max pool, on the GPU.

    x (N, C0, H, W) host (or numba device) array, W1 (F1, C0, K1, K1), b1 (F1,),
    W2 (F2, F1, K2, K2), b2 (F2,) -> pooled (N, F2) host array, ctx

    ``a1 = relu(conv(x, W1) + b1)`` stays on the device (in ``ctx``), and
    ``pooled[n,f] = relu(max_{i,j} conv(a1, W2)[n,f,i,j] + b2[f])``. ``ctx``
    keeps what :func:`features_backward` needs; its ``"argmax"`` entry is the
    host (N, F2) argmax of conv2's pre-activation.
    """
    check_available()
    check_shapes(x, W1)
    if W2.shape[1] != W1.shape[0]:
        raise ValueError(f"conv2 expects {W2.shape[1]} channels but conv1 has {W1.shape[0]} filters")
    dt = _float_dtype(x, W1, b1, W2, b2)
    x_d = _to_device(x, dt)
    W2_d = _to_device(W2, dt)
    a1_d = _tiled_conv(x_d, _to_device(W1, dt), _to_device(b1, dt), RELU)
    check_shapes(a1_d, W2)
    pooled_d, argmax_d = _tiled_conv(a1_d, W2_d, _to_device(b2, dt), MAXPOOL)
    pooled = pooled_d.copy_to_host()
    argmax = argmax_d.copy_to_host()
    ctx = {"x": x_d, "a1": a1_d, "W2": W2_d, "argmax_d": argmax_d,
           "argmax": argmax, "pooled": pooled, "W1_shape": tuple(W1.shape),
           "W2_shape": tuple(W2.shape), "dtype": dt}
    return pooled, ctx


def features_backward(dpooled, ctx):
    """Gradients of the feature stack from dL/dpooled, using ``ctx`` from
    :func:`features_forward`.

    dpooled (N, F2) host -> dW1 (F1, C0, K1, K1), db1 (F1,), dW2 (F2, F1, K2, K2),
    db2 (F2,) host arrays.

    conv2: one position per (patch, filter) receives gradient (sparse dW2, db2);
    conv1: summed window by window without forming its activation gradient
    (module docstring).
    """
    check_available()
    cfg = _config
    dt = ctx["dtype"]
    F1, C0, K1, _ = ctx["W1_shape"]
    F2 = ctx["W2_shape"][0]
    x_d, a1_d = ctx["x"], ctx["a1"]
    N = x_d.shape[0]
    if tuple(np.shape(dpooled)) != (N, F2):
        raise ValueError(f"dpooled has shape {np.shape(dpooled)}, expected {(N, F2)}")
    g_d = cuda.to_device(_relu_gate(dpooled, ctx["pooled"], dt))

    dW2, db2 = _sparse_dW_db(g_d, ctx["argmax_d"], a1_d, ctx["W2_shape"])

    E1 = F1 * C0 * K1 * K1
    parts = _scratch_array("conv1_parts", (N * F2, E1 + F1), dt)
    conv1_grad_partials_kernel(dt.str)[(N * F2, _blocks(E1 + F1, cfg.threads)), cfg.threads](
        g_d, ctx["argmax_d"], ctx["W2"], a1_d, x_d, K1, parts)
    total = _sum_rows(parts, "conv1_sum").copy_to_host()
    dW1, db1 = total[:E1].reshape(ctx["W1_shape"]), total[E1:]
    return dW1, db1, dW2, db2


# ---------------------------------------------------------------------------
# Scanning: convolution + ReLU + block max
# ---------------------------------------------------------------------------


def conv_relu_blockmax(x, W, b, g):
    """Valid convolution, ReLU and g x g block maxima on the GPU.

    x (N, C, H, W), W (F, C, K, K), b (F,), g >= 1 -> out (N, F, Ho // g, Wo // g)
    ``out[n,f,bi,bj] = relu(max_{0<=u,v<g} z[n,f,bi*g+u,bj*g+v])``, z the convolution
    (rows and columns past the last whole block are dropped). z is computed by the
    tiled convolution and stays on the device; only the block maxima come back.
    """
    check_available()
    check_shapes(x, W)
    g = int(g)
    F, _, K, _ = W.shape
    Ho, Wo = x.shape[2] - K + 1, x.shape[3] - K + 1
    if g < 1 or Ho < g or Wo < g:
        raise ValueError(f"convolution output {Ho} x {Wo} holds no whole {g} x {g} block")
    dt = _float_dtype(x, W, b)
    z_d = _tiled_conv(_to_device(x, dt), _to_device(W, dt), _to_device(b, dt), NONE)
    out_d = cuda.device_array((x.shape[0], F, Ho // g, Wo // g), dt)
    blockmax_kernel(dt.str)[_blocks(out_d.size, _config.threads), _config.threads](z_d, g, out_d)
    return out_d.copy_to_host()
