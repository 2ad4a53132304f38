"""Safe files: `.npz` archives with a JSON metadata entry, written atomically.

Everything a run saves (models, checkpoints, patch stores) goes through here, so
that every file

* is a plain `.npz` read with ``allow_pickle=False`` (no pickle, ever);
* carries a ``__metadata__`` entry holding UTF-8 JSON (what made it, and how);
* appears all at once: we write to a temporary name in the same folder and
  rename it, so an interrupted run leaves either the old file or the new one,
  never half a file.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

METADATA_KEY = "__metadata__"


class StoreError(ValueError):
    """A file that cannot be read as the store it claims to be (names the file)."""


@contextlib.contextmanager
def atomic_open(path):
    """Open a temporary file beside ``path`` for binary writing; on success it is
    flushed to disk and renamed onto ``path`` in one step, on failure removed.

        with atomic_open("model.npz") as f:
            f.write(...)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_npy(path, array) -> Path:
    """Write one array as ``.npy`` atomically; no pickle."""
    with atomic_open(path) as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    return Path(path)


def save_npz(path, arrays: dict, metadata: dict, compress: bool = False) -> Path:
    """Save named arrays plus JSON ``metadata`` to ``path`` atomically.

    Arrays must be plain numeric/bool/str arrays (object arrays would need pickle
    and are refused).
    """
    if METADATA_KEY in arrays:
        raise ValueError(f"array name {METADATA_KEY!r} is reserved")
    payload = {}
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.dtype == object:
            raise ValueError(f"array {name!r} has dtype object; it cannot be saved without pickle")
        payload[name] = a
    payload[METADATA_KEY] = np.frombuffer(json.dumps(metadata, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with atomic_open(path) as f:
        (np.savez_compressed if compress else np.savez)(f, **payload)
    return Path(path)


def load_npz(path, kind: str | None = None) -> tuple[dict, dict]:
    """Load ``(arrays, metadata)`` saved by :func:`save_npz`.

    ``kind``, if given, must equal ``metadata["kind"]`` (e.g. ``"shallowcnn.model"``),
    so that a patch store is not loaded as a model by mistake. Every failure raises
    :class:`StoreError` naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, expected a .npz file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise StoreError(f"{path}: not a readable .npz archive (empty, another format, or damaged)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if METADATA_KEY not in names:
                raise StoreError(
                    f"{path}: not a shallowcnn file (a .npz without the {METADATA_KEY!r} entry)")
            metadata = json.loads(npz[METADATA_KEY].tobytes().decode("utf-8"))
            arrays = {name: npz[name] for name in names if name != METADATA_KEY}
    except StoreError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise StoreError(f"{path}: not a readable .npz archive (truncated or another format): {e}") from None
    except ValueError as e:
        raise StoreError(f"{path}: cannot be read without pickle or is damaged: {e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: metadata is not valid JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise StoreError(f"{path}: metadata is not a JSON object")
    if kind is not None and metadata.get("kind") != kind:
        raise StoreError(f"{path}: holds {metadata.get('kind')!r}, expected {kind!r}")
    return arrays, metadata
