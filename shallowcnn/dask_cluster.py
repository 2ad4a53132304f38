"""Where distributed work runs: a Dask cluster, local by default.

``shallowcnn search`` and ``shallowcnn scan --scheduler`` hand their work to Dask
(``dask.distributed``) instead of a home-made process pool: the same code then
runs on this machine, on a cluster started by hand with ``dask scheduler`` /
``dask worker``, or on Kubernetes or SLURM through dask's own tools.

Locally we start one worker *process* per core with one thread each, and tell
Numba (through ``NUMBA_NUM_THREADS``, read when a worker first imports numba)
how many threads each task may use, so that workers x threads never exceeds the
cores: oversubscribed cores spend their time switching between threads.

Dask is an optional extra: without it, :func:`dask_client` raises
:class:`DaskUnavailable` saying how to install it.

A scheduler address is checked before Dask sees it: it must parse
(:func:`split_scheduler_address`), and for ``tcp://`` the peer must speak Dask's
protocol (:func:`probe_dask_scheduler`: a Dask scheduler sends its handshake as soon
as a connection opens; a web server sends nothing, and Dask would otherwise read the
first bytes of an HTTP answer as the length of a message and try to allocate exabytes).
Then Dask's own connection gets ``SCHEDULER_TIMEOUT_S``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

INSTALL_HINT = ('this command needs Dask: pip install "shallowcnn[dask]" '
                '(or, in a checkout, pip install ".[dask]")')


@dataclass(frozen=True)
class DaskSettings:
    """Where work goes: a running cluster (``scheduler``) or a LocalCluster started here.

    scheduler      "tcp://host:8786" of a running cluster, or None for a LocalCluster here
    workers        LocalCluster worker processes (default: one per core)
    numba_threads  Numba threads per task (default: cores // workers locally, 1 on a scheduler)
    processes      False runs the local workers as threads of this process (tests, notebooks)
    """
    scheduler: str | None = None
    workers: int | None = None
    numba_threads: int | None = None
    processes: bool = True

    @property
    def wanted(self) -> bool:
        """True when the work should go to Dask at all (a scheduler or a worker count is given)."""
        return bool(self.scheduler or self.workers)


SCHEDULER_TIMEOUT_S = 10.0       # to reach a scheduler and hear that it is one
DASK_PORT = 8786                 # dask scheduler's default port
_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")


def split_scheduler_address(address: str) -> tuple:
    """``(scheme, host, port)`` of ``tcp://host:8786``, ``host:8786`` or ``host`` (port
    8786, scheme tcp); ValueError saying what is wrong otherwise."""
    text = address.strip()
    if not text:
        raise ValueError("the scheduler address is empty; expected tcp://HOST:PORT")
    try:
        parts = urlsplit(text if "://" in text else f"tcp://{text}")
        port = parts.port
        host = parts.hostname
    except ValueError as e:
        raise ValueError(f"{address[:80]!r} is not a scheduler address like tcp://HOST:8786 ({e})") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"{address[:80]!r}: unknown protocol {parts.scheme!r} (expected one of {', '.join(_SCHEMES)})")
    if parts.scheme != "inproc" and (not host or parts.path not in ("", "/") or parts.query):
        raise ValueError(f"{address[:80]!r} is not a scheduler address like tcp://HOST:8786")
    return parts.scheme, host, port or DASK_PORT


def probe_dask_scheduler(address: str, timeout: float = SCHEDULER_TIMEOUT_S) -> None:
    """Raise ConnectionError (naming the address) unless a ``tcp://`` peer
    answers like a Dask scheduler within ``timeout`` seconds: on a new connection it sends
    a framed handshake, whose first 16 bytes are two little-endian uint64, the message's
    length (a few dozen bytes) and its number of frames (a few). Other protocols are left
    to Dask."""
    scheme, host, port = split_scheduler_address(address)
    if scheme != "tcp":
        return
    where = f"Dask scheduler {address}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            head = b""
            while len(head) < 16:
                chunk = conn.recv(16 - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.timeout:
        raise ConnectionError(f"{where}: the service there sent nothing within {timeout:g} s; a Dask "
                              f"scheduler greets every connection, so this is not one (a web server?)") from None
    except OSError as e:
        raise ConnectionError(f"{where}: cannot connect ({e.strerror or e})") from None
    length, frames = struct.unpack("<QQ", head) if len(head) == 16 else (0, 0)
    if not (16 <= length <= 2**20 and 1 <= frames <= 64):
        shown = head[:16].decode("ascii", "replace").strip() or "nothing"
        raise ConnectionError(f"{where}: the service there is not a Dask scheduler (it answered {shown!r})")


class DaskUnavailable(RuntimeError):
    """dask.distributed is not installed (the message says how to install it)."""


def require_dask():
    """Import and return ``distributed``, or raise :class:`DaskUnavailable`."""
    try:
        import distributed
    except ImportError as e:
        raise DaskUnavailable(f"{INSTALL_HINT} ({e})") from None
    return distributed


def local_layout(workers: int | None = None, numba_threads: int | None = None) -> tuple:
    """(worker processes, Numba threads per task) for a LocalCluster on this machine.

    One process per core by default; each task gets the cores left per worker.
    """
    cores = os.cpu_count() or 1
    workers = max(1, int(workers or cores))
    return workers, max(1, int(numba_threads or cores // workers))


def task_threads(scheduler: str | None, workers: int | None = None, numba_threads: int | None = None) -> int:
    """Numba threads for each task: what the user asked for (1 by default) on a cluster
    of theirs, else the local cluster's share of the cores (:func:`local_layout`)."""
    return (numba_threads or 1) if scheduler else local_layout(workers, numba_threads)[1]


