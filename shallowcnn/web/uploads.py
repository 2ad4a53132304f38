"""Receiving an upload safely: streamed to a private folder, size checked on the way.

A multipart body is parsed *as it arrives* (python-multipart's push parser) and the
field ``file`` is written chunk by chunk into a new file that the server names
(``tempfile.mkstemp`` inside the server's private 0700 folder). So

* the client's file name never becomes a path: it is kept only as a label
  (:func:`display_name`), and a name like ``../../etc/passwd`` is harmless;
* the size limit holds while streaming: the upload stops at the first byte over the
  limit, so a huge body never fills the disk or memory;
* a body that stalls (no bytes for ``idle_s`` seconds, or not finished after ``total_s``)
  is refused with 408, so a client that opens an upload and stops sending holds nothing
  for long (and, see app.py, never holds a place in the scan queue);
* an image whose header declares more pixels than Pillow's decompression-bomb limit is
  refused (413) before anything decodes it (:func:`refuse_image_bombs`);
* the caller deletes the file after the scan (:func:`receive_upload` deletes it itself
  when anything goes wrong on the way in).
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from .scanner import UploadRejected

FIELD = "file"
FORM_OVERHEAD = 64 * 1024      # bytes of multipart headers and small fields allowed on top
BODY_IDLE_S = 20.0             # an upload that sends nothing for this long gets 408
BODY_TOTAL_S = 600.0           # ... and one still unfinished after this long (a slow drip)


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


async def body_chunks(request, idle_s: float = BODY_IDLE_S, total_s: float = BODY_TOTAL_S):
    """The request body's chunks as they arrive; :class:`UploadRejected` (408) when none
    comes for ``idle_s`` seconds or the body is not complete after ``total_s``."""
    chunks = request.stream().__aiter__()
    deadline = time.monotonic() + total_s
    while True:
        wait = min(idle_s, deadline - time.monotonic())
        try:
            if wait <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(chunks.__anext__(), wait)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise UploadRejected(408, f"the upload stalled: no data for {idle_s:g} s or not complete "
                                      f"after {total_s:g} s; send it again") from None
        yield chunk


async def receive_upload(request, folder: Path, max_bytes: int, idle_s: float = BODY_IDLE_S,
                         total_s: float = BODY_TOTAL_S) -> Upload:
    """Stream the multipart request into a new file in ``folder``.

    Raises :class:`UploadRejected`: 400 for a body that is not multipart/form-data or has
    no ``file`` field or an empty one, 413 over ``max_bytes``, 408 for a body that
    stalls (see :func:`body_chunks`).
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
            async for chunk in body_chunks(request, idle_s, total_s):
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


async def drain(request, max_bytes: int, idle_s: float = BODY_IDLE_S) -> None:
    """Read and drop the body (at most ``max_bytes`` + overhead, giving up on a stall), so
    that a client still sending gets the refusal instead of a broken connection."""
    received = 0
    try:
        async for chunk in body_chunks(request, idle_s, idle_s):
            received += len(chunk)
            if received > max_bytes + FORM_OVERHEAD:
                break
    except UploadRejected:
        pass


def refuse_image_bombs(path: Path, display_name: str) -> None:
    """Refuse (413) an image whose header declares more pixels than the scanner reads
    (``data.dicom.MAX_IMAGE_PIXELS`` / ``MAX_IMAGE_SIDE``), or more than Pillow will open
    at all (its decompression-bomb limit, about 179 M pixels): opening reads the header
    only, so a tiny PNG that claims 20000 x 20000 pixels costs nothing here. Anything else
    (a DICOM, not an image at all) is left to the scanner's own checks."""
    import warnings

    from PIL import Image

    from ..data.dicom import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE

    too_large = f"{display_name}: the image is too large to scan"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # the check follows
            with Image.open(path) as img:
                width, height = img.size
    except Image.DecompressionBombError as e:
        raise UploadRejected(413, f"{too_large} ({e})") from None
    except Exception:   # not an image Pillow knows: the scanner says what it is
        return
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise UploadRejected(413, f"{too_large}: its header declares {width} x {height} pixels; at most "
                                  f"{MAX_IMAGE_SIDE} per side and {MAX_IMAGE_PIXELS:,} in all are read")
