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
never interrupted. :func:`fit` is the short form for arrays in memory;
:func:`train_run` is what ``shallowcnn train`` calls.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shlex
import signal
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .data.patches import PatchError, open_patches
from .layers import sigmoid
from .losses import BinaryCrossEntropyWithLogits
from .model import ShallowCNN, check_weights
from .optim import Adam
from .options import fraction_below_one, non_negative_int, positive_float, positive_int
from .storage import OutputError, StoreError, atomic_write_text, check_writable_dir, load_npz, save_npz

CHECKPOINT_KIND = "shallowcnn.checkpoint"
CHECKPOINT_MAX_BYTES = 256 << 20   # per array of a checkpoint; the paper's holds ~130 KB
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


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


def store_fingerprint(store) -> str:
    """A short hash of what identifies a patch store (labels, splits, sources, shapes), so
    that ``--resume`` can tell that the store under a run changed."""
    digest = hashlib.sha256(str(store.patches.shape).encode())
    for name in ("labels", "split", "image", "position"):
        digest.update(np.ascontiguousarray(getattr(store, name)).tobytes())
    return digest.hexdigest()[:16]


def pixels_checksum(store) -> str:
    """CRC-32 of every pixel of the store (tens of milliseconds for thousands of patches):
    with :func:`store_fingerprint` it tells ``--resume`` that the images changed while the
    labels, split and positions did not (a store re-made with inverted or noisy pixels)."""
    return f"{zlib.crc32(np.ascontiguousarray(store.patches)):08x}"


@dataclass
class TrainConfig:
    """The paper's recipe by default (paper sections 3-4; docs/design.md, "The network")."""
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    p_drop: float = 0.2
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
                                   f"try a smaller --lr (now {self.config.lr}). {self._kept()}")

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
                                       f"try a smaller --lr (now {cfg.lr}). {self._kept()}")
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
        path = self.run_dir / "checkpoint.npz"
        arrays, meta = load_npz(path, kind=CHECKPOINT_KIND, max_bytes=CHECKPOINT_MAX_BYTES)
        missing = [k for k in ("architecture", "config", "history", "best", "shuffle_rng", "dropout_rng")
                   if k not in meta]
        if missing:
            raise StoreError(f"{path}: checkpoint metadata lacks {', '.join(missing)}")
        if meta["architecture"] != self.model.architecture():
            raise StoreError(f"{path}: was made for another architecture {str(meta['architecture'])[:200]}")
        config = meta["config"] if isinstance(meta["config"], dict) else {}
        for key in ("batch_size", "lr", "beta1", "beta2", "eps", "p_drop", "seed"):
            if config.get(key) != getattr(self.config, key):
                raise StoreError(f"{path}: was made with {key}={str(config.get(key))[:40]}, "
                                 f"not {getattr(self.config, key)}; resume with the same settings")
        for key, what in (("store_fingerprint", "another patch store"),
                          ("pixels_crc32", "a patch store with other pixels")):
            saved_store, store = meta.get(key), self.extra_metadata.get(key)   # absent in older checkpoints
            if saved_store is not None and store is not None and saved_store != store:
                raise StoreError(f"{path}: was trained on {what} ({str(meta.get('patches'))[:200]}); "
                                 f"resume with that store, or start a new run in another folder")
        history, best = meta["history"], meta["best"]
        if (not isinstance(history, dict) or any(not isinstance(history.get(k), list) for k in HISTORY_COLUMNS)
                or len({len(history[k]) for k in HISTORY_COLUMNS}) != 1):
            raise StoreError(f"{path}: history lacks columns or their lengths differ "
                             f"(expected {', '.join(HISTORY_COLUMNS)})")
        if not isinstance(best, dict) or not isinstance(best.get("epoch"), int) \
                or not isinstance(best.get("val_accuracy"), (int, float)):
            raise StoreError(f"{path}: 'best' is not {{epoch, val_accuracy}}")
        check_weights(path, arrays, self.model, prefix="model.")
        check_weights(path, arrays, self.model, prefix="best.")
        adam_keys = ["adam.t"] + [f"adam.{m}.{name}" for m in ("m", "v") for name in self.model.params]
        absent = [k for k in adam_keys if k not in arrays]
        if absent:
            raise StoreError(f"{path}: optimiser state lacks {', '.join(absent[:4])}")
        t = arrays["adam.t"]
        if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
            raise StoreError(f"{path}: adam.t is not a step count")
        for name, value in self.model.params.items():
            for m in ("m", "v"):
                moment = arrays[f"adam.{m}.{name}"]
                if moment.shape != value.shape or moment.dtype.kind != "f" or not np.all(np.isfinite(moment)):
                    raise StoreError(f"{path}: adam.{m}.{name} is not a finite array of shape {value.shape}")
        shuffle_rng, dropout_rng = np.random.default_rng(), np.random.default_rng()
        try:
            shuffle_rng.bit_generator.state = meta["shuffle_rng"]
            dropout_rng.bit_generator.state = meta["dropout_rng"]
        except (TypeError, ValueError, KeyError) as e:
            raise StoreError(f"{path}: random generator state is damaged ({type(e).__name__}: {str(e)[:80]})") from None
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


