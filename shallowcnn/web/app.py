"""The web application: one page and a small JSON API, on Starlette.

Routes::

    GET  /                                  the page (static/index.html, app.js, style.css)
    GET  /api/model                         the served model: architecture, training, limits
    POST /api/scan                          multipart field ``file`` -> the scan as JSON
    GET  /api/results/{id}/image.png        the scanned 8-bit mammogram (display size)
    GET  /api/results/{id}/heatmap.png      one grey pixel per window (see the JSON's "heatmap")
    GET  /api/results/{id}/overlay.png      the overlay figure of ``shallowcnn scan``
    GET  /api/results/{id}/window/{k}.png   candidate k's 144 x 144 window
    GET  /api/results/{id}/detections.json  ... .csv; ``?threshold=p`` (default: the scan's)

Every error under ``/api`` is JSON ``{"error": message}`` with a 4xx status (503 when the
scan queue is full); nothing a client sends can stop the server.

:class:`Guard` wraps the whole application: every response carries the security headers
(CSP, nosniff, no referrer), and a request whose ``Host`` (or ``Origin``) is not a name
this server answers to gets 403, so that a web page elsewhere cannot reach it through
DNS rebinding or a cross-site form. An upload holds a place in the scan queue only once
its body has fully arrived: a client that stalls mid-body gets 408 after ``BODY_IDLE_S``
and meanwhile holds one of ``uploads`` upload slots, never a scan.

Why Starlette (with uvicorn): it is small, asynchronous and well kept (FastAPI is built on
it), so an upload is read as a stream and can be cut off at the size limit while other
requests are served; its TestClient drives the app in-process for the tests; and it adds
no validation or templating layers this one page does not need. Flask would read each
upload in a blocking worker and needs a separate server for concurrency.
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .jobs import DEFAULT_MAX_UPLOAD_MB, DEFAULT_WAITING, DEFAULT_WORKERS, QueueFull, ResultStore, ScanQueue
from .scanner import UploadRejected, png_bytes, scan_upload
from .uploads import BODY_IDLE_S, drain, receive_upload, refuse_image_bombs

STATIC = Path(__file__).with_name("static")
# The page loads nothing from elsewhere; the browser is told to refuse anything that tries.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The names a server bound to this machine answers to (``--host`` adds its own).
LOCAL_HOST_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
DEFAULT_UPLOADS = 16          # uploads arriving at once (each at most max_upload_mb on disk)
CSV_COLUMNS = ["x", "y", "probability", "logit", "window_x", "window_y", "window_width", "window_height"]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class ServerState:
    """What the routes share: the model, the queue, recent results and the upload folder."""

    def __init__(self, model, model_info: dict, max_upload_bytes: int, workers: int, waiting: int,
                 render_overlay: bool = True, uploads: int = DEFAULT_UPLOADS, body_idle_s: float = BODY_IDLE_S):
        self.model, self.model_info = model, model_info
        self.max_upload_bytes = int(max_upload_bytes)
        self.queue = ScanQueue(workers, waiting)
        self.uploads, self.uploading = uploads, 0     # bodies being received now (event loop only)
        self.body_idle_s = body_idle_s
        self.results = ResultStore()
        self.render_overlay = render_overlay
        # mkdtemp makes the folder readable by this user only (mode 0700)
        self.upload_dir = Path(tempfile.mkdtemp(prefix="shallowcnn-serve-"))

    def close(self):
        self.queue.close()
        shutil.rmtree(self.upload_dir, ignore_errors=True)


def describe_model(model, name: str, bundled: bool) -> dict:
    """``GET /api/model``: the model file's metadata plus what the server adds."""
    meta = dict(getattr(model, "metadata", {}) or {})
    return {"name": name, "bundled": bundled, "backend": model.backend,
            "warning": meta.pop("warning", None),
            "architecture": meta.pop("architecture", None), "version": meta.pop("version", None),
            "training": meta.pop("training", None), "metadata": meta,
            "n_params": model.n_params()}


# ---------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------


async def page(request):
    return FileResponse(STATIC / "index.html")       # Guard adds SECURITY_HEADERS


async def model_route(request):
    state = request.app.state.server
    q = state.queue
    return JSONResponse({**state.model_info,
                         "limits": {"max_upload_bytes": state.max_upload_bytes, "scan_workers": q.workers,
                                    "scans_waiting": q.waiting}})


