"""A PyTorch twin of ShallowCNN, and its ``state_dict`` written to / read from a file.

The twin is the smallest ``nn.Module`` that computes what our model computes::

    conv1   nn.Conv2d(1, 6, 9)      weight (6, 1, 9, 9), bias (6,)
    ReLU
    conv2   nn.Conv2d(6, 16, 9)     weight (16, 6, 9, 9), bias (16,)
    ReLU
    amax over (H, W)                global max pool -> (N, 16)
    dropout nn.Dropout(0.2)         identity in eval() mode
    dense   nn.Linear(16, 1)        weight (1, 16), bias (1,)
    -> logits (N,); predict_proba applies the sigmoid

**Which layouts change.** Only the dense weight: PyTorch's ``nn.Linear`` stores
``weight`` as (out, in) and computes ``x @ weight.T``, while our Dense keeps Keras'
(in, out) and computes ``x @ W``; so ``dense.weight = dense.W.T``. Everything else is
the same: ``nn.Conv2d`` is a cross-correlation with weights (F, C, K, K), like our
Conv2D, and both take NCHW input (pixels / 255, float32).

The file format is **safetensors** (``model.safetensors``): a JSON header with names,
dtypes and shapes, then the raw bytes -- no pickle, so loading a file cannot run code.
It is what ``safetensors.torch.save_file(net.state_dict(), path)`` writes, and
``net.load_state_dict(safetensors.torch.load_file(path))`` reads it back. Our architecture
(channels, kernel size, dropout) rides in the header's metadata. Exporting and importing
need only numpy and the ``safetensors`` package; torch is needed to *run* the twin.
A ``.pt``/``.pth`` state_dict saved with ``torch.save`` is also read, through
``torch.load(weights_only=True)`` (PyTorch's restricted loader, which refuses code).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..model import ShallowCNN
from ..recipe import PAPER
from ..storage import atomic_write_bytes
from . import require

TORCH_HINT = "pip install torch"
STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth")
METADATA_KEY = "shallowcnn"

# Our parameter name -> the twin's state_dict key.
TORCH_NAMES = {"conv1.W": "conv1.weight", "conv1.b": "conv1.bias",
               "conv2.W": "conv2.weight", "conv2.b": "conv2.bias",
               "dense.W": "dense.weight", "dense.b": "dense.bias"}


@functools.cache
def twin_class():
    """The ``nn.Module`` class of the twin (built on first use, so that importing this
    file does not need torch)."""
    torch = require("torch", "The PyTorch twin", TORCH_HINT)
    nn = torch.nn

    class ShallowCNNTwin(nn.Module):
        """ShallowCNN in PyTorch: x (N, 1, H, W) -> logits (N,). See the module docstring."""

        def __init__(self, channels=PAPER.channels, kernel_size=PAPER.kernel_size, p_drop=PAPER.p_drop):
            super().__init__()
            c1, c2 = channels
            self.conv1 = nn.Conv2d(1, c1, kernel_size)
            self.conv2 = nn.Conv2d(c1, c2, kernel_size)
            self.dropout = nn.Dropout(p_drop)
            self.dense = nn.Linear(c2, 1)

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            h = torch.relu(self.conv2(h))
            h = torch.amax(h, dim=(2, 3))                  # global max pool: (N, c2)
            return self.dense(self.dropout(h))[:, 0]

        def predict_proba(self, x):
            """Probabilities (N,) in eval mode (dropout off), without gradients."""
            self.eval()
            with torch.no_grad():
                return torch.sigmoid(self(x))

    return ShallowCNNTwin


def torch_twin(model):
    """A twin ``nn.Module`` of ``model`` holding a copy of its weights (float32)."""
    torch = require("torch", "The PyTorch twin", TORCH_HINT)
    arch = model.architecture()
    net = twin_class()(arch["channels"], arch["kernel_size"], arch["p_drop"])
    net.load_state_dict({k: torch.from_numpy(v) for k, v in to_state_dict(model).items()})
    return net.eval()


# ---------------------------------------------------------------------------------------
# Parameters <-> state_dict (numpy only)
# ---------------------------------------------------------------------------------------


def to_state_dict(model) -> dict:
    """Our parameters under the twin's names and layouts: {key: float32 array}."""
    out = {}
    for ours, theirs in TORCH_NAMES.items():
        value = model.params[ours]
        if ours == "dense.W":
            value = value.T                                  # (in, out) -> nn.Linear's (out, in)
        out[theirs] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def from_state_dict(state: dict, architecture: dict | None = None, source: str = "state_dict"):
    """A :class:`~shallowcnn.model.ShallowCNN` from the twin's ``state_dict`` (numpy arrays).

    ``architecture`` (channels, kernel_size, p_drop) comes from the file's metadata when
    we wrote it; otherwise it is read off the weight shapes (dropout: the paper's).
    Raises ValueError naming ``source`` when keys or shapes do not fit the network.
    """
    missing = [k for k in TORCH_NAMES.values() if k not in state]
    extra = [k for k in state if k not in TORCH_NAMES.values()]
    if missing or extra:
        found = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in state.items()) or "nothing"
        raise ValueError(f"{source}: not the state_dict of the ShallowCNN twin "
                         f"(expected {', '.join(TORCH_NAMES.values())}; found {found})")
    w1, w2 = np.shape(state["conv1.weight"]), np.shape(state["conv2.weight"])
    if len(w1) != 4 or len(w2) != 4:
        raise ValueError(f"{source}: conv weights must be (F, C, K, K), got {w1} and {w2}")
    arch = {"channels": [w1[0], w2[0]], "kernel_size": w1[2], "p_drop": PAPER.p_drop}
    arch.update({k: architecture[k] for k in ("channels", "kernel_size", "p_drop")
                 if architecture and k in architecture})
    try:
        model = ShallowCNN(channels=arch["channels"], kernel_size=arch["kernel_size"], p_drop=arch["p_drop"])
        ours = {name: np.asarray(state[key]) for name, key in TORCH_NAMES.items()}
        ours["dense.W"] = ours["dense.W"].T                  # nn.Linear's (out, in) -> (in, out)
        model.set_params(ours)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: weights do not fit the ShallowCNN twin: {e}") from None
    if not all(np.all(np.isfinite(v)) for v in model.params.values()):
        raise ValueError(f"{source}: holds NaN or infinite weights")
    return model


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def export_state_dict(model, path, source: str | None = None) -> Path:
    """Write the twin's ``state_dict`` of ``model`` to ``path`` (.safetensors, atomically)."""
    st = require("safetensors.numpy", "Exporting a PyTorch state_dict")
    info = {"architecture": model.architecture(), "version": __version__, "source": source}
    data = st.save(to_state_dict(model), metadata={"format": "pt", METADATA_KEY: json.dumps(info)})
    return atomic_write_bytes(path, data)


