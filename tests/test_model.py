"""The whole network: size, gradients, training, save and load."""
import json
import zipfile

import numpy as np
import pytest

from shallowcnn.gradcheck import KINK_BOUND, check_model
from shallowcnn.model import ShallowCNN
from shallowcnn.storage import StoreError, save_npz
from shallowcnn.train import fit


def test_parameter_count_and_summary():
    model = ShallowCNN()
    assert model.n_params() == 8301
    sizes = {k: v.size for k, v in model.params.items()}
    assert sizes["conv1.W"] + sizes["conv1.b"] == 492
    assert sizes["conv2.W"] + sizes["conv2.b"] == 7792
    assert sizes["dense.W"] + sizes["dense.b"] == 17
    text = model.summary()
    for figure in ("492", "7,792", "17", "8,301", "(N, 16, 128, 128)", "(N, 6, 136, 136)"):
        assert figure in text


def test_parameters_by_name_are_the_layers_arrays():
    model = ShallowCNN()
    assert set(model.params) == {"conv1.W", "conv1.b", "conv2.W", "conv2.b", "dense.W", "dense.b"}
    assert model.params["conv1.W"].shape == (6, 1, 9, 9) and model.params["dense.W"].shape == (16, 1)
    model.params["dense.b"][...] = 3.0
    assert model.dense.params["b"][0] == 3.0
    with pytest.raises(ValueError, match="shape"):
        model.set_params({"dense.W": np.zeros((1, 16))})
    with pytest.raises(KeyError):
        model.set_params({"conv3.W": np.zeros(1)})


def test_seeded_initialisation():
    a, b, c = ShallowCNN(seed=1), ShallowCNN(seed=1), ShallowCNN(seed=2)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["conv2.W"], c.params["conv2.W"])
    assert not any(a.params[k].any() for k in ("conv1.b", "conv2.b", "dense.b"))


def test_any_input_of_at_least_17_pixels():
    model = ShallowCNN()
    rng = np.random.default_rng(0)
    for shape in [(2, 1, 17, 17), (1, 1, 60, 60), (1, 1, 31, 50), (3, 17, 20)]:
        p = model.predict_proba(rng.random(shape, dtype=np.float32))
        assert p.shape == (shape[0],) and np.all((p > 0) & (p < 1))
    with pytest.raises(ValueError, match="smaller than the 17x17"):
        model.forward(np.zeros((1, 1, 16, 40), np.float32))
    with pytest.raises(ValueError, match="expected input"):
        model.forward(np.zeros((1, 2, 20, 20), np.float32))


def test_uint8_input_is_scaled_by_255():
    model = ShallowCNN()
    img = np.random.default_rng(0).integers(0, 256, (2, 1, 20, 20), dtype=np.uint8)
    np.testing.assert_allclose(model.predict_proba(img), model.predict_proba(img.astype(np.float32) / 255), rtol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_whole_model_gradient_check(fused):
    model = ShallowCNN(dtype=np.float64, seed=3, fused=fused)
    model.params["conv1.b"][...] = 0.01
    rng = np.random.default_rng(3)
    errors = check_model(model, rng.random((2, 1, 20, 19)), np.array([1.0, 0.0]), seed=3, max_entries=25)
    assert max(errors.values()) < KINK_BOUND, errors


def test_fused_and_textbook_models_agree():
    rng = np.random.default_rng(4)
    x = rng.random((3, 1, 26, 24))
    dense, fused = ShallowCNN(dtype=np.float64, fused=False), ShallowCNN(dtype=np.float64, fused=True)
    np.testing.assert_allclose(fused.forward(x, training=True), dense.forward(x, training=True), rtol=1e-12)
    d = rng.standard_normal(3)
    dense.backward(d)
    fused.backward(d)
    for k in dense.grads:
        np.testing.assert_allclose(fused.grads[k], dense.grads[k], rtol=1e-10, atol=1e-14)


def test_overfits_32_random_patches():
    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 32, 32)).astype(np.float32)
    y = np.r_[np.zeros(16), np.ones(16)].astype(np.float32)
    model = ShallowCNN(seed=0)
    history = fit(model, x, y, epochs=20, batch_size=8, lr=3e-3, seed=0, verbose=False)
    assert history["loss"][-1] < history["loss"][0]
    assert np.array_equal(model.predict(x), y.astype(np.uint8))


