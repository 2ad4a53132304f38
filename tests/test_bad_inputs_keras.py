"""``shallowcnn import-keras`` against malformed and hostile model files (issue 25).

Every file is made here with h5py / zipfile / safetensors (Keras is not needed): a good
paper model first (it must import), then one defect at a time. Each must end with a
message naming the file, exit status 2, no traceback, and no memory given to what a
header merely declares."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from bad_inputs_common import run_cli

h5py = pytest.importorskip("h5py", reason="import-keras needs h5py ([interop] extra)")

CONV = {"name": "conv2d", "filters": 6, "kernel_size": [9, 9], "activation": "relu", "padding": "valid",
        "strides": [1, 1]}


def paper_layers() -> list:
    return [{"class_name": "InputLayer", "config": {"batch_shape": [None, 144, 144, 1]}},
            {"class_name": "Conv2D", "config": dict(CONV)},
            {"class_name": "Conv2D", "config": {**CONV, "name": "conv2d_1", "filters": 16}},
            {"class_name": "GlobalMaxPooling2D", "config": {"name": "global_max_pooling2d"}},
            {"class_name": "Dropout", "config": {"name": "dropout", "rate": 0.2}},
            {"class_name": "Dense", "config": {"name": "dense", "units": 1, "activation": "sigmoid"}}]


def paper_weights(rng) -> dict:
    return {"conv2d": [rng.standard_normal((9, 9, 1, 6)), np.zeros(6)],
            "conv2d_1": [rng.standard_normal((9, 9, 6, 16)) * 0.1, np.zeros(16)],
            "dense": [rng.standard_normal((16, 1)), np.zeros(1)]}


def write_h5(path, config=None, weights=None, raw_config=None):
    """A legacy Keras .h5: attribute model_config + model_weights/<layer>/<weight names>.
    A weight given as a (shape, dtype) tuple is declared, never written (no data)."""
    config = {"class_name": "Sequential", "config": {"layers": paper_layers()}} if config is None else config
    weights = paper_weights(np.random.default_rng(0)) if weights is None else weights
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = raw_config if raw_config is not None else json.dumps(config)
        root = f.create_group("model_weights")
        for layer, arrays in weights.items():
            group = root.create_group(layer)
            names = [f"{layer}/{kind}:0" for kind in ("kernel", "bias")[:len(arrays)]]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, array in zip(names, arrays):
                if isinstance(array, tuple):
                    group.create_dataset(name, shape=array[0], dtype=array[1], chunks=True)
                else:
                    group.create_dataset(name, data=array)
    return path


def write_keras(path, config_bytes=None, weights_bytes=None, tmp=None):
    """A Keras 3 .keras zip: config.json + model.weights.h5 (layers/<name>/vars/0, 1)."""
    if weights_bytes is None:
        h5 = tmp / "w.h5"
        with h5py.File(h5, "w") as f:
            for layer, arrays in paper_weights(np.random.default_rng(0)).items():
                for i, array in enumerate(arrays):
                    f.create_dataset(f"layers/{layer}/vars/{i}", data=array)
        weights_bytes = h5.read_bytes()
    if config_bytes is None:
        config_bytes = json.dumps({"class_name": "Sequential", "config": {"layers": paper_layers()}}).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", config_bytes)
        z.writestr("model.weights.h5", weights_bytes)
    return path


def import_keras(capsys, source, tmp_path):
    status, out, err = run_cli(capsys, ["import-keras", source, "-o", tmp_path / "out.npz"])
    return status, out + err


def test_the_hand_made_files_import(tmp_path, capsys):
    """The reference: the same writers without a defect give a model (exit 0)."""
    for source in (write_h5(tmp_path / "good.h5"), write_keras(tmp_path / "good.keras", tmp=tmp_path)):
        status, text = import_keras(capsys, source, tmp_path)
        assert status == 0, text
        (tmp_path / "out.npz").unlink()


def sequential(layers):
    return {"class_name": "Sequential", "config": {"layers": layers}}


def with_conv(**changes):
    layers = paper_layers()
    layers[1]["config"].update(changes)
    return sequential(layers)


def deep(depth):
    return "[" * depth + "]" * depth


CONFIG_CASES = {   # model_config -> a word the message must hold
    "layers-are-ints": (sequential([1, 2, 3]), "layer 0"),
    "config-is-a-string": ({"class_name": "Sequential", "config": "abc"}, "not a list"),
    "layers-are-a-dict": ({"class_name": "Sequential", "config": {"layers": {"a": 1}}}, "not a list"),
    "top-level-list": ([1, 2], "list"),
    "top-level-number": (5, "int"),
    "class-name-not-a-string": ({"class_name": 5, "config": {"layers": []}}, "class_name"),
    "layer-config-a-list": (sequential([{"class_name": "Conv2D", "config": [1]}]), "layer 0"),
    "one-element-kernel-size": (with_conv(kernel_size=[9]), "kernel_size"),
    "kernel-size-a-string": (with_conv(kernel_size="nine"), "kernel_size"),
    "filters-a-string": (with_conv(filters="six"), "filters"),
    "filters-huge": (with_conv(filters=10**12), "filters"),
    "filters-true": (with_conv(filters=True), "filters"),
    "rate-a-string": (sequential(paper_layers()[:4] + [{"class_name": "Dropout", "config": {"rate": "x"}}]
                                 + paper_layers()[5:]), "dropout"),
    "units-a-list": (sequential(paper_layers()[:5] + [{"class_name": "Dense",
                                                       "config": {"units": [1], "activation": "sigmoid"}}]),
                     "units"),
}
RAW_CASES = {
    "nested-100000-deep": (deep(100_000), "deeper"),
    "nested-in-a-layer": ('{"class_name": "Sequential", "config": {"layers": ' + deep(5000) + "}}", "deeper"),
    "not-json": ("{not json", "not valid JSON"),
    "not-utf8": (b'{"class_name": "\xff\xfe"}', "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES) + sorted(RAW_CASES))
@pytest.mark.parametrize("kind", ["h5", "keras"])
def test_malformed_model_config_is_a_named_error(case, kind, tmp_path, capsys):
    if case in CONFIG_CASES:
        config, word = CONFIG_CASES[case]
        raw = json.dumps(config)
    else:
        raw, word = RAW_CASES[case]
    if kind == "h5":
        source = write_h5(tmp_path / "bad.h5", raw_config=np.void(raw) if isinstance(raw, bytes) else raw)
    else:
        source = write_keras(tmp_path / "bad.keras", raw if isinstance(raw, bytes) else raw.encode(), tmp=tmp_path)
    status, text = import_keras(capsys, source, tmp_path)
    assert status == 2 and str(source) in text and word.lower() in text.lower(), text
    assert not (tmp_path / "out.npz").exists()


DATASET_CASES = {   # layer -> declared (shape, dtype) of its kernel, never written
    "kernel-3GB": ((9, 9, 1, 5_000_000), "f8"),
    "kernel-40TB": ((9, 9, 1, 60_000_000_000), "f8"),
    "kernel-of-strings": ((9, 9, 1, 6), h5py.string_dtype()),
    "kernel-wrong-shape": ((9, 9, 1, 7), "f4"),
}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_declared_weight_shapes_are_checked_before_reading(case, tmp_path, capsys):
    import resource
    weights = paper_weights(np.random.default_rng(0))
    weights["conv2d"][0] = DATASET_CASES[case]
    source = write_h5(tmp_path / "bad.h5", weights=weights)
    assert source.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, text = import_keras(capsys, source, tmp_path)
    assert status == 2 and str(source) in text, text
    assert "conv2d" in text or "conv1" in text
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000    # KiB: under 200 MB


def test_a_zip_bomb_keras_is_refused_from_its_declared_sizes(tmp_path, capsys):
    source = tmp_path / "bomb.keras"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("config.json", json.dumps(sequential(paper_layers())))
        with z.open("model.weights.h5", "w", force_zip64=True) as member:
            block = bytes(2**20)
            for _ in range(300):                # 300 MB of zeros, about 300 KB compressed
                member.write(block)
    assert source.stat().st_size < 3_000_000
    status, text = import_keras(capsys, source, tmp_path)
    assert status == 2 and str(source) in text and "model.weights.h5" in text and "zip bomb" in text, text


def test_a_huge_config_json_is_refused(tmp_path, capsys):
    source = write_keras(tmp_path / "big.keras", b" " * (5 * 2**20) + b"{}", tmp=tmp_path)
    status, text = import_keras(capsys, source, tmp_path)
    assert status == 2 and str(source) in text and "config.json" in text, text


SAFETENSORS_CASES = {"arch-a-string": "resnet50", "channels-strings": {"channels": ["a", "b"], "kernel_size": 9},
                     "kernel-negative": {"channels": [6, 16], "kernel_size": -1},
                     "p-drop-nan": {"channels": [6, 16], "kernel_size": 9, "p_drop": float("nan")}}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_safetensors_with_odd_metadata_is_a_named_error(case, tmp_path, capsys):
    st = pytest.importorskip("safetensors.numpy")
    from shallowcnn.interop.torch_twin import METADATA_KEY, to_state_dict
    from shallowcnn.model import ShallowCNN
    source = tmp_path / f"{case}.safetensors"
    info = {"architecture": SAFETENSORS_CASES[case]}
    source.write_bytes(st.save(to_state_dict(ShallowCNN(seed=0)), metadata={METADATA_KEY: json.dumps(info)}))
    status, text = import_keras(capsys, source, tmp_path)
    assert status == 2 and str(source) in text and "architecture" in text, text
