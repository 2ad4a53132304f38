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
import math
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

# Bounds checked before anything is read or parsed, so that a small hostile file cannot
# claim gigabytes. The paper's model is 8,301 numbers and a config.json of a few KB.
MAX_CONFIG_BYTES = 4 * 2**20          # config.json / model_config / metadata.json
MAX_JSON_DEPTH = 64                   # nesting of that JSON (a real one is about 6 deep)
MAX_WEIGHTS_BYTES = 256 * 2**20       # model.weights.h5 inside a .keras zip
MAX_WEIGHT_VALUES = 2**24             # numbers in one weight array (16 M, 128 MB as float64)


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
                return _read_legacy_h5(path, f, h5py)
    except KerasImportError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, ValueError, TypeError, RuntimeError) as e:
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

        def member(name, limit):
            # The sizes the archive declares, checked before inflating anything (a zip
            # bomb declares its real size: zipfile never inflates past the declared one).
            size = z.getinfo(name).file_size
            if size > limit:
                raise KerasImportError(f"{path}: its {name} declares {size:,} bytes, more than the "
                                       f"{limit:,} a ShallowCNN model needs (a damaged file or a zip bomb)")
            return z.read(name)

        config = _parse_json(path, member("config.json", MAX_CONFIG_BYTES), "config.json")
        meta = (_parse_json(path, member("metadata.json", MAX_CONFIG_BYTES), "metadata.json")
                if "metadata.json" in names else {})
        weights_h5 = member("model.weights.h5", MAX_WEIGHTS_BYTES)
    model_class, layer_configs = _sequential_layers(path, config)
    layers = []
    with h5py.File(io.BytesIO(weights_h5), "r") as f:
        used = {}
        for layer in layer_configs:
            group = f"layers/{_unique_name(_snake_case(layer['class_name']), used)}/vars"
            if group not in f:             # files that address layers by their own names
                group = f"layers/{layer['config'].get('name')}/vars"
            found = f[group] if group in f and isinstance(f[group], h5py.Group) else {}
            # vars/0, vars/1, ... in numeric order (vars/10 after vars/9)
            weights = [_read_dataset(path, found[k], h5py) for k in sorted(found, key=int)]
            layers.append({**layer, "weights": weights})
    keras_version = meta.get("keras_version") if isinstance(meta, dict) else None
    return layers, {"format": ".keras", "model_class": model_class,
                    "keras_version": keras_version if isinstance(keras_version, str) else None}


def _read_dataset(path: Path, dataset, h5py) -> np.ndarray:
    """One weight array, after checking what its HDF5 header declares (free to read):
    a dataset of real numbers of at most MAX_WEIGHT_VALUES values, so that a 56 KB file
    declaring a 3 GB kernel is refused before any memory is given."""
    where = getattr(dataset, "name", "?")
    if not isinstance(dataset, h5py.Dataset):
        raise KerasImportError(f"{path}: {where} is not a weight array (an HDF5 {type(dataset).__name__})")
    shape, dtype = dataset.shape, dataset.dtype
    if shape is None or dtype.kind not in "fiu" or len(shape) > 4:
        raise KerasImportError(f"{path}: weight {where} is not an array of numbers "
                               f"(declares dtype {dtype}, shape {shape})")
    if math.prod(shape) > MAX_WEIGHT_VALUES:
        raise KerasImportError(f"{path}: weight {where} declares shape {shape} "
                               f"({math.prod(shape):,} values), far more than a ShallowCNN has")
    return np.asarray(dataset[()])


