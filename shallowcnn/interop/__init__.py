"""Moving a model between shallowcnn and the deep-learning frameworks.

shallowcnn is where you learn how the network works; you deploy, compare and keep
training elsewhere. One file per direction:

* :mod:`~shallowcnn.interop.onnx_export` -- ``shallowcnn export MODEL.npz -o model.onnx``:
  a standard ONNX graph (Conv, Relu, Conv, Relu, GlobalMaxPool, Gemm, Sigmoid) that any
  ONNX runtime executes, for patches or, with ``--heatmap``, whole images;
* :mod:`~shallowcnn.interop.torch_twin` -- a tiny PyTorch ``nn.Module`` with our layers
  and ``--format torch``: its ``state_dict`` as a ``.safetensors`` file (and back);
* :mod:`~shallowcnn.interop.keras_import` -- ``shallowcnn import-keras MODEL.keras -o
  model.npz``: the paper's own Keras model, read with h5py (no Keras needed).

The frameworks are optional: each is imported only inside the function that needs it,
through :func:`require`, which says how to install what is missing.
"""
from __future__ import annotations

import importlib

INSTALL_HINT = 'pip install ".[interop]"'


class MissingPackageError(ImportError):
    """An optional package is not installed (the message says what to install)."""


def require(module: str, purpose: str, hint: str = INSTALL_HINT):
    """Import and return ``module``, or raise :class:`MissingPackageError` saying why it
    is needed and how to get it (``purpose``: e.g. "exporting to ONNX")."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = module.split(".")[0]
        raise MissingPackageError(f"{purpose} needs the {package!r} package, which is not installed "
                                  f"({e}); install it with: {hint}") from None
