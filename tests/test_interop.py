"""Interoperation: ONNX export (run in onnxruntime), the PyTorch twin's state_dict, Keras import.

The references are our own model's ``predict_proba`` (and, for the whole-image heatmap, the
same on every window cut out of the image), Keras' own ``predict`` and PyTorch's forward.
Each test needing an optional package skips, saying which, when it is absent.
"""
from __future__ import annotations

import importlib.util
import json
import zipfile

import numpy as np
import pytest

from shallowcnn.cli import main
from shallowcnn.constants import pixels_to_input
from shallowcnn.model import ShallowCNN
from shallowcnn.scan import scan_patchwise, window_starts

try:
    from shallowcnn.kernels import get_backend
    get_backend("numba")
    FAST = "numba"      # references over hundreds of windows; tests/test_model.py checks numba = numpy
except Exception:  # pragma: no cover - numba is optional for these tests
    FAST = "numpy"

ATOL = 1e-5


def random_model(backend="numpy", seed=3, **kwargs):
    """Glorot weights plus random biases (zero biases would hide bias bugs) and a dense
    layer strong enough that probabilities spread well away from 0.5."""
    model = ShallowCNN(backend=backend, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    c1, c2 = model.channels
    model.params["conv1.b"][:] = rng.normal(0, 0.1, c1)
    model.params["conv2.b"][:] = rng.normal(0, 0.1, c2)
    model.params["dense.W"][:] *= 4
    model.params["dense.b"][:] = -0.3
    return model


def pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def patches(n, seed=0):
    """n noise patches 144 x 144 of rising contrast, so that their probabilities differ."""
    contrast = np.linspace(0.2, 1.0, n)[:, None, None]
    return (pixels((n, 144, 144), seed) * contrast).astype(np.uint8)


def as_input(u8):
    """What the exported graph takes: (N, 1, H, W) float32 pixels / 255, as predict_proba scales."""
    return pixels_to_input(u8[:, None] if u8.ndim == 3 else u8[None, None])


def need_onnx():
    """Skip unless both onnx (to export) and onnxruntime (to run) are installed."""
    for name in ("onnx", "onnxruntime"):
        pytest.importorskip(name, reason=f"{name} not installed (pip install \".[interop]\")")


def run_onnx(path_or_bytes, x):
    import onnxruntime as ort
    source = str(path_or_bytes) if not isinstance(path_or_bytes, bytes) else path_or_bytes
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """``(path, model)``: a random model saved as model.npz."""
    model = random_model()
    path = tmp_path_factory.mktemp("model") / "model.npz"
    model.save(path)
    return path, model


# ------------------------------------------------------------------ ONNX

def test_onnx_graph_is_the_standard_one():
    onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install \".[interop]\")")
    from shallowcnn.interop.onnx_export import DEFAULT_OPSET, model_to_onnx
    graph_model = model_to_onnx(random_model(), source="test")
    onnx.checker.check_model(graph_model, full_check=True)
    assert [n.op_type for n in graph_model.graph.node] == [
        "Conv", "Relu", "Conv", "Relu", "GlobalMaxPool", "Flatten", "Gemm", "Sigmoid"]
    assert graph_model.opset_import[0].version == DEFAULT_OPSET == 13
    dims = [d.dim_param for d in graph_model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]          # dynamic N, H, W; one channel
    props = {p.key: p.value for p in graph_model.metadata_props}
    assert props["source"] == "test" and json.loads(props["architecture"])["channels"] == [6, 16]


def test_onnx_patches_equal_predict_proba(saved_model, tmp_path):
    need_onnx()
    path, model = saved_model
    out = tmp_path / "model.onnx"
    assert main(["export", str(path), "-o", str(out)]) == 0
    x = patches(5)
    expected = model.predict_proba(x)
    assert np.ptp(expected) > 0.05                     # a test that can tell patches apart
    got = run_onnx(out, as_input(x))
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got[:, 0], expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(run_onnx(out, as_input(x[2:3]))[:, 0], expected[2:3], rtol=0, atol=ATOL)


