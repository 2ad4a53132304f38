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
import zlib
from pathlib import Path

import numpy as np

METADATA_KEY = "__metadata__"


class StoreError(ValueError):
    """A file that cannot be read as the store it claims to be (names the file)."""


class OutputError(ValueError):
    """An output that cannot be written (names the path and why), found before the work."""


def check_writable_dir(folder) -> Path:
    """Make sure ``folder`` exists (creating it) and a file can be written in it.

    Called before a long run starts, so that a read-only or mistyped output folder is
    reported at once rather than after an epoch or a whole scan. Raises OutputError.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test.", delete=True):
            pass
    except OSError as e:
        raise OutputError(f"{folder}: cannot write there ({e.strerror or e})") from None
    return folder


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # a full disk fails in write() or fsync(), whose error names no file: name it
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
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


DEFAULT_MAX_BYTES = 16 << 30   # per array; callers that know their files pass far less


def read_member_headers(path, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """``{name: (shape, dtype)}`` of every array of a ``.npz``, read from the ``.npy``
    headers alone, before any array is loaded.

    Refuses (StoreError naming the file and the array) an array that would need pickle
    (object dtype), one that declares more than ``max_bytes``, and one whose declared size
    does not match the bytes the archive holds for it -- so a 3 MB file that claims a
    3 GiB array is stopped before 3 GiB are allocated.
    """
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise StoreError(f"{path}: unexpected entry {info.filename[:60]!r} in the archive")
            name = info.filename[:-len(".npy")]
            with archive.open(info) as member:
                try:
                    version = np.lib.format.read_magic(member)
                    shape, fortran, dtype = (np.lib.format.read_array_header_1_0(member) if version == (1, 0)
                                             else np.lib.format.read_array_header_2_0(member))
                except ValueError as e:
                    raise StoreError(f"{path}: array {name!r} has a damaged header ({e})") from None
                header_bytes = member.tell()
            if dtype.hasobject:
                raise StoreError(f"{path}: array {name!r} holds Python objects (dtype {dtype}), "
                                 f"which cannot be read without pickle")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > max_bytes:
                raise StoreError(f"{path}: array {name!r} declares shape {shape} of {dtype} "
                                 f"({nbytes / 2 ** 20:,.0f} MB), more than the {max_bytes / 2 ** 20:,.0f} MB "
                                 f"a file of this kind may hold")
            if info.file_size != header_bytes + nbytes:
                raise StoreError(f"{path}: array {name!r} declares {nbytes:,} bytes but the archive holds "
                                 f"{info.file_size - header_bytes:,} (damaged file)")
            headers[name] = (shape, dtype)
    return headers


def load_npz(path, kind: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[dict, dict]:
    """Load ``(arrays, metadata)`` saved by :func:`save_npz`.

    ``kind``, if given, must equal ``metadata["kind"]`` (e.g. ``"shallowcnn.model"``),
    so that a patch store is not loaded as a model by mistake. Every array's header is
    checked first (:func:`read_member_headers`, with ``max_bytes`` per array). Every
    failure raises :class:`StoreError` naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, expected a .npz file")
    if not path.is_file():
        raise StoreError(f"{path}: not a regular file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise StoreError(f"{path}: not a readable .npz archive (empty, another format, or damaged)")
    try:
        names = list(read_member_headers(path, max_bytes))
        if METADATA_KEY not in names:
            raise StoreError(f"{path}: not a shallowcnn file (a .npz without the {METADATA_KEY!r} entry)")
        with np.load(path, allow_pickle=False) as npz:
            raw_metadata = npz[METADATA_KEY]
            arrays = {name: npz[name] for name in names if name != METADATA_KEY}
    except StoreError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise StoreError(f"{path}: not a readable .npz archive (truncated or another format): {e}") from None
    except ValueError as e:
        raise StoreError(f"{path}: damaged array data: {e}") from None
    try:
        metadata = json.loads(raw_metadata.tobytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise StoreError(f"{path}: metadata is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise StoreError(f"{path}: metadata is not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(metadata, dict):
        raise StoreError(f"{path}: metadata is not a JSON object")
    if kind is not None and metadata.get("kind") != kind:
        raise StoreError(f"{path}: holds {str(metadata.get('kind'))[:60]!r}, expected {kind!r}")
    return arrays, metadata
