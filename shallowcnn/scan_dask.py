"""Screening an archive: ``shallowcnn scan --workers N`` or ``--scheduler ADDRESS``.

One machine scans a mammogram in a second or two, but an archive holds thousands.
With these options :func:`shallowcnn.scan_files.scan_paths` does not scan the
images itself one after another: Dask workers scan them (:func:`scan_on_worker`,
which calls the same :func:`shallowcnn.scan.scan_image`), while this process
writes each image's files and the FROC curve as the results come back -- the
same files as a scan on one machine.

* The model's weights reach each worker once (scattered), not once per image.
* The workers read the images themselves, so every image path must be readable
  by every worker under the same name: a shared folder on a cluster; always
  true for a local cluster. The paths are sent as absolute paths.
* Results come back in the order of the images, so the summary is the same
  whatever worker finished first.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from .dask_cluster import DaskSettings, dask_client, limit_numba_threads, task_threads
from .model import ShallowCNN
from .scan_files import ScanSettings, scan_one


def model_spec(model) -> dict:
    """What a worker needs to rebuild ``model``: its architecture, seed and weights."""
    return {"architecture": model.architecture(), "seed": model.seed,
            "params": {name: value.copy() for name, value in model.params.items()}}


def rebuild_model(spec: dict, backend: str):
    """The ShallowCNN described by :func:`model_spec`, on ``backend``."""
    arch = spec["architecture"]
    model = ShallowCNN(backend=backend, seed=spec["seed"], p_drop=arch["p_drop"], dtype=arch["dtype"],
                       channels=arch["channels"], kernel_size=arch["kernel_size"])
    model.set_params(spec["params"])
    return model


def scan_on_worker(spec: dict, backend: str, numba_threads: int, path: str, settings: ScanSettings):
    """Scan one image on a worker: :func:`shallowcnn.scan_files.scan_one`'s answer, i.e.
    (ScanResult, ImageTruth or None), or the exception that stopped it."""
    if backend == "numba":
        limit_numba_threads(numba_threads)
    return scan_one(rebuild_model(spec, backend), path, settings)


@contextlib.contextmanager
def scanning_on_dask(cluster: DaskSettings, model, paths, settings: ScanSettings, verbose: bool = True):
    """Yields None when ``cluster`` asks for no Dask (scan here); otherwise an iterator of
    (path, scan_one's answer), in the order of ``paths``, computed by Dask workers.
    """
    if not cluster.wanted:
        yield None
        return
    threads = task_threads(cluster.scheduler, cluster.workers, cluster.numba_threads)
    with dask_client(cluster.scheduler, cluster.workers, cluster.numba_threads, cluster.processes,
                     verbose=verbose) as client:
        [spec] = client.scatter([model_spec(model)], broadcast=True)
        futures = [client.submit(scan_on_worker, spec, model.backend, threads, str(Path(p).resolve()),
                                 settings, pure=False) for p in paths]
        try:
            yield ((path, future.result()) for path, future in zip(paths, futures))
        finally:
            client.cancel(futures)
