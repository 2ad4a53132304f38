"""One trial of the search: train one sampled network, report how it did.

:func:`run_trial` is what a Dask worker runs. It gets the patch store (already
on the worker: the driver scatters it once) and one trial's hyperparameters,
and trains with the project's own :class:`~shallowcnn.train.Trainer` -- the
same loop as ``shallowcnn train``, kept in memory (no run folder: a worker on
another machine may not share our disk). What comes back is small: the row of
``trials.csv``, the per-epoch history, and the best epoch's weights (a few
thousand to a few hundred thousand numbers), which the driver saves.

A trial never raises: divergence (the loss became NaN or infinite) and any
other error become its status, so one bad trial cannot stop a search.
"""
from __future__ import annotations

import math
import socket
import time

import numpy as np

from ..dask_cluster import limit_numba_threads
from ..data.patches import PatchStore
from ..model import ShallowCNN
from ..train import TrainConfig, Trainer, TrainingDiverged

# A mean binary cross-entropy above this means the network gives the true class a
# probability near e^-100: far past anything learning does (chance is ln 2 = 0.69).
# With an absurd learning rate Adam throws the weights so far that the loss stays
# finite but enormous (1e29 at lr 1e30), which the trainer's NaN check cannot see.
DIVERGED_LOSS = 100.0


def train_val_store(store):
    """The part of a patch store a trial needs (train and val), to send to the workers.

    A :class:`~shallowcnn.data.patches.PatchStore` with the test patches left out:
    the search must never look at the test split.
    """
    keep = np.concatenate([store.indices("train"), store.indices("val")])
    return PatchStore(**{name: getattr(store, name)[keep] for name in PatchStore.ARRAY_NAMES},
                      metadata={"kind": store.metadata.get("kind"), "source": store.metadata.get("source")})


def worker_name() -> str:
    """The Dask worker running this task (its name, else address), or this host outside Dask."""
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        return f"{socket.gethostname()} (no Dask)"
    return str(worker.name) if worker.name is not None else worker.address


def check_not_diverged(history) -> None:
    """Raise TrainingDiverged when a loss exploded (see DIVERGED_LOSS) or is not a number."""
    for epoch, loss, val_loss in zip(history["epoch"], history["loss"], history["val_loss"]):
        if not (math.isfinite(loss) and math.isfinite(val_loss)) or max(loss, val_loss) > DIVERGED_LOSS:
            raise TrainingDiverged(f"loss {loss:.3g} (validation {val_loss:.3g}) at epoch {epoch}, "
                                   f"above {DIVERGED_LOSS:g}; the learning rate is too large")


def run_trial(store, trial: dict, epochs: int, backend: str = "numba", numba_threads: int = 1) -> dict:
    """Train trial ``trial`` (from :meth:`SearchSpace.sample`) for ``epochs`` epochs.

    store   a PatchStore holding train and val patches (see :func:`train_val_store`)
    returns {"row": the trials.csv row, "history": per-epoch lists, "params": the best
            epoch's weights by name, or None when no epoch finished}
    """
    start = time.perf_counter()
    row = {**trial, "epochs": epochs, "backend": backend,
           "worker": worker_name(), "n_params": None, "best_epoch": 0, "val_accuracy": float("nan"),
           "val_loss": float("nan"), "seconds": 0.0, "status": "ok", "message": ""}
    trainer = None
    try:
        if backend == "numba":
            limit_numba_threads(numba_threads)
        model = ShallowCNN(backend=backend, seed=trial["seed"], p_drop=row["p_drop"],
                           channels=(trial["conv1_filters"], trial["conv2_filters"]),
                           kernel_size=trial["kernel_size"])
        row["n_params"] = model.n_params()
        config = TrainConfig(epochs=epochs, batch_size=trial["batch_size"], lr=trial["lr"],
                             p_drop=row["p_drop"], seed=trial["seed"], backend=backend)
        trainer = Trainer(model, config, run_dir=None, verbose=False)
        x, y = store.arrays("train")
        x_val, y_val = store.arrays("val")
        with np.errstate(over="ignore", invalid="ignore"):   # a diverging trial overflows; its status says so
            trainer.fit(x, y, x_val, y_val)
        check_not_diverged(trainer.history)
    except TrainingDiverged as e:
        row.update(status="diverged", message=str(e))
    except Exception as e:                       # recorded, never fatal to the search
        row.update(status="failed", message=f"{type(e).__name__}: {e}")
    history, params = None, None
    if trainer is not None and trainer.history["epoch"]:
        history = trainer.history
        best = trainer.best["epoch"]
        row.update(best_epoch=best, val_accuracy=float(history["val_accuracy"][best - 1]),
                   val_loss=float(history["val_loss"][best - 1]))
        params = trainer.best_params if row["status"] == "ok" else None
    row["seconds"] = round(time.perf_counter() - start, 3)
    return {"row": row, "history": history, "params": params}