def test_fit_is_reproducible_and_reports_validation():
    rng = np.random.default_rng(1)
    x = rng.random((12, 1, 20, 20)).astype(np.float32)
    y = (np.arange(12) % 2).astype(np.float32)
    runs = []
    for _ in range(2):
        model = ShallowCNN(seed=5)
        h = fit(model, x, y, epochs=2, batch_size=5, seed=9, x_val=x[:4], y_val=y[:4], verbose=False)
        runs.append((model, h))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):          # all but the timings
        assert runs[0][1][key] == runs[1][1][key]
    assert len(runs[0][1]["val_accuracy"]) == 2
    assert all(np.array_equal(runs[0][0].params[k], runs[1][0].params[k]) for k in runs[0][0].params)


def test_save_load_round_trip_bit_exact(tmp_path):
    model = ShallowCNN(seed=11)
    for k, v in model.params.items():
        v[...] = np.random.default_rng(len(k)).standard_normal(v.shape)
    path = model.save(tmp_path / "model.npz", metadata={"training": {"epochs": 3}})
    with zipfile.ZipFile(path) as z:                               # a plain npz, no pickle inside
        assert all(name.endswith(".npy") for name in z.namelist())
    loaded = ShallowCNN.load(path)
    for k in model.params:
        assert loaded.params[k].dtype == model.params[k].dtype
        assert np.array_equal(loaded.params[k], model.params[k])
    assert loaded.metadata["training"] == {"epochs": 3}
    assert loaded.metadata["architecture"]["n_params"] == 8301
    x = np.random.default_rng(0).random((2, 1, 30, 30), dtype=np.float32)
    assert np.array_equal(loaded.forward(x), model.forward(x))
    assert not list(tmp_path.glob(".*.tmp"))                      # atomic write left no temporary file


def test_bad_model_files_are_refused(tmp_path):
    good = ShallowCNN().save(tmp_path / "good.npz")
    with pytest.raises(StoreError, match="no such file"):
        ShallowCNN.load(tmp_path / "missing.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(StoreError, match="truncated.npz"):
        ShallowCNN.load(truncated)
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(StoreError, match="not a readable .npz"):
        ShallowCNN.load(text)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(StoreError, match="not a shallowcnn file"):
        ShallowCNN.load(foreign)
    other_kind = save_npz(tmp_path / "patches.npz", {"x": np.zeros(2)}, {"kind": "shallowcnn.patches"})
    with pytest.raises(StoreError, match="expected 'shallowcnn.model'"):
        ShallowCNN.load(other_kind)
    wrong_shape = tmp_path / "wrong.npz"
    arrays = {k: v for k, v in ShallowCNN().params.items()}
    arrays["conv2.W"] = np.zeros((16, 6, 5, 5), np.float32)
    meta = json.loads(json.dumps({"kind": "shallowcnn.model", "seed": 0, "architecture": ShallowCNN().architecture()}))
    save_npz(wrong_shape, arrays, meta)
    with pytest.raises(StoreError, match="conv2.W has shape"):
        ShallowCNN.load(wrong_shape)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        ShallowCNN(backend="tpu")


def test_gradcheck_command_passes(capsys):
    from shallowcnn.cli import main
    assert main(["gradcheck", "--entries", "10"]) == 0
    out = capsys.readouterr().out
    for name in ("conv1.W", "conv2.b", "dense.W", "Dropout", "BinaryCrossEntropy (fused, logits)"):
        assert name in out
    assert "0 failed" in out
