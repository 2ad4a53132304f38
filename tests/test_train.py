"""The trainer: reproducible, resumable, safe when interrupted or diverging."""
import shutil
from pathlib import Path

import numpy as np
import pytest

import shallowcnn.train as train_module
from shallowcnn.model import ShallowCNN
from shallowcnn.storage import load_npz
from shallowcnn.train import TrainConfig, Trainer, TrainingDiverged


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((24, 1, 20, 20)).astype(np.float32)
    y = (np.arange(24) % 2).astype(np.float32)
    x[y == 1, 0, 8:11, 8:11] += 1.0                                 # a bright spot marks the positives
    return x[:18], y[:18], x[18:], y[18:]


def run(data, run_dir=None, epochs=3, seed=4):
    x, y, xv, yv = data
    config = TrainConfig(epochs=epochs, batch_size=5, lr=3e-3, seed=seed, backend="numpy")
    trainer = Trainer(ShallowCNN(backend="numpy", seed=seed), config, run_dir, verbose=False)
    trainer.fit(x, y, xv, yv)
    return trainer


def same_params(a, b):
    return all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_seeded_runs_are_bit_identical(data):
    a, b = run(data), run(data)
    assert same_params(a.model, b.model)
    assert a.history["loss"] == b.history["loss"] and a.history["val_accuracy"] == b.history["val_accuracy"]
    assert not same_params(a.model, run(data, seed=5).model)


def test_run_dir_files_and_best_epoch(data, tmp_path):
    trainer = run(data, tmp_path)
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == "epoch,loss,accuracy,val_loss,val_accuracy,seconds"
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 4
    best = trainer.best["epoch"]
    val = trainer.history["val_accuracy"]
    assert val[best - 1] == max(val) and best == val.index(max(val)) + 1   # first epoch with the best score
    saved = ShallowCNN.load(tmp_path / "model.npz")
    assert saved.metadata["training"]["best"]["epoch"] == best
    arrays, meta = load_npz(tmp_path / "checkpoint.npz", kind="shallowcnn.checkpoint")
    assert meta["history"]["epoch"] == [1, 2, 3] and int(arrays["adam.t"]) == 3 * 4   # 18 samples / 5 = 4 batches


def test_resume_equals_uninterrupted(data, tmp_path):
    full = run(data, tmp_path / "full", epochs=3)
    run(data, tmp_path / "part", epochs=2)
    x, y, xv, yv = data
    resumed = Trainer(ShallowCNN(backend="numpy", seed=4),
                      TrainConfig(epochs=3, batch_size=5, lr=3e-3, seed=4, backend="numpy"),
                      tmp_path / "part", verbose=False)
    assert resumed.resume() == 2
    resumed.fit(x, y, xv, yv)
    assert same_params(resumed.model, full.model)
    assert resumed.history["loss"] == full.history["loss"]
    a, b = ShallowCNN.load(tmp_path / "full" / "model.npz"), ShallowCNN.load(tmp_path / "part" / "model.npz")
    assert same_params(a, b)