async def scan_route(request):
    state = request.app.state.server
    start = time.perf_counter()
    if state.uploading >= state.uploads:
        await drain(request, state.max_upload_bytes, state.body_idle_s)
        return error(503, f"the server is busy: {state.uploads} uploads are arriving; try again shortly")
    state.uploading += 1
    try:
        upload = await receive_upload(request, state.upload_dir, state.max_upload_bytes, state.body_idle_s)
    except UploadRejected as e:
        return error(e.status, e.message)
    finally:
        state.uploading -= 1
    received = time.perf_counter()
    submitted, placed = False, False
    try:
        refuse_image_bombs(upload.path, upload.name)
        state.queue.take_place()        # only now: a stalled upload never holds a scan's place
        placed = True
        # From here the queue owns the place and the upload: both are released when the
        # job ends, even if this request is cancelled (client gone) while it waits.
        future = state.queue.submit(_timed_scan, state, upload,
                                    cleanup=lambda: upload.path.unlink(missing_ok=True))
        submitted = True
        outcome, started = await asyncio.wrap_future(future)
        report = outcome.report
        key = state.results.add(outcome)
        base = f"/api/results/{key}"
        report.update(id=key, model={"name": state.model_info["name"], "bundled": state.model_info["bundled"]},
                      urls={"image": f"{base}/image.png", "heatmap": f"{base}/heatmap.png",
                            "overlay": f"{base}/overlay.png" if "overlay.png" in outcome.pictures else None,
                            "detections_json": f"{base}/detections.json",
                            "detections_csv": f"{base}/detections.csv"})
        for k, det in enumerate(report["candidates"]):
            det["window_url"] = f"{base}/window/{k}.png"
        by_window = {tuple(d["window_top_left"]): d["window_url"] for d in report["candidates"]}
        for det in report["detections"]:
            det["window_url"] = by_window.get(tuple(det["window_top_left"]))
        report["timings"].update(upload_s=round(received - start, 3), queue_s=round(started - received, 3),
                                 total_s=round(time.perf_counter() - start, 3))
        return JSONResponse(report)
    except QueueFull as e:
        return error(503, str(e))
    except UploadRejected as e:
        return error(e.status, e.message)
    finally:
        if not submitted:                    # refused on the way in: release here
            upload.path.unlink(missing_ok=True)
            if placed:
                state.queue.give_back_place()


def _timed_scan(state, upload):
    """In a worker thread: the scan and the moment it left the queue."""
    started = time.perf_counter()
    return scan_upload(state.model, upload.path, upload.name, overlay=state.render_overlay), started


def filtered(report: dict, threshold: float) -> list:
    """The detections at ``threshold``: NMS was run once at threshold 0 and a window is
    suppressed only by stronger ones, so the peaks >= threshold are exactly the
    detections a scan at that threshold gives (see :func:`shallowcnn.scan.find_peaks`)."""
    if threshold == report["scan"]["threshold"]:
        return report["detections"]
    return [d for d in report["candidates"] if d["probability"] >= threshold]


