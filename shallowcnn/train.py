"""Training: mini-batches, shuffling, Adam, validation, checkpoints and resume.

One step, the heart of it all::

    logits = model.forward(xb, training=True)     # dropout on
    loss   = bce.forward(logits, yb)              # sigmoid fused into the loss
    model.backward(bce.backward())                # fills model.grads
    adam.step(model.grads)                        # updates model.params in place

Around it, :class:`Trainer` runs epochs (a new order of the samples each time,
drawn from the seed), validates after each one, keeps the epoch with the best
validation accuracy (the paper's rule), and -- given a run folder -- writes a
checkpoint after every epoch from which ``resume`` continues bit for bit as if
never interrupted (what a checkpoint holds, and the checks on reading one back:
:mod:`shallowcnn.checkpoint`). :func:`fit` is the short form for arrays in memory;
:func:`train_run` is what ``shallowcnn train`` calls.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import (CHECKPOINT_KIND, HISTORY_COLUMNS, history_to_csv, pixels_checksum, read_checkpoint,
                         store_fingerprint)
from .layers import sigmoid
from .losses import BinaryCrossEntropyWithLogits
from .model import ShallowCNN
from .optim import Adam
from .recipe import PAPER
from .storage import atomic_write_text, check_writable_dir, save_npz



class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


class StopOnCtrlC:
    """Ctrl-C during training sets a flag that the loop checks between batches.

    Python runs a signal handler only between bytecodes, so a KeyboardInterrupt raised
    by the default handler can surface inside a Numba kernel's dispatcher, which turns it
    into ``SystemError: ... returned a result with an exception set``. Here the handler
    only records the request; :meth:`check`, called by the loop between batches, raises
    a clean KeyboardInterrupt. A second Ctrl-C stops at once. Outside the main thread
    (where signals cannot be handled) this does nothing.

        with StopOnCtrlC() as stop:
            for batch in batches:
                step(batch)
                stop.check()
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self):
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


