"""Import the paper's Keras model (for ``shallowcnn import-keras``).

The authors built the network in Keras (paper section 3)::

    keras.Sequential([keras.Input((144, 144, 1)),
                      keras.layers.Conv2D(6, 9, activation="relu"),
                      keras.layers.Conv2D(16, 9, activation="relu"),
                      keras.layers.GlobalMaxPooling2D(),
                      keras.layers.Dropout(0.2),
                      keras.layers.Dense(1, activation="sigmoid")])

We read such a file with ``h5py`` only -- Keras itself (and its heavy backend) is not
needed, and nothing in the file is executed. Two formats:

* ``.keras`` (Keras 3): a zip holding ``config.json`` (the layers and their settings)
  and ``model.weights.h5`` (HDF5), where layer i's variables are the datasets
  ``layers/<name>/vars/0, 1, ...`` (kernel, bias). ``<name>`` is *not* the layer's
  name but its class in snake_case, numbered per class in order: conv2d, conv2d_1,
  dense... (Keras does this so that files do not depend on auto-generated names).
* ``.h5`` (legacy, Keras 2 and ``model.save("x.h5")``): one HDF5 file whose attribute
  ``model_config`` holds the same JSON, and whose group ``model_weights/<layer name>``
  lists its datasets in the attribute ``weight_names`` (kernel, bias).

**Layouts.** A Keras Conv2D kernel is HWIO, (K, K, C, F); ours is (F, C, K, K), so the
kernel is transposed with axes (3, 2, 0, 1). Both are cross-correlations, so nothing is
flipped. Keras' Dense kernel is (in, out) like ours. Keras works on NHWC images and we
on NCHW, but with one input channel that is the same pixels; the input scaling (pixels /
255) is the user's, as ever. Dropout is the identity at inference.

Anything but this architecture (other layers, padding "same", strides, other
activations) is refused with a message listing the layers found. Other filter counts and
kernel sizes are accepted, as :class:`~shallowcnn.model.ShallowCNN` builds them.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from ..model import ShallowCNN
from . import require
from .torch_twin import STATE_DICT_SUFFIXES, import_state_dict

EXPECTED = "Conv2D 6 9x9 relu, Conv2D 16 9x9 relu, GlobalMaxPooling2D, Dropout 0.2, Dense 1 sigmoid"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"


class KerasImportError(ValueError):
    """A file that is not the paper's Keras model (the message names the file and why)."""


# ---------------------------------------------------------------------------------------
# Reading the file: a list of layers, each {"class_name", "config", "weights"}
# ---------------------------------------------------------------------------------------