def limit_numba_threads(threads: int) -> None:
    """Let the task running in this thread use at most ``threads`` Numba threads (never more
    than Numba started with): on a cluster not started by us, NUMBA_NUM_THREADS is unknown."""
    import numba     # here: only a task that runs kernels needs it
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


def dashboard_address(client) -> str:
    """The dashboard's address, or why there is none (it needs bokeh)."""
    services = client.scheduler_info().get("services", {})
    if "dashboard" not in services:
        return "not running (pip install bokeh to get it)"
    return client.dashboard_link


@contextlib.contextmanager
def _children_ignore_ctrl_c():
    """Processes started inside this block inherit SIGINT ignored (a Python started with
    SIGINT ignored keeps ignoring it). Ctrl-C in a terminal reaches every process of the
    foreground group; only this one should act on it (cancel the work, close the cluster),
    rather than each local worker printing its own KeyboardInterrupt traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None, numba_threads: int | None = None,
                processes: bool = True, verbose: bool = True, wait_seconds: float = 60):
    """A connected ``distributed.Client``, closed (with its LocalCluster) on exit.

    scheduler      "tcp://host:8786" of a running cluster, or None for a LocalCluster here
    workers        LocalCluster worker processes (default: one per core)
    numba_threads  Numba threads per task on the LocalCluster (default: cores // workers)
    processes      False runs the local workers as threads of this process (tests, notebooks;
                   with several workers, the numpy backend or NUMBA_THREADING_LAYER=omp)
    """
    distributed = require_dask()
    cluster = None
    if scheduler:
        try:
            split_scheduler_address(scheduler)
        except ValueError as e:
            raise ConnectionError(f"Dask scheduler address: {e}") from None
        probe_dask_scheduler(scheduler)
        try:
            client = distributed.Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError, MemoryError) as e:
            raise ConnectionError(f"Dask scheduler {scheduler}: cannot connect to a Dask scheduler there "
                                  f"({type(e).__name__}: {str(e)[:200]})") from None
        where = f"the cluster at {scheduler}"
    else:
        n_workers, threads = local_layout(workers, numba_threads)
        extra = {"env": {"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": "1",
                         "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}} if processes else {}
        with _children_ignore_ctrl_c():
            cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                                               dashboard_address=":0", silence_logs=logging.ERROR, **extra)
        client = distributed.Client(cluster)
        where = (f"a local cluster of {n_workers} worker {'processes' if processes else 'threads'}, "
                 f"1 task each, {threads} Numba thread(s) per task")
    try:
        try:
            client.wait_for_workers(1, timeout=wait_seconds)
        except TimeoutError:
            raise ConnectionError(f"no Dask worker joined {where} within {wait_seconds:.0f} s") from None
        if verbose:
            print(f"running on {where}; dashboard: {dashboard_address(client)}", file=sys.stderr, flush=True)
        if scheduler and any(n > 1 for n in client.nthreads().values()):
            # Numba's default threading layer ('workqueue') aborts when two threads of one
            # process launch parallel kernels at once.
            print("note: some workers run several tasks at once (--nthreads > 1); with Numba's default "
                  "'workqueue' threading layer that can abort them. Start workers with --nthreads 1 "
                  "(--nworkers one per core), or with NUMBA_THREADING_LAYER=omp", file=sys.stderr, flush=True)
        yield client
    except KeyboardInterrupt:
        # Closing a cluster with tasks in flight makes distributed log every broken
        # connection; after Ctrl-C the user asked for silence and exit status 130.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