def test_onnx_whole_image_probability_and_heatmap(saved_model, tmp_path):
    need_onnx()
    path, model = saved_model
    image = pixels((400, 600), seed=1)
    fast = random_model(FAST)
    # The patch graph on the whole image: one probability, the max over all positions.
    assert main(["export", str(path), "-o", str(tmp_path / "m.onnx")]) == 0
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", as_input(image))[:, 0],
                               fast.predict_proba(image[None]), rtol=0, atol=ATOL)
    # The heatmap graph: predict_proba of every 144 x 144 window cut out of the image.
    for stride in (16, 40):          # 40 does not divide 128: blocks of gcd(40, 128) = 8
        heatmap = tmp_path / f"heatmap{stride}.onnx"
        assert main(["export", str(path), "-o", str(heatmap), "--heatmap", "--stride", str(stride)]) == 0
        got = run_onnx(heatmap, as_input(image))
        assert got.shape == (1, 1, len(window_starts(400, stride)), len(window_starts(600, stride)))
        expected = scan_patchwise(fast, image, stride=stride, batch_size=64)
        np.testing.assert_allclose(got[0, 0], expected, rtol=0, atol=ATOL)
    # Two images in one batch, and a window checked by hand on the numpy model.
    two = np.stack([image, image[::-1, ::-1]])
    got = run_onnx(heatmap, as_input(two))
    assert got[1, 0, 2, 3] == pytest.approx(model.predict_proba(two[1:2, 80:224, 120:264])[0], abs=ATOL)


def test_export_small_network_and_float64(tmp_path):
    need_onnx()
    from shallowcnn.interop.onnx_export import export_onnx
    model = random_model(channels=(2, 3), kernel_size=5, dtype=np.float64)
    export_onnx(model, tmp_path / "small.onnx")
    x = pixels((3, 40, 52))
    np.testing.assert_allclose(run_onnx(tmp_path / "small.onnx", as_input(x))[:, 0],
                               model.predict_proba(x), rtol=0, atol=ATOL)


# ------------------------------------------------------------------ PyTorch twin

def test_torch_state_dict_round_trip_is_bit_identical(saved_model, tmp_path):
    pytest.importorskip("safetensors", reason="safetensors not installed (pip install \".[interop]\")")
    path, model = saved_model
    exported = tmp_path / "model.safetensors"
    assert main(["export", str(path), "-o", str(exported), "--format", "torch"]) == 0
    assert main(["import-keras", str(exported), "-o", str(tmp_path / "back.npz")]) == 0
    back = ShallowCNN.load(tmp_path / "back.npz")
    for name, value in model.params.items():
        assert back.params[name].dtype == value.dtype
        assert np.array_equal(back.params[name], value), name
    assert back.metadata["imported_from"]["framework"] == "torch"
    # The file holds the twin's layouts: nn.Linear's weight is (out, in).
    from safetensors.numpy import load_file
    state = load_file(exported)
    assert state["dense.weight"].shape == (1, 16) and np.array_equal(state["dense.weight"], model.params["dense.W"].T)
    assert np.array_equal(state["conv2.weight"], model.params["conv2.W"])


