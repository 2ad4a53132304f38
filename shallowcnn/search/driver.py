"""The search itself: sample the trials, send the unfinished ones to Dask, collect.

    settings  = seed, space, epochs, backend, the store's fingerprint (search.json)
    trials    = [space.sample(seed, i) for i in range(N)]      # the same every time
    todo      = trials not yet in OUT/trials.json with a final status
    store     -> scattered to every worker once (a Dask future), not sent per trial
    for each trial as it finishes (in any order):
        save its model, rewrite trials.json / trials.csv, update the progress bar
    at the end: search.png, best/model.npz, report.md

Ctrl-C (or a lost worker) loses only the trials in flight: the next run with the
same command skips every trial already recorded and runs the rest.
"""
from __future__ import annotations

import json
import sys
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import __version__
from ..dask_cluster import DaskSettings, dask_client, require_dask, task_threads
from ..data.patches import open_patches
from ..storage import atomic_write_text
from . import results
from .space import SearchSpace
from .trial import run_trial, train_val_store


@dataclass(frozen=True)
class SearchSettings:
    """What a search does: ``trials`` networks drawn from ``space`` with ``seed``, each
    trained ``epochs`` epochs with the ``backend`` kernels."""
    trials: int
    epochs: int = 5
    seed: int = 0
    space: SearchSpace | None = None        # None: the default space
    backend: str = "numba"


@dataclass
class SearchOutcome:
    """What :func:`run_search` did: every recorded trial, the ones run now, the best row."""
    records: dict
    ran: list
    best: dict | None
    wall_seconds: float


def store_fingerprint(store) -> str:
    """A checksum of the patches, labels and split: a resumed search must train on the same data."""
    crc = 0
    for array in (store.patches, store.labels, store.split.astype("U5")):
        crc = zlib.crc32(np.ascontiguousarray(array), crc)   # the bytes in place, no copy
    return f"{len(store)}-{crc:08x}"


def _settings(patches, store, seed, space, epochs, backend) -> dict:
    return {"kind": "shallowcnn.search", "version": __version__, "patches": str(patches),
            "store_fingerprint": store_fingerprint(store), "n_train": int(len(store.indices("train"))),
            "n_val": int(len(store.indices("val"))), "seed": int(seed), "space": space.to_dict(),
            "epochs": int(epochs), "backend": backend}


def finish(out, settings, records, wall_seconds) -> dict | None:
    """Figure, best model and report from the recorded trials; returns the best row."""
    from ..plots import plot_search          # matplotlib loads only when figures are drawn
    ranked = results.ranking(records)
    ok = [r["row"] for r in records.values() if r["row"]["status"] == "ok"]
    best_index = ok.index(ranked[0]) if ranked else None
    plot_search([r["n_params"] for r in ok], [r["val_accuracy"] for r in ok], [r["lr"] for r in ok],
                Path(out) / "search.png", best=best_index,
                title=f"Random search: {len(ok)} trials of {settings['epochs']} epochs")
    if ranked:
        results.copy_best_model(out, ranked[0])
    results.write_report(out, settings, records, wall_seconds)
    return ranked[0] if ranked else None


