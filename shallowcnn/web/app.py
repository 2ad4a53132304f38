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

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .jobs import DEFAULT_MAX_UPLOAD_MB, DEFAULT_WAITING, DEFAULT_WORKERS, QueueFull, ResultStore, ScanQueue
from .scanner import UploadRejected, png_bytes, scan_upload
from .uploads import drain, receive_upload

STATIC = Path(__file__).with_name("static")
# The page loads nothing from elsewhere; the browser is told to refuse anything that tries.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
CSV_COLUMNS = ["x", "y", "probability", "logit", "window_x", "window_y", "window_width", "window_height"]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class ServerState:
    """What the routes share: the model, the queue, recent results and the upload folder."""

    def __init__(self, model, model_info: dict, max_upload_bytes: int, workers: int, waiting: int,
                 render_overlay: bool = True):
        self.model, self.model_info = model, model_info
        self.max_upload_bytes = int(max_upload_bytes)
        self.queue = ScanQueue(workers, waiting)
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
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)


async def model_route(request):
    state = request.app.state.server
    q = state.queue
    return JSONResponse({**state.model_info,
                         "limits": {"max_upload_bytes": state.max_upload_bytes, "scan_workers": q.workers,
                                    "scans_waiting": q.waiting}})


async def scan_route(request):
    state = request.app.state.server
    start = time.perf_counter()
    try:
        state.queue.take_place()
    except QueueFull as e:
        await drain(request, state.max_upload_bytes)
        return error(503, str(e))
    upload, submitted = None, False
    try:
        upload = await receive_upload(request, state.upload_dir, state.max_upload_bytes)
        received = time.perf_counter()
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
    except UploadRejected as e:
        return error(e.status, e.message)
    finally:
        if not submitted:                    # refused on the way in: release here
            if upload is not None:
                upload.path.unlink(missing_ok=True)
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


async def http_error(request, exc):
    if request.url.path.startswith("/api/"):
        return error(exc.status_code, exc.detail)
    return Response(exc.detail, status_code=exc.status_code, media_type="text/plain")


async def server_error(request, exc):
    # A bug in one request must not stop the server; the message says no more than this.
    return error(500, f"internal error while handling {request.url.path} ({type(exc).__name__})")


# ---------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------


def create_app(model, model_name: str = "model", bundled: bool = False,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, workers: int = DEFAULT_WORKERS,
               waiting: int = DEFAULT_WAITING, render_overlay: bool = True) -> Starlette:
    """The Starlette app serving ``model`` (a loaded :class:`~shallowcnn.model.ShallowCNN`).

    model_name     shown on the page and by ``GET /api/model``
    bundled        True for the packaged phantom model: the page warns that it never saw
                   a real mammogram
    max_upload_mb  uploads larger than this get 413
    workers, waiting  scans at once and scans in line (more get 503)
    render_overlay make the matplotlib overlay figure for each scan (about a second)

    The private upload folder is removed when the app shuts down (lifespan).
    """
    state = ServerState(model, describe_model(model, model_name, bundled), max_upload_mb * 2**20,
                        workers, waiting, render_overlay)

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
    return app
