"""The scan queue: scans run in worker threads, a bounded number wait, the rest get 503.

A scan takes seconds of CPU (numba already spreads one scan over every core), so the
web server's event loop must never run one: it would stop answering everyone else.
:class:`ScanQueue` runs scans in a small thread pool and counts *places*: a request
takes a place before its upload is read and gives it back when its scan is done. With
``workers`` scanning and ``waiting`` queued, request number ``workers + waiting + 1``
is refused at once (the app answers 503), so a flood of uploads cannot pile up files on
disk or scans in memory. Waiting requests hold only their upload file, not pixels.

:class:`ResultStore` keeps the pictures of the last few scans (for their URLs) and
forgets the oldest: memory stays bounded however long the server runs.
"""
from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

DEFAULT_WORKERS = 1
DEFAULT_WAITING = 4
DEFAULT_RESULTS_KEPT = 16
DEFAULT_MAX_UPLOAD_MB = 64    # per upload; a 3328 x 4084 16-bit DICOM is 27 MB


class QueueFull(Exception):
    """Every place in the queue is taken."""


class ScanQueue:
    """At most ``workers`` scans at once, ``waiting`` more in line, the rest refused."""

    def __init__(self, workers: int = DEFAULT_WORKERS, waiting: int = DEFAULT_WAITING):
        if workers < 1 or waiting < 0:
            raise ValueError(f"need workers >= 1 and waiting >= 0, got {workers} and {waiting}")
        self.workers, self.waiting = workers, waiting
        self.capacity = workers + waiting
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shallowcnn-scan")
        self._lock = threading.Lock()
        self._taken = 0

    @property
    def taken(self) -> int:
        """Places held now (scanning, waiting, or still uploading)."""
        return self._taken

    def take_place(self) -> None:
        """Hold a place; raises :class:`QueueFull` when all ``capacity`` are held.
        Every successful call must be matched by :meth:`give_back_place`."""
        with self._lock:
            if self._taken >= self.capacity:
                raise QueueFull(f"the server is busy: {self.workers} scan(s) running and "
                                f"{self.waiting} waiting; try again shortly")
            self._taken += 1

    def give_back_place(self) -> None:
        with self._lock:
            self._taken -= 1

    def submit(self, function, *args, cleanup=None):
        """Run ``function(*args)`` in a worker thread for a caller holding a place; returns
        a ``concurrent.futures.Future`` (``asyncio.wrap_future`` awaits it without blocking
        the event loop).

        When the job ends, however it ends (done, failed, or cancelled while waiting
        because the client went away), ``cleanup()`` runs and then the place is given
        back: the count of places never drifts from the jobs that really exist.
        """
        future = self._executor.submit(function, *args)

        def finished(_):
            try:
                if cleanup is not None:
                    cleanup()
            finally:
                self.give_back_place()

        future.add_done_callback(finished)
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class ResultStore:
    """The last ``keep`` scan outcomes by an unguessable id; older ones are forgotten."""

    def __init__(self, keep: int = DEFAULT_RESULTS_KEPT):
        self.keep = keep
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def add(self, outcome) -> str:
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._items[key] = outcome
            while len(self._items) > self.keep:
                self._items.popitem(last=False)
        return key

    def get(self, key: str):
        with self._lock:
            return self._items.get(key)