def run_search(patches, out, settings: SearchSettings, cluster: DaskSettings | None = None,
               verbose: bool = True, on_result=None) -> SearchOutcome:
    """Run (or resume) the random search ``settings`` into the folder ``out``.

    patches    patch store path (its train split trains, its val split ranks the trials)
    cluster    where the trials run (:class:`~shallowcnn.dask_cluster.DaskSettings`; by
               default a LocalCluster of one worker process per core)
    on_result  called with each finished trial's row (after it is saved); for tests
    """
    start = time.perf_counter()
    cluster = cluster or DaskSettings()
    trials, epochs, seed, backend = settings.trials, settings.epochs, settings.seed, settings.backend
    scheduler, workers, numba_threads = cluster.scheduler, cluster.workers, cluster.numba_threads
    if trials < 1 or epochs < 1:
        raise ValueError(f"a search needs at least 1 trial of at least 1 epoch, got {trials} of {epochs}")
    space = settings.space or SearchSpace()
    store = open_patches(patches)
    if len(store.indices("train")) == 0 or len(store.indices("val")) == 0:
        raise ValueError(f"{patches}: a search needs training and validation patches "
                         f"(the store has {len(store.indices('train'))} and {len(store.indices('val'))})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; the search writes a folder of files")
    settings = _settings(patches, store, seed, space, epochs, backend)
    results.check_same_settings(out, settings)
    # Trials recorded with a final status are kept (even beyond a smaller trial count: nothing
    # recorded is ever dropped); "lost" ones run again, and so do "ok" ones whose model
    # file is missing or damaged (the same seed gives the same trial).
    records = {k: r for k, r in results.read_trials(out).items() if r["row"]["status"] in results.FINAL_STATUSES}
    for k, r in list(records.items()):
        problem = results.trial_model_problem(out, r["row"]) if r["row"]["status"] == "ok" else None
        if problem and k < trials:
            print(f"warning: {problem}; trial {k} runs again", file=sys.stderr, flush=True)
            del records[k]
    todo = [space.sample(seed, i) for i in range(trials) if i not in records]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "search.json", json.dumps(settings, indent=1))
    if verbose:
        print(f"{trials} trials of {epochs} epochs: {len(records)} already recorded in {out}, "
              f"{len(todo)} to run", file=sys.stderr, flush=True)
    ran = []
    if todo:
        require_dask()
        from distributed import as_completed    # the optional [dask] extra, checked just above
        search_meta = {"patches": str(patches), "seed": seed, "epochs": epochs}
        with dask_client(scheduler, workers, numba_threads, cluster.processes, verbose) as client:
            threads_per_task = task_threads(scheduler, workers, numba_threads)
            [store_on_workers] = client.scatter([train_val_store(store)], broadcast=True)
            trial_of = {client.submit(run_trial, store_on_workers, trial, epochs, backend, threads_per_task,
                                      key=f"trial-{trial['trial']:04d}-{uuid.uuid4().hex[:12]}",
                                      pure=False, priority=-trial["trial"]): trial
                        for trial in todo}
            futures = list(trial_of)
            workers_seen = set()
            bar = tqdm(total=len(todo), desc="trials", unit="trial", disable=None if verbose else True,
                       file=sys.stderr, dynamic_ncols=True)
            try:
                for future in as_completed(futures):
                    result = _collect(future, trial_of[future], out, search_meta)
                    records[result["row"]["trial"]] = {"row": result["row"], "history": result["history"]}
                    results.write_trials(out, records)
                    ran.append(result["row"])
                    workers_seen.add(result["row"]["worker"])
                    best = results.ranking(records)
                    bar.set_postfix(best=f"{best[0]['val_accuracy']:.4f} (#{best[0]['trial']})" if best else "-",
                                    last=result["row"]["status"])
                    bar.update()
                    if on_result is not None:
                        on_result(result["row"])
            except BaseException:
                client.cancel(futures)
                raise
            finally:
                bar.close()
            settings["workers_seen"] = len(workers_seen)
    wall = time.perf_counter() - start
    best = finish(out, settings, records, wall if ran else None)
    return SearchOutcome(records=records, ran=ran, best=best, wall_seconds=wall)


def _collect(future, trial, out, search_meta) -> dict:
    """A finished future's result, its model saved; a worker lost under it becomes status "lost"."""
    try:
        result = future.result()
    except Exception as e:                        # KilledWorker, lost connection...: run again on resume
        row = {**trial, "status": "lost", "message": f"{type(e).__name__}: {e}", "seconds": 0.0, "worker": ""}
        return {"row": row, "history": None, "params": None}
    if result["params"] is not None:
        results.save_trial_model(out, result, search_meta)
    return result
