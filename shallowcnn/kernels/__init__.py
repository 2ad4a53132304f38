"""Convolution kernels, one module per backend, all with the same functions.

=========  ==========================================================
name       module
=========  ==========================================================
numpy      :mod:`shallowcnn.kernels.reference` -- plain NumPy, the truth
numba      :mod:`shallowcnn.kernels.cpu` -- Numba, parallel CPU kernels
cuda       :mod:`shallowcnn.kernels.cuda` -- numba.cuda GPU kernels
auto       cuda when a GPU is usable, numba otherwise
=========  ==========================================================

Every backend module provides (shapes for one batch; ``K`` the kernel size,
``Ho = H - K + 1``, ``Wo = W - K + 1``):

``conv2d_forward(x, W, b) -> out``
    x (N, C, H, W), W (F, C, K, K), b (F,) -> out (N, F, Ho, Wo)
``conv2d_backward(dout, x, W, need_dx=True) -> (dx, dW, db)``
    dx is None when ``need_dx`` is False (the first layer needs no dx).
``conv_relu_maxpool_forward(x, W, b) -> (pooled, argmax)``
    pooled (N, F) = max over (i, j) of relu(conv(x)); argmax (N, F) int64, the
    flat index i * Wo + j of the first maximum of the pre-activation.
``conv_relu_maxpool_backward(dpooled, x, W, argmax, pooled, need_dx=True) -> (dx, dW, db)``

A backend asked for by name that cannot run raises :class:`BackendUnavailable`:
we never fall back silently.
"""
from __future__ import annotations

import importlib

BACKENDS = ("numpy", "numba", "cuda")
_MODULES = {"numpy": "reference", "numba": "cpu", "cuda": "cuda"}


class BackendUnavailable(RuntimeError):
    """The backend asked for cannot run on this machine (the message says why)."""


def cuda_usable() -> bool:
    """True when numba.cuda is installed and sees a GPU (or its simulator)."""
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
