"""``shallowcnn scan``: scan mammogram files into a folder of heatmaps, detections and a FROC curve.

The work is :func:`shallowcnn.scan_files.scan_paths`; with ``--workers`` or ``--scheduler``
the images are scanned by Dask workers (:mod:`shallowcnn.scan_dask`).
"""
from __future__ import annotations

from ..constants import PATCH_SIZE, PIXEL_MM
from ..dask_cluster import DaskSettings, DaskUnavailable
from ..data.images import ScanError, expand_inputs
from ..froc import DEFAULT_HIT_RADIUS
from ..kernels import BackendUnavailable
from ..messages import listed
from ..model import ShallowCNN
from ..scan import DEFAULT_MIN_BREAST, DEFAULT_STRIDE, DEFAULT_THRESHOLD, DEFAULT_TILE
from ..scan_dask import scanning_on_dask
from ..scan_files import ScanSettings, scan_paths
from ..storage import OutputError, StoreError, check_writable_dir
from .common import (CommandError, add_backend_option, add_dask_options, non_negative_float, positive_float,
                     positive_int, probability)


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "scan", help="scan whole mammograms: probability heatmap, detected clusters, FROC",
        description="Compute the probability of a microcalcification cluster for every 144 x 144 "
                    "window of each mammogram (fully convolutional: the convolutions run once per "
                    "image). Writes, per image, <name>.prob.npy (window probabilities; NaN for "
                    "windows with less than --min-breast of breast), <name>.overlay.png and "
                    "<name>.detections.json; with INbreast/phantom annotations also the hits and "
                    "misses per image and, over all annotated images, froc.json and froc.png.")
    p.add_argument("model", help="trained model (.npz), e.g. RUN_DIR/model.npz")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="DICOM or PNG/TIFF files, or a folder (INbreast/phantom layout or plain)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the outputs")
    p.add_argument("--stride", type=positive_int, default=DEFAULT_STRIDE,
                   help=f"pixels between windows (default {DEFAULT_STRIDE}; fastest when it divides 128)")
    p.add_argument("--threshold", type=probability, default=None,
                   help=f"probability for a detection, in [0, 1] (default: the model's operating point, "
                        f"chosen on validation mammograms; {DEFAULT_THRESHOLD} for a model without one)")
    p.add_argument("--min-breast", type=probability, default=DEFAULT_MIN_BREAST,
                   help=f"least fraction of a window inside the breast to scan it (default {DEFAULT_MIN_BREAST})")
    p.add_argument("--nms", type=non_negative_float, default=None,
                   help=f"non-maximum suppression distance in pixels (default: the model's, chosen with its "
                        f"operating point on validation mammograms; {PATCH_SIZE} (one patch) for a model without one)")
    p.add_argument("--hit-radius", type=non_negative_float, default=DEFAULT_HIT_RADIUS,
                   help=f"a detection within this many pixels of a true cluster centre (or inside "
                        f"its outline, or within 1 mm of the hull of its calcifications) hits it "
                        f"(default {DEFAULT_HIT_RADIUS:g})")
    p.add_argument("--pixel-size", type=positive_float, default=None, metavar="MM",
                   help=f"pixel size of the input in mm, 0.01 - 1 (default: the DICOM's PixelSpacing, else "
                        f"ImagerPixelSpacing, else {PIXEL_MM}, said to be assumed); images are resampled to "
                        f"{PIXEL_MM} mm")
    add_backend_option(p)
    p.add_argument("--tile", type=positive_int, default=DEFAULT_TILE,
                   help=f"tile side in conv2 positions; bounds memory (default {DEFAULT_TILE})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dask_options(p, "spreading the images over Dask workers (needs pip install \"shallowcnn[dask]\")",
                     scheduler_note="; every image path must be readable by the workers",
                     workers_default="no cluster, the images one after another in this process",
                     threads_per="image")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    try:
        paths = expand_inputs(args.images)
        model = ShallowCNN.load(args.model, backend=args.backend)
        out = check_writable_dir(args.output)
    except (ScanError, StoreError, OutputError, BackendUnavailable, ValueError) as e:
        raise CommandError(e) from None
    settings = ScanSettings(stride=args.stride, threshold=args.threshold, min_breast_fraction=args.min_breast,
                            nms_px=args.nms, hit_radius=args.hit_radius, pixel_size_mm=args.pixel_size,
                            tile=args.tile)
    cluster = DaskSettings(args.scheduler, args.workers, args.numba_threads)
    try:
        with scanning_on_dask(cluster, model, paths, settings, verbose=not args.quiet) as scanned:
            report = scan_paths(model, paths, out, settings, verbose=not args.quiet, scanned=scanned)
    except DaskUnavailable as e:
        raise CommandError(e, status=3) from None
    except ConnectionError as e:
        raise CommandError(f"--scheduler: {e}" if args.scheduler else e) from None
    except OSError as e:              # the summary or the FROC files (an OSError names its path)
        raise CommandError(f"cannot write the results: {e}", status=1) from None
    failed = report["failed"]
    print(f"wrote {len(report['images'])} scan(s) to {out}" + (f"; {len(failed)} image(s) failed:" if failed else ""))
    for line in listed(f"  {f['error']}" for f in failed):
        print(line)
    return 1 if failed else 0