def _parse_json(path: Path, data, what: str):
    """``json.loads`` of a configuration, refusing (naming ``what`` in ``path``) text that
    is not UTF-8, is too large, or nests deeper than MAX_JSON_DEPTH: the depth is counted
    before parsing, since Python's parser recurses once per level."""
    if len(data) > MAX_CONFIG_BYTES:
        raise KerasImportError(f"{path}: its {what} has {len(data):,} bytes, more than the "
                               f"{MAX_CONFIG_BYTES:,} a Keras configuration needs")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
    except UnicodeDecodeError as e:
        raise KerasImportError(f"{path}: its {what} is not UTF-8 text ({e})") from None
    depth = deepest = 0
    for bracket in re.finditer(r'[\[\]{}]', re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            raise KerasImportError(f"{path}: its {what} nests deeper than {MAX_JSON_DEPTH} levels, "
                                   f"which no Keras model does")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise KerasImportError(f"{path}: its {what} is not valid JSON ({e})") from None


def _read_legacy_h5(path: Path, f, h5py) -> tuple[list, dict]:
    """A legacy HDF5 model: attribute model_config + group model_weights."""
    if "model_config" not in f.attrs:
        what = ("weights only (model.save_weights), without the architecture"
                if "layers" in f or "layer_names" in f.attrs else "no Keras model configuration")
        raise KerasImportError(f"{path}: an HDF5 file with {what}; save the whole model with "
                               f"model.save('model.keras') and import that")
    raw = f.attrs["model_config"]
    if isinstance(raw, np.void):          # opaque bytes
        raw = raw.tobytes()
    config = _parse_json(path, raw if isinstance(raw, bytes) else _text(raw).encode("utf-8", "replace"),
                         "model_config")
    model_class, layer_configs = _sequential_layers(path, config)
    weights_root = f["model_weights"] if "model_weights" in f else f
    layers = []
    for layer in layer_configs:
        name = layer["config"].get("name")
        weights = []
        if isinstance(name, str) and name in weights_root:
            group = weights_root[name]
            names = group.attrs.get("weight_names", []) if isinstance(group, h5py.Group) else []
            weights = [_read_dataset(path, group[_text(w)], h5py) for w in names]
        layers.append({**layer, "weights": weights})
    return layers, {"format": ".h5", "model_class": model_class,
                    "keras_version": _text(f.attrs.get("keras_version", "")) or None}


def _sequential_layers(path: Path, config) -> tuple[str, list]:
    """``(model class, [{"class_name", "config"}])`` of a Sequential, InputLayer dropped.

    The JSON is checked type by type (a dict with a "config" that is a dict holding a
    list "layers", or an old Keras 2 bare list; each layer a dict with a string
    "class_name" and a dict "config"), so that any other shape is a named error."""
    def malformed(what):
        return KerasImportError(f"{path}: malformed Keras model configuration: {what}")

    if not isinstance(config, dict):
        raise malformed(f"a JSON {type(config).__name__} where an object with class_name and config belongs")
    model_class = config.get("class_name", "?")
    if not isinstance(model_class, str):
        raise malformed(f"class_name is a {type(model_class).__name__}, not a string")
    inner = config.get("config", {})
    layers = inner if isinstance(inner, list) else inner.get("layers", []) if isinstance(inner, dict) else None
    if not isinstance(layers, list):                                    # old Keras 2: a bare list
        raise malformed(f"the layers are a JSON {type(layers if inner is not None else inner).__name__}, not a list")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise malformed(f"layer {i} is a JSON {type(layer).__name__}, not an object")
        if not isinstance(layer.get("class_name"), str) or not isinstance(layer.get("config", {}), dict):
            raise malformed(f"layer {i} needs a string class_name and an object config")
    layers = [{"class_name": layer["class_name"], "config": layer.get("config", {})}
              for layer in layers if layer["class_name"] != "InputLayer"]
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
    """Keras writes sizes as 9, [9, 9] or (9, 9): always a tuple (a pair when well formed)."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _short(value) -> str:
    """A configuration value for a message: at most 40 characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(layer) -> str:
    """One layer in a line, e.g. "Conv2D 6 9x9 relu" or "Conv2D 8 3x3 relu padding=same"
    (whatever the configuration holds: this also describes malformed layers)."""
    c, kind = layer["config"], layer["class_name"]
    if kind == "Conv2D":
        k = _pair(c.get("kernel_size", "?"))
        text = f"Conv2D {_short(c.get('filters'))} {'x'.join(_short(v) for v in k)} {_short(c.get('activation'))}"
        for key, default in (("padding", "valid"), ("strides", (1, 1)), ("dilation_rate", (1, 1)),
                             ("groups", 1), ("use_bias", True)):
            value = _pair(c[key]) if key in ("strides", "dilation_rate") and key in c else c.get(key, default)
            if value != default:
                text += f" {key}={_short(value)}"
        return text
    if kind == "Dense":
        return (f"Dense {_short(c.get('units'))} {_short(c.get('activation'))}"
                + ("" if c.get("use_bias", True) is True else " use_bias=False"))
    if kind == "Dropout":
        return f"Dropout {_short(c.get('rate'))}"
    return _short(kind)


def _whole(value, low, high) -> bool:
    """A JSON whole number in [low, high] (true/false are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _value_problem(layers) -> str | None:
    """What is wrong with the numbers of a Conv2D, Conv2D, ..., Dense list, or None."""
    for i in (0, 1):
        c = layers[i]["config"]
        k = _pair(c.get("kernel_size"))
        if not _whole(c.get("filters"), 1, 4096):
            return f"convolution {i + 1}'s filters must be a whole number in 1..4096, got {_short(c.get('filters'))}"
        if len(k) != 2 or not all(_whole(v, 1, 128) for v in k):
            return (f"convolution {i + 1}'s kernel_size must be a whole number or a pair of them in 1..128, "
                    f"got {_short(c.get('kernel_size'))}")
    units = layers[-1]["config"].get("units")
    if not _whole(units, 1, 1):
        return f"the output must be Dense with units 1, got {_short(units)}"
    if layers[3]["class_name"] == "Dropout":
        rate = layers[3]["config"].get("rate", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            return f"the dropout rate must be a number in [0, 1), got {_short(rate)}"
    return None


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
    elif (problem := _value_problem(layers)) is None:
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
