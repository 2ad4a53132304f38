"""Receiving an upload safely: streamed to a private folder, size checked on the way.

A multipart body is parsed *as it arrives* (python-multipart's push parser) and the
field ``file`` is written chunk by chunk into a new file that the server names
(``tempfile.mkstemp`` inside the server's private 0700 folder). So

* the client's file name never becomes a path: it is kept only as a label
  (:func:`display_name`), and a name like ``../../etc/passwd`` is harmless;
* the size limit holds while streaming: the upload stops at the first byte over the
  limit, so a huge body never fills the disk or memory;
* the caller deletes the file after the scan (:func:`receive_upload` deletes it itself
  when anything goes wrong on the way in).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from .scanner import UploadRejected

FIELD = "file"
FORM_OVERHEAD = 64 * 1024      # bytes of multipart headers and small fields allowed on top


@dataclass
class Upload:
    """A received upload: ``path`` (server-chosen), ``name`` (client's label), ``size``."""

    path: Path
    name: str
    size: int


def display_name(raw: bytes | None) -> str:
    """The client's file name as a label: its last path component, printable, <= 120 chars."""
    if not raw:
        return "upload"
    name = raw.decode("utf-8", errors="replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:120]
    return name or "upload"


class _FilePart:
    """python-multipart callbacks that copy the ``file`` field into ``out`` (an open file)."""

    def __init__(self, out, max_bytes: int):
        self.out, self.max_bytes = out, max_bytes
        self.header_name, self.header_value = b"", b""
        self.disposition = b""
        self.writing = False          # inside the part named FIELD
        self.found = False
        self.name = None
        self.size = 0

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end}

    def on_part_begin(self):
        self.disposition, self.writing = b"", False

    def on_header_field(self, data, start, end):
        self.header_name += data[start:end]

    def on_header_value(self, data, start, end):
        self.header_value += data[start:end]

    def on_header_end(self):
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self):
        _, options = parse_options_header(self.disposition)
        if options.get(b"name") == FIELD.encode() and not self.found:
            self.writing, self.found = True, True
            self.name = display_name(options.get(b"filename"))

    def on_part_data(self, data, start, end):
        if not self.writing:
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise UploadRejected(413, f"upload is larger than the limit of {self.max_bytes / 2**20:g} MiB")
        self.out.write(data[start:end])

    def on_part_end(self):
        self.writing = False


async def receive_upload(request, folder: Path, max_bytes: int) -> Upload:
    """Stream the multipart request into a new file in ``folder``.

    Raises :class:`UploadRejected`: 400 for a body that is not multipart/form-data or has
    no ``file`` field or an empty one, 413 over ``max_bytes``.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UploadRejected(400, f"expected a multipart/form-data body with the field {FIELD!r}")
    limit = max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:     # refuse before reading anything
        raise UploadRejected(413, f"upload is larger than the limit of {max_bytes / 2**20:g} MiB")
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".bin", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            part = _FilePart(out, max_bytes)
            parser = MultipartParser(params[b"boundary"], part.callbacks())
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise UploadRejected(413, f"upload is larger than the limit of {max_bytes / 2**20:g} MiB")
                try:
                    parser.write(chunk)
                except UploadRejected:
                    raise
                except Exception as e:    # python-multipart's parse errors
                    raise UploadRejected(400, f"malformed multipart body ({type(e).__name__}: {e})") from None
            parser.finalize()
        if not part.found:
            raise UploadRejected(400, f"the form has no field {FIELD!r} (send the image as {FIELD}=@image.dcm)")
        if part.size == 0:
            raise UploadRejected(400, f"{part.name}: the uploaded file is empty")
        return Upload(path=path, name=part.name, size=part.size)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


async def drain(request, max_bytes: int) -> None:
    """Read and drop the body (at most ``max_bytes`` + overhead), so that a client still
    sending gets the refusal instead of a broken connection."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes + FORM_OVERHEAD:
            break