def test_ctrl_c_keeps_last_checkpoint_and_resume_matches(data, tmp_path, monkeypatch):
    full = run(data, tmp_path / "full", epochs=3)
    real_step, calls = train_module.train_step, {"n": 0}

    def step_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:                                          # in epoch 3 (4 batches per epoch)
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)
    monkeypatch.setattr(train_module, "train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "cut", epochs=3)
    monkeypatch.setattr(train_module, "train_step", real_step)
    _, meta = load_npz(tmp_path / "cut" / "checkpoint.npz")
    assert meta["history"]["epoch"] == [1, 2]
    x, y, xv, yv = data
    resumed = Trainer(ShallowCNN(backend="numpy", seed=4),
                      TrainConfig(epochs=3, batch_size=5, lr=3e-3, seed=4, backend="numpy"),
                      tmp_path / "cut", verbose=False)
    resumed.resume()
    resumed.fit(x, y, xv, yv)
    assert same_params(resumed.model, full.model)


def test_divergence_stops_with_message_and_keeps_checkpoint(data, tmp_path, monkeypatch):
    real_step, calls = train_module.train_step, {"n": 0}

    def step_goes_nan(*args, **kwargs):
        calls["n"] += 1
        loss, logits = real_step(*args, **kwargs)
        return (float("nan") if calls["n"] >= 6 else loss), logits
    monkeypatch.setattr(train_module, "train_step", step_goes_nan)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, batch 2"):
        run(data, tmp_path, epochs=3)
    arrays, meta = load_npz(tmp_path / "checkpoint.npz")
    assert meta["history"]["epoch"] == [1]
    assert all(np.isfinite(v).all() for v in arrays.values())
    ShallowCNN.load(tmp_path / "model.npz")                           # the good model is still readable


def test_resume_with_other_settings_is_refused(data, tmp_path):
    run(data, tmp_path, epochs=1)
    trainer = Trainer(ShallowCNN(seed=4), TrainConfig(epochs=2, batch_size=7, lr=3e-3, seed=4, backend="numpy"),
                      tmp_path, verbose=False)
    with pytest.raises(ValueError, match="batch_size=5"):
        trainer.resume()


def test_bad_settings_are_refused(data):
    with pytest.raises(ValueError):
        TrainConfig(epochs=0).check()
    with pytest.raises(ValueError):
        TrainConfig(lr=-1).check()
    x, y, _, _ = data
    with pytest.raises(ValueError, match="18 samples but y has 3"):
        Trainer(ShallowCNN(), TrainConfig(epochs=1, backend="numpy"), verbose=False).fit(x, y[:3])


def resume_and_finish(data, run_dir, epochs):
    """Resume the run in ``run_dir`` (made by :func:`run`) and train it to ``epochs``."""
    x, y, xv, yv = data
    resumed = Trainer(ShallowCNN(backend="numpy", seed=4),
                      TrainConfig(epochs=epochs, batch_size=5, lr=3e-3, seed=4, backend="numpy"),
                      run_dir, verbose=False)
    resumed.resume()
    resumed.fit(x, y, xv, yv)
    return resumed


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def test_kill_between_model_and_checkpoint_writes_then_resume_matches(data, tmp_path, monkeypatch):
    full = run(data, tmp_path / "full", epochs=4)
    improved_after_first = [e for e in range(2, 5) if full.history["val_accuracy"][e - 1] >
                            max(full.history["val_accuracy"][:e - 1])]
    assert improved_after_first, "the data must give a best epoch after the first"
    kill_at = improved_after_first[0]
    real_save, epochs_written = train_module.save_npz, []

    def save_then_die(path, arrays, metadata, **kwargs):
        if Path(path).name == "checkpoint.npz" and len(metadata["history"]["epoch"]) == kill_at:
            raise Killed   # model.npz of this epoch is written, its checkpoint is not
        epochs_written.append(len(metadata.get("history", {}).get("epoch", [])))
        return real_save(path, arrays, metadata, **kwargs)
    monkeypatch.setattr(train_module, "save_npz", save_then_die)
    with pytest.raises(Killed):
        run(data, tmp_path / "cut", epochs=4)
    monkeypatch.setattr(train_module, "save_npz", real_save)
    _, meta = load_npz(tmp_path / "cut" / "checkpoint.npz")
    assert meta["history"]["epoch"] == list(range(1, kill_at))      # the killed epoch's checkpoint is missing
    resume_and_finish(data, tmp_path / "cut", epochs=4)
    assert same_params(ShallowCNN.load(tmp_path / "cut" / "model.npz"),
                       ShallowCNN.load(tmp_path / "full" / "model.npz"))


def test_stale_model_beside_a_newer_checkpoint_is_repaired_by_resume(data, tmp_path):
    """The state the old write order could leave: checkpoint of epoch b (best b), model of an
    earlier epoch. Resume rewrites model.npz from the checkpoint."""
    full = run(data, tmp_path / "full", epochs=4)
    best = full.best["epoch"]
    run(data, tmp_path / "first", epochs=1)
    run(data, tmp_path / "cut", epochs=best)
    shutil.copy(tmp_path / "first" / "model.npz", tmp_path / "cut" / "model.npz")
    resume_and_finish(data, tmp_path / "cut", epochs=4)
    assert same_params(ShallowCNN.load(tmp_path / "cut" / "model.npz"),
                       ShallowCNN.load(tmp_path / "full" / "model.npz"))


def test_non_finite_weights_stop_training_and_are_never_saved(data, tmp_path, monkeypatch):
    real_step, calls = train_module.train_step, {"n": 0}

    def step_breaks_weights(model, *args, **kwargs):
        calls["n"] += 1
        result = real_step(model, *args, **kwargs)
        if calls["n"] == 8:                  # the last batch of epoch 2: its loss stays finite
            model.params["conv1.b"][0] = np.inf
        return result
    monkeypatch.setattr(train_module, "train_step", step_breaks_weights)
    with pytest.raises(TrainingDiverged, match="conv1.b"):
        run(data, tmp_path, epochs=3)
    arrays, meta = load_npz(tmp_path / "checkpoint.npz")
    assert meta["history"]["epoch"] == [1]
    assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    model = ShallowCNN(seed=0)
    model.params["dense.b"][0] = np.nan
    with pytest.raises(ValueError, match="dense.b"):
        model.save(tmp_path / "nan_model.npz")
    assert not (tmp_path / "nan_model.npz").exists()


def test_nan_and_wrong_labels_are_refused_before_training(data):
    x, y, xv, yv = data
    trainer = Trainer(ShallowCNN(seed=4), TrainConfig(epochs=1, backend="numpy"), verbose=False)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        trainer.fit(x, np.where(y == 1, 7, 0), xv, yv)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        trainer.fit(x, np.full_like(y, np.nan), xv, yv)
    with pytest.raises(ValueError, match="eps"):
        TrainConfig(eps=0).check()
    with pytest.raises(ValueError, match="beta1"):
        TrainConfig(beta1=2).check()
