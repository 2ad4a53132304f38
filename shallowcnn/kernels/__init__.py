"""Convolution kernels, one module per backend, all with the same functions.

=========  ==========================================================
name       module
=========  ==========================================================
numpy      :mod:`shallowcnn.kernels.reference` -- plain NumPy, the truth
numba      :mod:`shallowcnn.kernels.cpu` -- Numba, parallel CPU kernels
cuda       :mod:`shallowcnn.kernels.cuda` -- numba.cuda GPU kernels
auto       cuda when a GPU is usable, numba otherwise
=========  ==========================================================

Every backend module provides the same functions, so the rest of the package
never asks which backend it has (shapes for one batch; ``K`` the kernel size,
``Ho = H - K + 1``, ``Wo = W - K + 1``). Host NumPy arrays go in and come out.

``conv2d_forward(x, W, b, relu=False) -> out``
    x (N, C, H, W), W (F, C, K, K), b (F,) -> out (N, F, Ho, Wo),
    ``out[n,f,i,j] = b[f] + sum_{c,p,q} W[f,c,p,q] x[n,c,i+p,j+q]``; with
    ``relu=True`` its ReLU, ``max(out, 0)`` (a backend may apply it as it stores).
``conv2d_backward(dout, x, W, need_dx=True) -> (dx, dW, db)``
    dx is None when ``need_dx`` is False (the first layer needs no dx).
``conv_relu_maxpool_forward(x, W, b) -> (pooled, argmax)``
    pooled (N, F) = max over (i, j) of relu(conv(x)); argmax (N, F) int64, the
    flat index i * Wo + j of the first maximum of the pre-activation.
``conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled, need_dx=True) -> (dx, dW, db)``
``features_forward(x, W1, b1, W2, b2) -> (pooled, ctx)``
    The network's whole feature stack in one call: x (N, C0, H, W) ->
    pooled (N, F2) = global max of relu(conv2(relu(conv1(x)))). ``ctx`` is
    whatever the backend needs for the backward pass (opaque to callers).
``features_backward(dpooled, ctx) -> (dW1, db1, dW2, db2)``
    dpooled (N, F2) -> the gradients of both convolutions (no dx: the input
    needs none). Seeing the whole stack lets a backend follow the sparse
    gradient of the max pool straight into conv1 (numba, cuda).
``conv_relu_blockmax(x, W, b, g) -> out``
    For scanning: x (N, C, H, W), g >= 1 -> out (N, F, Ho // g, Wo // g),
    ``out[n,f,bi,bj] = relu(max_{0<=u,v<g} conv(x)[n,f,bi*g+u,bj*g+v])``;
    rows and columns past the last whole block are dropped.

Every function checks its shapes with :func:`check_shapes` first.

A backend asked for by name that cannot run raises :class:`BackendUnavailable`:
we never fall back silently.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import sys

BACKENDS = ("numpy", "numba", "cuda")
_MODULES = {"numpy": "reference", "numba": "cpu", "cuda": "cuda"}


class BackendUnavailable(RuntimeError):
    """The backend asked for cannot run on this machine (the message says why)."""


def check_shapes(x, W) -> None:
    """Refuse shapes no backend can convolve, with a message naming the problem.

    x (N, C, H, W), W (F, C, K, K): 4-D arrays, matching C, square kernels and an
    input at least K x K. Uses only ``.shape``, so device arrays pass too.
    """
    if len(x.shape) != 4 or len(W.shape) != 4:
        raise ValueError(f"expected x (N, C, H, W) and W (F, C, K, K), got {x.shape} and {W.shape}")
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels but W expects {W.shape[1]}")
    if W.shape[2] != W.shape[3]:
        raise ValueError(f"kernels must be square, got {W.shape[2]}x{W.shape[3]}")
    K = W.shape[2]
    if x.shape[2] < K or x.shape[3] < K:
        raise ValueError(f"input {x.shape[2]}x{x.shape[3]} is smaller than the {K}x{K} kernel")


def no_cuda_driver() -> bool:
    """True when this is Linux, the CUDA simulator is off and no CUDA driver library loads:
    then no GPU can be usable. Loading a missing library fails in well under a millisecond,
    while importing numba.cuda to learn the same took 1.4 s of a 4-second ``shallowcnn scan``
    (its default backend is ``auto``). Elsewhere, or with ``NUMBA_CUDA_DRIVER`` set, we ask numba.cuda."""
    if (not sys.platform.startswith("linux") or os.environ.get("NUMBA_ENABLE_CUDASIM", "0") != "0"
            or os.environ.get("NUMBA_CUDA_DRIVER")):
        return False
    for name in ("libcuda.so.1", "libcuda.so"):      # the names numba.cuda's driver loader tries
        try:
            ctypes.CDLL(name)
            return False
        except OSError:
            pass
    return True


def cuda_usable() -> bool:
    """True when numba.cuda is installed and sees a GPU (or its simulator)."""
    if no_cuda_driver():
        return False
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:
        return False


def resolve_backend_name(name: str) -> str:
    """Turn ``"auto"`` into a concrete backend name; validate the others."""
    if name == "auto":
        return "cuda" if cuda_usable() else "numba"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} or auto")
    return name


def get_backend(name: str = "numpy"):
    """Return the kernel module for ``name`` (numpy | numba | cuda | auto)."""
    name = resolve_backend_name(name)
    try:
        module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    except ImportError as e:
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {e}") from e
    check = getattr(module, "check_available", None)
    if check is not None:
        check()  # raises BackendUnavailable with instructions
    return module