def test_torch_twin_computes_what_we_compute(saved_model, tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed (pip install torch)")
    pytest.importorskip("safetensors", reason="safetensors not installed (pip install \".[interop]\")")
    from safetensors.torch import load_file
    from shallowcnn.interop.torch_twin import export_state_dict, import_state_dict, twin_class
    _, model = saved_model
    export_state_dict(model, tmp_path / "twin.safetensors")
    net = twin_class()()                       # the paper's shape, fresh weights
    net.load_state_dict(load_file(tmp_path / "twin.safetensors"))
    x = patches(4, seed=2)
    got = net.predict_proba(torch.from_numpy(as_input(x))).numpy()
    np.testing.assert_allclose(got, model.predict_proba(x), rtol=0, atol=ATOL)
    # A state_dict saved the PyTorch way (torch.save) imports too.
    torch.save(net.state_dict(), tmp_path / "twin.pt")
    back = import_state_dict(tmp_path / "twin.pt")
    assert all(np.array_equal(back.params[n], v) for n, v in model.params.items())


# ------------------------------------------------------------------ Keras

def keras_module(monkeypatch, home):
    """Keras 3 with the lightest backend present (KERAS_BACKEND is read on first import;
    KERAS_HOME keeps the keras.json it writes out of the user's home)."""
    for backend in ("jax", "tensorflow", "torch"):
        if importlib.util.find_spec(backend) is not None:
            break
    else:
        pytest.skip("Keras needs a backend: pip install \"jax[cpu]\"")
    monkeypatch.setenv("KERAS_BACKEND", backend)
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    keras = pytest.importorskip("keras", reason="keras not installed (pip install keras)")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip(f"Keras 3 needed, found {keras.__version__}")
    return keras


def paper_sequential(keras, layers=None, input_shape=(None, None, 1)):
    """The paper's network as its authors wrote it, with non-zero biases."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input(input_shape)] + (layers or [
        keras.layers.Conv2D(6, 9, activation="relu"),
        keras.layers.Conv2D(16, 9, activation="relu"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(1, activation="sigmoid")]))
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * (4 if kernel.ndim == 2 else 1), rng.normal(0, 0.1, bias.shape)])
    return model


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """The paper's Sequential saved by Keras as .keras and legacy .h5, and its predictions."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        folder = tmp_path_factory.mktemp("keras")
        keras = keras_module(monkeypatch, folder / "keras_home")
        model = paper_sequential(keras)
        model.save(folder / "paper.keras")
        model.save(folder / "paper.h5")
        model.save_weights(folder / "paper.weights.h5")
        x = patches(4, seed=4)
        expected = np.asarray(model.predict(as_input(x).transpose(0, 2, 3, 1), verbose=0))[:, 0]
        other = paper_sequential(keras, [keras.layers.Conv2D(6, 9, activation="relu", padding="same"),
                                         keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                                         keras.layers.Dense(1, activation="sigmoid")], (144, 144, 1))
        other.save(folder / "other.keras")
        yield folder, x, expected
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("name", ["paper.keras", "paper.h5"])
def test_keras_model_imports_and_predicts_the_same(keras_files, tmp_path, name):
    folder, x, expected = keras_files
    assert np.ptp(expected) > 0.05
    out = tmp_path / "model.npz"
    assert main(["import-keras", str(folder / name), "-o", str(out)]) == 0
    model = ShallowCNN.load(out, backend=FAST)
    np.testing.assert_allclose(model.predict_proba(x), expected, rtol=0, atol=ATOL)
    source = model.metadata["imported_from"]
    assert source["framework"] == "keras" and source["file"].endswith(name) and len(source["sha256"]) == 64
    assert source["layers"] == ["Conv2D 6 9x9 relu", "Conv2D 16 9x9 relu", "GlobalMaxPooling2D",
                                "Dropout 0.2", "Dense 1 sigmoid"]
    assert model.p_drop == pytest.approx(0.2)


def test_keras_wrong_architecture_lists_the_layers(keras_files, tmp_path, capsys):
    folder, _, _ = keras_files
    assert main(["import-keras", str(folder / "other.keras"), "-o", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "other.keras: not the paper's network" in err
    assert "found 4 layers: Conv2D 6 9x9 relu padding=same, MaxPooling2D, Flatten, Dense 1 sigmoid" in err
    assert "Traceback" not in err and not (tmp_path / "m.npz").exists()
    assert main(["import-keras", str(folder / "paper.weights.h5"), "-o", str(tmp_path / "m.npz")]) == 2
    assert "weights only" in capsys.readouterr().err


def hdf5_and_zip(folder):
    """A small HDF5 file and a zip holding config.json + model.weights.h5, made with h5py."""
    h5py = pytest.importorskip("h5py", reason="h5py not installed (pip install \".[interop]\")")
    with h5py.File(folder / "some.h5", "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
        f.create_dataset("model_weights/conv2d/kernel", data=np.ones((9, 9, 1, 6), np.float32))
    with zipfile.ZipFile(folder / "some.keras", "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
        z.writestr("model.weights.h5", (folder / "some.h5").read_bytes())
    return folder / "some.h5", folder / "some.keras"


def test_bad_files_give_clear_messages(tmp_path, capsys):
    cases = {}
    for path in hdf5_and_zip(tmp_path):                      # cut in half
        data = path.read_bytes()
        (tmp_path / f"cut_{path.name}").write_bytes(data[:len(data) // 2])
        cases[f"cut_{path.name}"] = "damaged or truncated Keras file"
    (tmp_path / "text.h5").write_text("this is not HDF5\n")
    cases["text.h5"] = "not a Keras model (neither a .keras zip archive nor an HDF5 .h5 file)"
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as z:
        z.writestr("readme.txt", "hello")
    cases["other.keras"] = "a zip archive without config.json"
    if importlib.util.find_spec("safetensors") is not None:
        (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 5)
        cases["junk.safetensors"] = "not a readable .safetensors file"
    cases["missing.keras"] = "no such file"
    for name, message in cases.items():
        assert main(["import-keras", str(tmp_path / name), "-o", str(tmp_path / "m.npz")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"shallowcnn import-keras: error: {tmp_path / name}: {message}"), err
        assert "Traceback" not in err
    assert not (tmp_path / "m.npz").exists()


def test_truncated_keras_files(keras_files, tmp_path, capsys):
    folder, _, _ = keras_files
    for name in ("paper.keras", "paper.h5"):
        data = (folder / name).read_bytes()
        for cut in (len(data) // 2, len(data) - 100):
            (tmp_path / name).write_bytes(data[:cut])
            assert main(["import-keras", str(tmp_path / name), "-o", str(tmp_path / "m.npz")]) == 2
            err = capsys.readouterr().err
            expected = f"shallowcnn import-keras: error: {tmp_path / name}: damaged or truncated Keras file"
            assert err.startswith(expected), err


def test_export_bad_input_and_options(tmp_path, capsys):
    (tmp_path / "junk.npz").write_text("not a model")
    assert main(["export", str(tmp_path / "junk.npz"), "-o", str(tmp_path / "m.onnx")]) == 2
    assert f"{tmp_path / 'junk.npz'}: not a readable .npz" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "junk.npz"), "-o", str(tmp_path / "m.pt"), "--format", "torch",
                 "--heatmap"]) == 2
    assert "--heatmap applies to --format onnx only" in capsys.readouterr().err
    model_path = tmp_path / "model.npz"
    random_model().save(model_path)
    assert main(["export", str(model_path), "-o", str(tmp_path / "m.pt"), "--format", "torch"]) == 2
    assert "--format torch writes a .safetensors file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:            # refused when the command line is read
        main(["export", str(model_path), "-o", str(tmp_path / "m.onnx"), "--heatmap", "--stride", "0"])
    assert stop.value.code == 2
    assert "argument --stride: must be a whole number of at least 1" in capsys.readouterr().err
    if importlib.util.find_spec("onnx") is not None:
        assert main(["export", str(model_path), "-o", str(tmp_path / "m.onnx"), "--opset", "9"]) == 2
        assert "opset must be between 13 and" in capsys.readouterr().err
    assert not any(p.suffix in (".onnx", ".pt") for p in tmp_path.iterdir())


def test_missing_package_says_how_to_install(monkeypatch):
    import sys
    from shallowcnn.interop import MissingPackageError
    from shallowcnn.interop.onnx_export import model_to_onnx
    monkeypatch.setitem(sys.modules, "onnx", None)           # "import onnx" now fails
    with pytest.raises(MissingPackageError, match=r"Exporting to ONNX needs the 'onnx' package.*"
                                                  r'pip install "\.\[interop\]"'):
        model_to_onnx(random_model())