@dataclass
class TrainConfig:
    """The paper's recipe by default (:data:`shallowcnn.recipe.PAPER`)."""
    epochs: int = PAPER.epochs
    batch_size: int = PAPER.batch_size
    lr: float = PAPER.lr
    beta1: float = PAPER.beta1
    beta2: float = PAPER.beta2
    eps: float = PAPER.eps
    p_drop: float = PAPER.p_drop
    seed: int = 0
    backend: str = "auto"

    def check(self):
        """Raise ValueError naming the first setting out of its range."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        for name in ("lr", "eps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        for name in ("beta1", "beta2", "p_drop"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed}")


def train_step(model, optimizer, xb, yb, loss_fn=None):
    """One forward + backward + Adam step on a batch; returns (loss, logits)."""
    loss_fn = loss_fn or BinaryCrossEntropyWithLogits()
    logits = model.forward(xb, training=True)
    loss = loss_fn.forward(logits, np.asarray(yb, dtype=logits.dtype))
    model.backward(loss_fn.backward())
    optimizer.step(model.grads)
    return loss, logits


def evaluate_arrays(model, x, y, batch_size=64):
    """Mean loss and accuracy (threshold 0.5) of ``model`` on (x, y), no dropout."""
    loss_fn = BinaryCrossEntropyWithLogits()
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model.forward(x[i:i + batch_size])
        yb = np.asarray(y[i:i + batch_size], dtype=logits.dtype)
        total_loss += loss_fn.forward(logits, yb) * len(yb)
        correct += int(np.sum((sigmoid(logits) >= 0.5) == (yb >= 0.5)))
    n = max(len(x), 1)
    return total_loss / n, correct / n


class Trainer:
    """Epoch loop with validation, best-epoch selection and checkpoints.

    ``model``: a :class:`~shallowcnn.model.ShallowCNN`; ``config``: a
    :class:`TrainConfig`; ``run_dir``: where ``checkpoint.npz`` (after every
    epoch), ``model.npz`` (best validation accuracy so far) and ``history.csv``
    go, or None to keep everything in memory.
    """

    def __init__(self, model, config: TrainConfig, run_dir=None, verbose=True, extra_metadata=None):
        config.check()
        self.model, self.config, self.verbose = model, config, verbose
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.extra_metadata = extra_metadata or {}
        self.optimizer = Adam(model.params, lr=config.lr, beta1=config.beta1, beta2=config.beta2, eps=config.eps)
        self.shuffle_rng = np.random.default_rng([config.seed, 2])
        self.history = {k: [] for k in HISTORY_COLUMNS}
        self.best = {"epoch": 0, "val_accuracy": -1.0}
        self.best_params = None
        self.loss_fn = BinaryCrossEntropyWithLogits()
        self.stop = StopOnCtrlC()   # replaced by the active one while fit() runs

    def _kept(self) -> str:
        """What survives a stop: the checkpoint, if one was written."""
        if self.run_dir is not None and (self.run_dir / "checkpoint.npz").exists():
            return f"The checkpoint of the last finished epoch is kept in {self.run_dir}."
        return "No epoch finished, so there is no checkpoint."

    def check_weights_finite(self, epoch) -> None:
        """Refuse to go on (or save) with NaN or infinite weights."""
        bad = [name for name, value in self.model.params.items() if not np.all(np.isfinite(value))]
        if bad:
            raise TrainingDiverged(f"weights {', '.join(bad)} became NaN or infinite in epoch {epoch}; "
                                   f"try a smaller learning rate (lr now {self.config.lr}). {self._kept()}")

    # ----------------------------------------------------------- one epoch
    def run_epoch(self, x, y, epoch):
        """Train over (x, y) once; returns (mean loss, accuracy) with dropout on."""
        cfg = self.config
        order = self.shuffle_rng.permutation(len(x))
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(0, len(x), cfg.batch_size), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=None if self.verbose else True, leave=False, file=sys.stderr, dynamic_ncols=True)
        for start in bar:
            idx = np.sort(order[start:start + cfg.batch_size])   # sorted: cache-friendly gathers
            yb = y[idx]
            loss, logits = train_step(self.model, self.optimizer, x[idx], yb, self.loss_fn)
            if not math.isfinite(loss):
                bar.close()
                raise TrainingDiverged(f"loss became {loss} at epoch {epoch}, batch {start // cfg.batch_size + 1}; "
                                       f"try a smaller learning rate (lr now {cfg.lr}). {self._kept()}")
            self.stop.check()
            seen += len(idx)
            loss_sum += loss * len(idx)
            correct += int(np.sum((logits >= 0) == (yb >= 0.5)))
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        return loss_sum / seen, correct / seen

    # -------------------------------------------------------------- epochs
    def fit(self, x, y, x_val=None, y_val=None):
        """Train until ``config.epochs``; returns the history (dict of lists).

        Starts after the last epoch already in the history (after :meth:`resume`).
        On Ctrl-C the epoch in progress is dropped, the last checkpoint stays, and
        KeyboardInterrupt propagates so a caller can report it.
        """
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise ValueError("no training samples")
        if (x_val is None) != (y_val is None):
            raise ValueError("give both x_val and y_val, or neither")
        for name, values in (("x", x), ("x_val", x_val)):
            # in slices of 1024 samples: a bool copy of a whole store would double its memory
            if values is not None and not all(np.isfinite(values[i:i + 1024]).all()
                                              for i in range(0, len(values), 1024)):
                raise ValueError(f"{name} holds NaN or infinite values")
        for name, labels in (("y", y), ("y_val", y_val)):
            if labels is not None and not np.all((labels == 0) | (labels == 1)):
                raise ValueError(f"{name}: labels must be 0 or 1")
        has_val = x_val is not None and len(x_val) > 0
        first = len(self.history["epoch"]) + 1
        with StopOnCtrlC() as self.stop:
            for epoch in range(first, self.config.epochs + 1):
                self._one_epoch(x, y, x_val, y_val, has_val, epoch)
        return self.history

    def _one_epoch(self, x, y, x_val, y_val, has_val, epoch):
        """Train, validate, keep the best, print, checkpoint: one epoch of :meth:`fit`."""
        t0 = time.perf_counter()
        loss, acc = self.run_epoch(x, y, epoch)
        self.check_weights_finite(epoch)
        val_loss, val_acc = evaluate_arrays(self.model, x_val, y_val, self.config.batch_size) if has_val \
            else (float("nan"), float("nan"))
        self.stop.check()
        seconds = time.perf_counter() - t0
        for k, v in zip(HISTORY_COLUMNS, (epoch, loss, acc, val_loss, val_acc, seconds)):
            self.history[k].append(v)
        # The paper keeps the epoch with the highest validation accuracy (the
        # first such epoch on ties); without validation, the last epoch.
        score = val_acc if has_val else float(epoch)
        improved = score > self.best["val_accuracy"]
        if improved:
            self.best = {"epoch": epoch, "val_accuracy": score}
            self.best_params = {k: v.copy() for k, v in self.model.params.items()}
        if self.verbose:
            line = f"epoch {epoch:3d}/{self.config.epochs}  loss {loss:.4f}  acc {acc:.4f}"
            if has_val:
                line += f"  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}"
            print(line + f"  {seconds:.1f}s" + ("  *best" if improved and has_val else ""), flush=True)
        if self.run_dir is not None:
            self.save_checkpoint(improved)

    # --------------------------------------------------------- checkpoints
    def _metadata(self):
        return {"kind": CHECKPOINT_KIND, "version": __version__, "config": asdict(self.config),
                "architecture": self.model.architecture(), "history": self.history, "best": self.best,
                "shuffle_rng": self.shuffle_rng.bit_generator.state,
                "dropout_rng": self.model.dropout.rng.bit_generator.state, **self.extra_metadata}

    def save_checkpoint(self, improved):
        """Write model.npz (if improved), history.csv, then checkpoint.npz, each atomically.

        The checkpoint goes last: a stop before it leaves the new model and history beside
        the previous checkpoint, and resuming re-runs that epoch, which (being seeded)
        finds and writes the same numbers again. :meth:`resume` also rewrites model.npz
        and history.csv from the checkpoint, so the files agree whichever write was lost
        (a kill between the checkpoint and the history of the last epoch used to leave
        history.csv without that epoch for good).
        """
        if improved:
            self.save_best(self.run_dir / "model.npz")
        arrays = {f"model.{k}": v for k, v in self.model.params.items()}
        arrays.update({f"best.{k}": v for k, v in self.best_params.items()})
        arrays.update(self.optimizer.state_dict())
        atomic_write_text(self.run_dir / "history.csv", history_to_csv(self.history))
        save_npz(self.run_dir / "checkpoint.npz", arrays, self._metadata())

    def save_best(self, path):
        """Save the best epoch's weights as a model file (what evaluate and scan load)."""
        best_model = ShallowCNN(backend="numpy", seed=self.config.seed, p_drop=self.config.p_drop,
                                channels=self.model.channels, kernel_size=self.model.kernel_size)
        best_model.set_params(self.best_params)
        return best_model.save(path, {"training": {"config": asdict(self.config), "best": self.best},
                                      **self.extra_metadata})

    def resume(self):
        """Restore model, Adam, random generators and history from checkpoint.npz, and
        rewrite model.npz from the checkpoint's best weights.

        Every part is checked first; a damaged or foreign checkpoint raises StoreError
        naming the file and what is wrong, and nothing is changed.
        """
        arrays, meta, shuffle_rng, dropout_rng = read_checkpoint(
            self.run_dir / "checkpoint.npz", self.model, self.config, self.extra_metadata.get("store_fingerprint"),
            self.extra_metadata.get("pixels_crc32"))
        history, best = meta["history"], meta["best"]
        # Everything checked: now change the trainer.
        self.model.set_params({k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")})
        self.best_params = {k[len("best."):]: v.astype(self.model.dtype) for k, v in arrays.items()
                            if k.startswith("best.")}
        self.optimizer.load_state_dict(arrays)
        self.shuffle_rng.bit_generator.state = shuffle_rng.bit_generator.state
        self.model.dropout.rng.bit_generator.state = dropout_rng.bit_generator.state
        self.history = {k: list(history[k]) for k in HISTORY_COLUMNS}
        self.best = dict(best)
        if self.best["epoch"] >= 1:
            self.save_best(self.run_dir / "model.npz")   # the model that goes with this checkpoint
        atomic_write_text(self.run_dir / "history.csv", history_to_csv(self.history))   # ... and its history
        for stale in self.run_dir.glob(".*.tmp"):        # a killed atomic write's temporary file
            if stale.name.split(".")[1] in ("checkpoint", "history", "model", "config", "curves"):
                stale.unlink(missing_ok=True)
        return len(self.history["epoch"])


def fit(model, x, y, epochs=10, batch_size=PAPER.batch_size, lr=PAPER.lr, seed=0, x_val=None, y_val=None,
        verbose=True):
    """Train ``model`` on x (N, 1, H, W), y (N,) in {0, 1}; returns the history.

    The short form of :class:`Trainer` for arrays in memory (no files written);
    the model keeps the weights of the last epoch. History keys: epoch, loss,
    accuracy, val_loss, val_accuracy (NaN without validation data), seconds.
    """
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, p_drop=model.p_drop,
                         backend=model.backend)
    return Trainer(model, config, verbose=verbose).fit(x, y, x_val, y_val)


# ------------------------------------------------------------------ the run

def train_run(store, run_dir, config: TrainConfig, resume=False, verbose=True):
    """Train on a :class:`~shallowcnn.data.patches.PatchStore` into ``run_dir``
    (:func:`~shallowcnn.data.patches.open_patches` opens a store file).

    Writes config.json, checkpoint.npz (every epoch), model.npz (best validation
    accuracy), history.csv and curves.png. Returns the :class:`Trainer`. Settings, the
    store and the output folder are all checked before the first batch.
    """
    from .plots import plot_training_curves      # matplotlib loads only when figures are drawn

    config.check()
    source = str(store.path) if store.path is not None else "in-memory store"
    x, y = store.arrays("train")
    x_val, y_val = store.arrays("val")
    if len(x) == 0:
        raise ValueError(f"{source}: the store has no training patches")
    run_dir = Path(run_dir)
    if not resume and (run_dir / "checkpoint.npz").exists():
        raise FileExistsError(f"{run_dir} already holds a run (checkpoint.npz): resume it or choose "
                              f"another folder")
    if resume and not (run_dir / "checkpoint.npz").exists():
        raise FileNotFoundError(f"{run_dir / 'checkpoint.npz'}: no checkpoint to resume from")
    check_writable_dir(run_dir)
    model = ShallowCNN(backend=config.backend, seed=config.seed, p_drop=config.p_drop)
    trainer = Trainer(model, config, run_dir, verbose,
                      extra_metadata={"patches": source, "store_fingerprint": store_fingerprint(store),
                                      "pixels_crc32": pixels_checksum(store)})
    if resume:
        done = trainer.resume()
        if verbose:
            print(f"resuming {run_dir} after epoch {done} (best epoch {trainer.best['epoch']})")
    else:
        atomic_write_text(run_dir / "config.json", json.dumps(
            {**asdict(config), "backend_used": model.backend, "patches": source,
             "n_train": int(len(x)), "n_val": int(len(x_val)), "version": __version__}, indent=2))
    if verbose:
        print(f"training on {len(x)} patches, validating on {len(x_val)}; backend {model.backend}; "
              f"{config.epochs} epochs of batch {config.batch_size}, lr {config.lr}")
    try:
        trainer.fit(x, y, x_val, y_val)
    finally:
        if trainer.history["epoch"]:
            plot_training_curves(trainer.history, run_dir / "curves.png")
    return trainer


# (option, TrainConfig field) of the options a resume must repeat

