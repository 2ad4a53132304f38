"""``shallowcnn serve [MODEL]``: the page and API of :mod:`shallowcnn.web.app` on uvicorn.

It binds to 127.0.0.1 (this machine only) unless ``--host`` says otherwise: the server
has no login, so exposing it to a network is a decision to make on purpose. Starlette
and uvicorn are the optional extra ``pip install ".[web]"``; without them the command
says so instead of failing with a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..kernels import BackendUnavailable
from ..model import ShallowCNN
from ..storage import StoreError
from ..web.bundled import BUNDLED_MODEL_PATH, load_bundled_model
from ..web.jobs import DEFAULT_MAX_UPLOAD_MB, DEFAULT_WAITING, DEFAULT_WORKERS
from .common import CommandError, add_backend_option, non_negative_int, positive_int, tcp_port, upload_mib

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="web page and JSON API to scan mammograms in a browser (needs the [web] extra)",
        description="Serve a page where a DICOM or PNG mammogram is dropped in and shown with the "
                    "network's probability heatmap, its detections and their 144 x 144 windows, "
                    "plus a JSON API (POST /api/scan, GET /api/model). Without MODEL it serves "
                    "the small model shipped with the package, trained on the synthetic phantom "
                    "only: it has never seen a real mammogram.")
    p.add_argument("model", nargs="?", default=None,
                   help="trained model (.npz), e.g. RUN_DIR/model.npz (default: the bundled phantom model)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 exposes "
                        f"the unauthenticated server to the network)")
    p.add_argument("--port", type=tcp_port, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    add_backend_option(p)
    p.add_argument("--max-upload-mb", type=upload_mib, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest upload accepted, in MiB; larger ones get 413 (default {DEFAULT_MAX_UPLOAD_MB})")
    p.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS,
                   help=f"scans run at the same time, each in its own thread (default {DEFAULT_WORKERS}; "
                        f"one scan already uses every core)")
    p.add_argument("--waiting", type=non_negative_int, default=DEFAULT_WAITING,
                   help=f"uploads allowed to wait for a scan; more get 503 (default {DEFAULT_WAITING})")
    p.set_defaults(func=run_command)


def load_served_model(model_path, backend: str):
    """``(model, name, bundled)`` for MODEL, or the bundled model when MODEL is None."""
    if model_path is None:
        return load_bundled_model(backend), BUNDLED_MODEL_PATH.name, True
    return ShallowCNN.load(model_path, backend=backend), Path(model_path).name, False


def run_command(args) -> int:
    try:                       # the optional [web] extra, imported only by this command
        import uvicorn

        from ..web.app import LOCAL_HOST_NAMES, WILDCARD_HOSTS, create_app
    except ImportError as e:
        raise CommandError(f"the web server needs the [web] extra: pip install \".[web]\" ({e})") from None
    try:
        model, name, bundled = load_served_model(args.model, args.backend)
    except (StoreError, BackendUnavailable, ValueError) as e:
        raise CommandError(e) from None
    from ..web.scanner import warm_up     # here: it draws with matplotlib, which other commands need not load

    layer = warm_up(model)
    if layer == "workqueue" and args.workers > 1:
        # numba's workqueue layer aborts the process when two threads launch parallel
        # kernels at once; omp and tbb allow it.
        raise CommandError("--workers > 1 needs numba's omp or tbb threading layer, and this numba uses "
                           "'workqueue' (shallowcnn's default, the fastest for one scan at a time); use --workers 1 "
                           "(one scan already uses every core), or start the server with "
                           "NUMBA_THREADING_LAYER=omp")
    if args.host.strip("[]") in WILDCARD_HOSTS:
        # Bound to every interface: the names it is reached by are unknown, so any Host is
        # accepted (an Origin must still match the Host).
        allowed_hosts = None
        print(f"shallowcnn serve: warning: --host {args.host} exposes this server, which has no login, "
              "to every network this machine is on; anyone who can reach the port can upload images "
              "and use its CPU. Use --host 127.0.0.1 (the default) unless that is what you want.",
              file=sys.stderr, flush=True)
    else:
        allowed_hosts = (*LOCAL_HOST_NAMES, args.host)
    app = create_app(model, name, bundled, max_upload_mb=args.max_upload_mb, workers=args.workers,
                     waiting=args.waiting, allowed_hosts=allowed_hosts)
    print(f"serving {name} ({'bundled phantom model, never saw a real mammogram' if bundled else 'your model'}, "
          f"backend {model.backend}) on http://{args.host}:{args.port}/  (Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