def detections_csv(detections: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for d in detections:
        w = d["window"]
        writer.writerow([d["x"], d["y"], d["probability"], d["logit"], w["x"], w["y"], w["width"], w["height"]])
    return buffer.getvalue()


async def result_route(request):
    state = request.app.state.server
    outcome = state.results.get(request.path_params["key"])
    name = request.path_params["name"]
    if outcome is None:
        return error(404, "no such result (results are kept for the last few scans only)")
    if name in outcome.pictures:
        return Response(outcome.pictures[name], media_type="image/png")
    if name in ("detections.json", "detections.csv"):
        try:
            threshold = float(request.query_params.get("threshold", outcome.report["scan"]["threshold"]))
        except ValueError:
            return error(400, "threshold must be a number")
        if not 0 <= threshold <= 1:
            return error(400, f"threshold must lie in [0, 1], got {threshold}")
        detections = filtered(outcome.report, threshold)
        stem = Path(outcome.report["file"]["name"]).stem or "scan"
        disposition = {"Content-Disposition": f'attachment; filename="{_safe(stem)}.detections.{name[-4:].strip(".")}"'}
        if name.endswith(".csv"):
            return Response(detections_csv(detections), media_type="text/csv", headers=disposition)
        body = {k: outcome.report[k] for k in ("file", "image", "scan")}
        body["scan"] = {**body["scan"], "threshold": threshold}
        body["detections"] = detections
        return Response(json.dumps(body, indent=2), media_type="application/json", headers=disposition)
    return error(404, f"no such result file {name!r}")


async def window_route(request):
    state = request.app.state.server
    outcome = state.results.get(request.path_params["key"])
    k = request.path_params["k"]
    if outcome is None or outcome.windows is None or not 0 <= k < len(outcome.windows):
        return error(404, "no such window")
    return Response(png_bytes(outcome.windows[k]), media_type="image/png")


def _safe(stem: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:80]


def host_name(value: str) -> str | None:
    """``localhost:8000`` -> ``localhost``, ``[::1]:8000`` -> ``::1``, ``http://a.b`` -> ``a.b``;
    None when it does not parse."""
    if "//" not in value:
        value = "//" + value
    try:
        name = urlsplit(value).hostname
    except ValueError:
        return None
    return name or None


class Guard:
    """ASGI middleware around the whole app (pages, API, static files, errors).

    * Every HTTP response gets :data:`SECURITY_HEADERS` (a route's own value wins).
    * ``Host`` must name this server (``allowed_hosts``; None accepts any, for a server
      bound to all interfaces), and an ``Origin``, when the browser sends one, must be
      one of those names too; otherwise 403 with a message.
    """

    def __init__(self, app, allowed_hosts):
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}

    def refusal(self, scope) -> str | None:
        headers = Headers(scope=scope)
        host = host_name(headers.get("host", ""))
        if host is None:
            return "the request has no valid Host header"
        if self.allowed is not None and host.lower() not in self.allowed:
            return f"this server does not answer to the host name {host!r}"
        origin = headers.get("origin")
        if origin is not None:
            origin_host = host_name(origin) if origin != "null" else None
            if origin_host is None or (origin_host.lower() not in (self.allowed or {host.lower()})):
                return f"requests from the page {origin[:80]!r} are not accepted"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        reason = self.refusal(scope)
        if reason is not None:
            if scope["path"].startswith("/api/"):
                response = error(403, reason)
            else:
                response = PlainTextResponse(reason, status_code=403)
            return await response(scope, receive, send_with_headers)
        return await self.app(scope, receive, send_with_headers)


async def http_error(request, exc):
    if request.url.path.startswith("/api/"):
        return error(exc.status_code, exc.detail)
    return Response(exc.detail, status_code=exc.status_code, media_type="text/plain")


async def server_error(request, exc):
    # A bug in one request must not stop the server; the message says no more than this.
    # (This handler answers outside Guard, which therefore cannot add the headers.)
    response = error(500, f"internal error while handling {request.url.path} ({type(exc).__name__})")
    response.headers.update(SECURITY_HEADERS)
    return response


# ---------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------


def create_app(model, model_name: str = "model", bundled: bool = False,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, workers: int = DEFAULT_WORKERS,
               waiting: int = DEFAULT_WAITING, render_overlay: bool = True,
               allowed_hosts=LOCAL_HOST_NAMES, uploads: int = DEFAULT_UPLOADS,
               body_idle_s: float = BODY_IDLE_S) -> Starlette:
    """The Starlette app serving ``model`` (a loaded :class:`~shallowcnn.model.ShallowCNN`).

    model_name     shown on the page and by ``GET /api/model``
    bundled        True for the packaged phantom model: the page warns that it never saw
                   a real mammogram
    max_upload_mb  uploads larger than this get 413
    workers, waiting  scans at once and scans in line (more get 503)
    render_overlay make the matplotlib overlay figure for each scan (about a second)
    allowed_hosts  host names the Host and Origin headers may carry (None: any, see
                   :class:`Guard`)
    uploads        bodies received at once (more get 503); body_idle_s: a body that
                   sends nothing for this long gets 408

    The private upload folder is removed when the app shuts down (lifespan).
    """
    if not 0 < max_upload_mb < 2**20:
        raise ValueError(f"max_upload_mb must lie in (0, {2**20}), got {max_upload_mb}")
    state = ServerState(model, describe_model(model, model_name, bundled), max_upload_mb * 2**20,
                        workers, waiting, render_overlay, uploads, body_idle_s)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            state.close()

    routes = [
        Route("/", page),
        Route("/api/model", model_route),
        Route("/api/scan", scan_route, methods=["POST"]),
        Route("/api/results/{key}/window/{k:int}.png", window_route),
        Route("/api/results/{key}/{name}", result_route),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.server = state
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)
    return app