def read_keras_layers(path) -> tuple[list, dict]:
    """The layers of a ``.keras`` or ``.h5`` model file, and facts about the file.

    returns ``(layers, info)``: layers is a list of dicts ``{"class_name", "config",
    "weights"}`` (weights: the layer's arrays in Keras' order, kernel then bias), the
    InputLayer left out; info holds the model class and the Keras version that saved it.
    Raises :class:`KerasImportError` naming the file for anything unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise KerasImportError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(8)
    h5py = require("h5py", "Importing a Keras model")
    try:
        if magic.startswith(ZIP_SIGNATURE):
            return _read_keras_zip(path, h5py)
        if magic == HDF5_SIGNATURE:
            with h5py.File(path, "r") as f:
                return _read_legacy_h5(path, f)
    except KerasImportError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, ValueError, TypeError) as e:
        raise KerasImportError(f"{path}: damaged or truncated Keras file: {e}") from None
    raise KerasImportError(f"{path}: not a Keras model (neither a .keras zip archive nor an HDF5 .h5 file)")


def _read_keras_zip(path: Path, h5py) -> tuple[list, dict]:
    """A Keras 3 ``.keras`` archive: config.json + model.weights.h5."""
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        for needed in ("config.json", "model.weights.h5"):
            if needed not in names:
                raise KerasImportError(f"{path}: a zip archive without {needed}, so not a .keras model "
                                       f"(it holds {', '.join(sorted(names)) or 'nothing'})")
        config = json.loads(z.read("config.json"))
        meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
        weights_h5 = z.read("model.weights.h5")
    model_class, layer_configs = _sequential_layers(path, config)
    layers = []
    with h5py.File(io.BytesIO(weights_h5), "r") as f:
        used = {}
        for layer in layer_configs:
            group = f"layers/{_unique_name(_snake_case(layer['class_name']), used)}/vars"
            if group not in f:             # files that address layers by their own names
                group = f"layers/{layer['config'].get('name')}/vars"
            found = f[group] if group in f else {}
            # vars/0, vars/1, ... in numeric order (vars/10 after vars/9)
            weights = [np.asarray(found[k]) for k in sorted(found, key=int)]
            layers.append({**layer, "weights": weights})
    return layers, {"format": ".keras", "model_class": model_class,
                    "keras_version": meta.get("keras_version")}


def _read_legacy_h5(path: Path, f) -> tuple[list, dict]:
    """A legacy HDF5 model: attribute model_config + group model_weights."""
    if "model_config" not in f.attrs:
        what = ("weights only (model.save_weights), without the architecture"
                if "layers" in f or "layer_names" in f.attrs else "no Keras model configuration")
        raise KerasImportError(f"{path}: an HDF5 file with {what}; save the whole model with "
                               f"model.save('model.keras') and import that")
    config = json.loads(_text(f.attrs["model_config"]))
    model_class, layer_configs = _sequential_layers(path, config)
    weights_root = f["model_weights"] if "model_weights" in f else f
    layers = []
    for layer in layer_configs:
        name = layer["config"].get("name")
        weights = []
        if name in weights_root:
            group = weights_root[name]
            weights = [np.asarray(group[_text(w)]) for w in group.attrs.get("weight_names", [])]
        layers.append({**layer, "weights": weights})
    return layers, {"format": ".h5", "model_class": model_class,
                    "keras_version": _text(f.attrs.get("keras_version", "")) or None}


def _sequential_layers(path: Path, config) -> tuple[str, list]:
    """``(model class, [{"class_name", "config"}])`` of a Sequential, InputLayer dropped."""
    model_class = config.get("class_name", "?") if isinstance(config, dict) else "?"
    inner = config.get("config", {}) if isinstance(config, dict) else config
    layers = inner if isinstance(inner, list) else inner.get("layers", [])  # old Keras 2: a bare list
    layers = [{"class_name": layer.get("class_name", "?"), "config": layer.get("config", {})}
              for layer in layers if layer.get("class_name") != "InputLayer"]
    if model_class != "Sequential":
        raise KerasImportError(f"{path}: a Keras {model_class} model; only a Sequential is imported. "
                               f"Expected {EXPECTED}; found: {_describe_all(layers)}")
    return model_class, layers


def _snake_case(name: str) -> str:
    """Keras' class-name-to-group-name rule: "GlobalMaxPooling2D" -> "global_max_pooling2d"."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique_name(name: str, used: dict) -> str:
    """The first "conv2d" stays "conv2d", the next is "conv2d_1", and so on."""
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------
# Checking the architecture and building our model
# ---------------------------------------------------------------------------------------