def read_state_dict(path) -> tuple[dict, dict | None]:
    """``(state, architecture or None)`` from a .safetensors file (or a torch.save'd .pt).

    Every failure raises ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() in (".pt", ".pth"):
        return _read_torch_pickle(path), None
    st = require("safetensors", "Reading a PyTorch state_dict")
    try:
        with st.safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as e:   # safetensors raises its own SafetensorError (and OSError)
        raise ValueError(f"{path}: not a readable .safetensors file (truncated or another format): {e}") from None
    return state, _architecture_in(path, meta)


def _architecture_in(path: Path, meta: dict) -> dict | None:
    """The architecture our exporter writes into the header's metadata, checked value by
    value (ValueError naming the file); None when the file has none (another exporter)."""
    if METADATA_KEY not in meta:
        return None
    try:
        architecture = json.loads(meta[METADATA_KEY])["architecture"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None                       # not our metadata: read the shapes instead
    if architecture is None:
        return None

    def whole(v, high):
        return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high

    channels = architecture.get("channels") if isinstance(architecture, dict) else None
    p_drop = architecture.get("p_drop", 0.2) if isinstance(architecture, dict) else None
    if (not isinstance(architecture, dict)
            or not (isinstance(channels, list) and len(channels) == 2 and all(whole(c, 4096) for c in channels))
            or not whole(architecture.get("kernel_size"), 128)
            or isinstance(p_drop, bool) or not isinstance(p_drop, (int, float)) or not 0 <= p_drop < 1):
        text = json.dumps(architecture)[:80] if not isinstance(architecture, str) else architecture[:80]
        raise ValueError(f"{path}: its metadata's architecture is not channels [c1, c2], kernel_size K and "
                         f"p_drop in [0, 1) (found {text!r}); the file was damaged or written by something else")
    return architecture


def _read_torch_pickle(path: Path) -> dict:
    """A ``torch.save(net.state_dict())`` file, with PyTorch's weights-only loader."""
    torch = require("torch", f"Reading {path.suffix} files", TORCH_HINT)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch raises RuntimeError, UnpicklingError, EOFError...
        raise ValueError(f"{path}: not a readable PyTorch state_dict: {e}") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state_dict of tensors")
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def import_state_dict(path):
    """A :class:`~shallowcnn.model.ShallowCNN` from a twin state_dict file."""
    state, architecture = read_state_dict(path)
    return from_state_dict(state, architecture, source=str(path))
