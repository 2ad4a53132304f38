"""Screening an archive: ``shallowcnn scan --workers N`` or ``--scheduler ADDRESS``.

One machine scans a mammogram in a second or two, but an archive holds thousands.
With these options :func:`shallowcnn.scan_command.scan_paths` does not scan the
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

from .options import positive_int, scheduler_address


def add_arguments(parser) -> None:
    """The options of ``shallowcnn scan`` that send the images to Dask."""
    group = parser.add_argument_group(
        "spreading the images over Dask workers (needs pip install \"shallowcnn[dask]\")")
    group.add_argument("--scheduler", type=scheduler_address, default=None, metavar="ADDRESS",
                       help="address of a running Dask scheduler (tcp://host:8786); every image path "
                            "must be readable by the workers")
    group.add_argument("--workers", type=positive_int, default=None,
                       help="scan on a local Dask cluster of this many worker processes "
                            "(default: no cluster, the images one after another in this process)")
    group.add_argument("--numba-threads", type=positive_int, default=None,
                       help="Numba threads per image (default: cores // workers locally, 1 on --scheduler)")


def model_spec(model) -> dict:
    """What a worker needs to rebuild ``model``: its architecture, seed and weights."""
    return {"architecture": model.architecture(), "seed": model.seed,
            "params": {name: value.copy() for name, value in model.params.items()}}


def rebuild_model(spec: dict, backend: str):
    """The ShallowCNN described by :func:`model_spec`, on ``backend``."""
    from .model import ShallowCNN

    arch = spec["architecture"]
    model = ShallowCNN(backend=backend, seed=spec["seed"], p_drop=arch["p_drop"], dtype=arch["dtype"],
                       channels=arch["channels"], kernel_size=arch["kernel_size"])
    model.set_params(spec["params"])
    return model


def scan_on_worker(spec: dict, backend: str, numba_threads: int, path: str, hit_radius: float,
                   scan_options: dict):
    """Scan one image on a worker: :func:`shallowcnn.scan_command.scan_one`'s answer, i.e.
    (ScanResult, ImageTruth or None), or the exception that stopped it."""
    from .dask_cluster import limit_numba_threads
    from .scan_command import scan_one          # here, not at the top: scan_command imports us

    if backend == "numba":
        limit_numba_threads(numba_threads)
    return scan_one(rebuild_model(spec, backend), path, hit_radius, **scan_options)


@contextlib.contextmanager
def scanning_on_dask(args, model, paths, hit_radius: float, scan_options: dict, verbose: bool = True):
    """Yields None when ``args`` ask for no Dask (scan here); otherwise an iterator of
    (path, scan_one's answer), in the order of ``paths``, computed by Dask workers.

    scan_options: keyword arguments of :func:`~shallowcnn.scan.scan_image`.
    """
    if not (args.scheduler or args.workers):
        yield None
        return
    from .dask_cluster import dask_client, task_threads

    threads = task_threads(args.scheduler, args.workers, args.numba_threads)
    with dask_client(args.scheduler, args.workers, args.numba_threads, verbose=verbose) as client:
        [spec] = client.scatter([model_spec(model)], broadcast=True)
        futures = [client.submit(scan_on_worker, spec, model.backend, threads, str(Path(p).resolve()),
                                 hit_radius, scan_options, pure=False) for p in paths]
        try:
            yield ((path, future.result()) for path, future in zip(paths, futures))
        finally:
            client.cancel(futures)