def _pair(value) -> tuple:
    """Keras writes sizes as 9, [9, 9] or (9, 9): always a pair."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _describe(layer) -> str:
    """One layer in a line, e.g. "Conv2D 6 9x9 relu" or "Conv2D 8 3x3 relu padding=same"."""
    c, kind = layer["config"], layer["class_name"]
    if kind == "Conv2D":
        k = _pair(c.get("kernel_size", "?"))
        text = f"Conv2D {c.get('filters')} {k[0]}x{k[1]} {c.get('activation')}"
        for key, default in (("padding", "valid"), ("strides", (1, 1)), ("dilation_rate", (1, 1)),
                             ("groups", 1), ("use_bias", True)):
            value = _pair(c[key]) if key in ("strides", "dilation_rate") and key in c else c.get(key, default)
            if value != default:
                text += f" {key}={value}"
        return text
    if kind == "Dense":
        return f"Dense {c.get('units')} {c.get('activation')}" + ("" if c.get("use_bias", True) else " use_bias=False")
    if kind == "Dropout":
        return f"Dropout {c.get('rate')}"
    return kind


def _describe_all(layers) -> str:
    return ", ".join(_describe(layer) for layer in layers) or "no layers"


def check_architecture(layers, path="model") -> dict:
    """The ShallowCNN settings of a Keras layer list, or :class:`KerasImportError`.

    Accepted: Conv2D relu, Conv2D relu (same square kernel, valid padding, stride 1, with
    bias), GlobalMaxPooling2D, an optional Dropout, Dense 1 sigmoid.
    returns ``{"channels": (c1, c2), "kernel_size": K, "p_drop": rate}``
    """
    kinds = [layer["class_name"] for layer in layers]
    problem = None
    if kinds not in (["Conv2D", "Conv2D", "GlobalMaxPooling2D", "Dropout", "Dense"],
                     ["Conv2D", "Conv2D", "GlobalMaxPooling2D", "Dense"]):
        problem = "other layers"
    else:
        conv1, conv2 = layers[0]["config"], layers[1]["config"]
        for i, conv in enumerate((conv1, conv2), 1):
            k = _pair(conv.get("kernel_size"))
            if _describe(layers[i - 1]) != f"Conv2D {conv.get('filters')} {k[0]}x{k[1]} relu":
                problem = (f"convolution {i} must be valid, stride 1, with bias and ReLU "
                           f"(got {_describe(layers[i - 1])})")
            elif k[0] != k[1] or _pair(conv1.get("kernel_size")) != k:
                problem = "both convolutions must have the same square kernel"
        if problem is None and _describe(layers[-1]) != "Dense 1 sigmoid":
            problem = f"the output must be Dense 1 sigmoid (got {_describe(layers[-1])})"
    if problem:
        raise KerasImportError(f"{path}: not the paper's network ({problem}). Expected {EXPECTED}; "
                               f"found {len(layers)} layers: {_describe_all(layers)}")
    p_drop = float(layers[3]["config"].get("rate", 0.0)) if kinds[3] == "Dropout" else 0.0
    return {"channels": (int(conv1["filters"]), int(conv2["filters"])),
            "kernel_size": int(_pair(conv1["kernel_size"])[0]), "p_drop": p_drop}


def keras_to_params(layers, architecture, path="model") -> dict:
    """Our named parameters from the Keras weights (conv kernels HWIO -> (F, C, K, K))."""
    (c1, c2), K = architecture["channels"], architecture["kernel_size"]
    conv1, conv2, dense = layers[0]["weights"], layers[1]["weights"], layers[-1]["weights"]
    expected = {"conv1": [(K, K, 1, c1), (c1,)], "conv2": [(K, K, c1, c2), (c2,)], "dense": [(c2, 1), (1,)]}
    for name, weights in (("conv1", conv1), ("conv2", conv2), ("dense", dense)):
        shapes = [w.shape for w in weights]
        if shapes != expected[name]:
            raise KerasImportError(f"{path}: {name} has weights of shapes {shapes or 'none'}, expected "
                                   f"{expected[name]} (a single-channel input; the file may be damaged)")
    params = {"conv1.W": conv1[0].transpose(3, 2, 0, 1), "conv1.b": conv1[1],
              "conv2.W": conv2[0].transpose(3, 2, 0, 1), "conv2.b": conv2[1],
              "dense.W": dense[0], "dense.b": dense[1]}
    for name, value in params.items():
        if not np.all(np.isfinite(value)):
            raise KerasImportError(f"{path}: {name} holds NaN or infinite values")
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in params.items()}


def import_keras(path):
    """A :class:`~shallowcnn.model.ShallowCNN` with the weights of a Keras model file.

    ``model.metadata["imported_from"]`` records the source (file, SHA-256, format, Keras
    version, layers); ``model.save(path, metadata=model.metadata)`` keeps it in the saved file.
    """
    layers, info = read_keras_layers(path)
    architecture = check_architecture(layers, path)
    params = keras_to_params(layers, architecture, path)
    model = ShallowCNN(**architecture)
    model.set_params(params)
    model.metadata = {"imported_from": {**info, "framework": "keras", "file": str(path),
                                        "sha256": _sha256(path), "layers": [_describe(x) for x in layers]}}
    return model


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_model(path, from_torch: bool | None = None):
    """Import a Keras file, or (``from_torch``, or a .safetensors/.pt/.pth name) the
    state_dict of the PyTorch twin. Returns a ShallowCNN with ``metadata["imported_from"]``."""
    if from_torch is None:
        from_torch = Path(path).suffix.lower() in STATE_DICT_SUFFIXES
    if not from_torch:
        return import_keras(path)
    model = import_state_dict(path)
    model.metadata = {"imported_from": {"framework": "torch", "format": Path(path).suffix,
                                        "file": str(path), "sha256": _sha256(path)}}
    return model