def history_to_csv(history) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in zip(*(history[k] for k in HISTORY_COLUMNS)):
        writer.writerow([row[0]] + [f"{v:.6f}" for v in row[1:]])
    return buf.getvalue()


def fit(model, x, y, epochs=10, batch_size=64, lr=1e-3, seed=0, x_val=None, y_val=None, verbose=True):
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
        raise FileExistsError(f"{run_dir} already holds a run (checkpoint.npz); "
                              f"use --resume to continue it or choose another folder")
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
CONFIG_OPTIONS = (("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--lr", "lr"), ("--beta1", "beta1"),
                  ("--beta2", "beta2"), ("--eps", "eps"), ("--p-drop", "p_drop"), ("--seed", "seed"),
                  ("--backend", "backend"))


def add_command(subparsers):
    d = TrainConfig()
    p = subparsers.add_parser(
        "train", help="train the network on a patch store (the paper's recipe by default)",
        description="Train ShallowCNN on the train split of a patch store, validating after every "
                    "epoch and keeping the epoch with the best validation accuracy as RUN_DIR/model.npz. "
                    "Also writes config.json, history.csv, curves.png and checkpoint.npz (after every "
                    "epoch, atomically). Ctrl-C stops cleanly; --resume continues from the checkpoint.")
    p.add_argument("patches", help="patch store (.npz) made by 'shallowcnn patches'")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="folder for the run's files")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"epochs (default {d.epochs}, the paper's)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"mini-batch size (default {d.batch_size})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--beta1", type=fraction_below_one, default=d.beta1,
                   help=f"Adam beta1, in [0, 1) (default {d.beta1})")
    p.add_argument("--beta2", type=fraction_below_one, default=d.beta2,
                   help=f"Adam beta2, in [0, 1) (default {d.beta2})")
    p.add_argument("--eps", type=positive_float, default=d.eps, help=f"Adam epsilon, > 0 (default {d.eps}, as Keras)")
    p.add_argument("--p-drop", type=fraction_below_one, default=d.p_drop,
                   help=f"dropout probability, in [0, 1) (default {d.p_drop})")
    p.add_argument("--seed", type=non_negative_int, default=d.seed,
                   help="seed for weights, shuffling and dropout, >= 0 (default 0)")
    p.add_argument("--backend", default=d.backend, choices=("numpy", "numba", "cuda", "auto"),
                   help="numpy, numba, cuda or auto (default auto)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run_command)


def resume_command(args) -> str:
    """The command that continues this run: the same store, folder and every option the
    user changed from its default (so the settings check of :meth:`Trainer.resume` passes)."""
    defaults = TrainConfig()
    words = ["shallowcnn", "train", args.patches, "-o", args.output]
    for option, name in CONFIG_OPTIONS:
        if getattr(args, name) != getattr(defaults, name):
            words += [option, str(getattr(args, name))]
    if args.quiet:
        words.append("--quiet")
    return shlex.join(words + ["--resume"])


def run_command(args) -> int:
    from .kernels import BackendUnavailable

    config = TrainConfig(**{name: getattr(args, name) for _, name in CONFIG_OPTIONS})
    try:
        trainer = train_run(open_patches(args.patches), args.output, config, resume=args.resume,
                            verbose=not args.quiet)
    except KeyboardInterrupt:
        kept = (f"the checkpoint of the last finished epoch is in {args.output}"
                if (Path(args.output) / "checkpoint.npz").exists() else "no epoch had finished")
        print(f"\ninterrupted: {kept}; continue with:\n  {resume_command(args)}", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        print(f"shallowcnn train: error: training diverged: {e}", file=sys.stderr)
        return 1
    except (StoreError, PatchError, OutputError, BackendUnavailable, ValueError, FileExistsError,
            FileNotFoundError) as e:
        print(f"shallowcnn train: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # the disk filled up or the folder went away during the run
        print(f"shallowcnn train: error: cannot write the run's files: {e}", file=sys.stderr)
        return 1
    best = trainer.best
    print(f"best epoch {best['epoch']} (validation accuracy {best['val_accuracy']:.4f}) saved as "
          f"{Path(args.output) / 'model.npz'}")
    return 0
