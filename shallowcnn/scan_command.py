"""``shallowcnn scan``: scan mammogram files and write what was found.

Per image (:func:`write_scan_outputs`): the probability map (.npy), the overlay figure
(:func:`shallowcnn.plots.plot_scan_overlay`) and the detections (.json); over all images
with annotations, the FROC curve (:mod:`shallowcnn.froc`). The scanning itself is
:func:`shallowcnn.scan.scan_image`.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from .constants import PATCH_SIZE, PIXEL_MM
from .data.images import ScanError, expand_inputs
from .froc import DEFAULT_HIT_RADIUS, froc_curve, image_truth, write_froc
from .kernels import BackendUnavailable
from .messages import cap, listed
from .model import ShallowCNN
from .options import non_negative_float, positive_float, positive_int, probability
from .scan import (DEFAULT_MIN_BREAST, DEFAULT_STRIDE, DEFAULT_THRESHOLD, DEFAULT_TILE, ScanResult,
                   scan_image)
from .scan_dask import add_arguments as add_dask_arguments, scanning_on_dask
from .storage import OutputError, StoreError, atomic_write_text, check_writable_dir, save_npy

# What makes one image fail without costing the others.
SCAN_FAILURES = (ScanError, ValueError, OverflowError, MemoryError, RecursionError)


def write_scan_outputs(result: ScanResult, out_dir, truth=None, name: str | None = None) -> dict:
    """Write ``<name>.prob.npy``, ``<name>.overlay.png`` and ``<name>.detections.json``.

    returns the JSON content (a dict). ``truth`` (:class:`~shallowcnn.froc.ImageTruth`)
    adds each true cluster (hit or missed) and each detection's verdict.
    """
    from .plots import plot_scan_overlay      # matplotlib loads only when figures are drawn

    out_dir = Path(out_dir)
    name = name or result.image.name
    paths = {"prob_map": out_dir / f"{name}.prob.npy", "overlay": out_dir / f"{name}.overlay.png",
             "detections": out_dir / f"{name}.detections.json"}
    save_npy(paths["prob_map"], result.prob_map)
    plot_scan_overlay(result, paths["overlay"], truth=truth)
    content = result.metadata()
    content["files"] = {k: p.name for k, p in paths.items()}
    content["detections"] = [d.to_dict() for d in result.detections]
    if truth is not None:
        for det, cluster in zip(content["detections"], truth.detection_cluster):
            det["hits_cluster"] = cluster          # index into true_clusters, None = false positive
        content.update(truth.to_dict())
    atomic_write_text(paths["detections"], json.dumps(content, indent=2) + "\n")
    return content


# ---------------------------------------------------------------------------------------
# Command line: shallowcnn scan MODEL IMAGE [IMAGE ...] -o OUT
# ---------------------------------------------------------------------------------------


def output_names(paths) -> list:
    """A distinct output name per input, also where case is ignored (macOS, Windows):

    1. the file's stem (``img``);
    2. where one folder holds two files of the same stem, the extension too
       (``img.dcm``, ``img.png`` -> ``img_dcm``, ``img_png``);
    3. where inputs from different folders share a name (``a/img.dcm``, ``b/img.dcm``),
       as many parent folders as it takes (``a_img``, ``b_img``);
    4. as the last resort a number, never one that another input's name already is
       (``img``, ``img``, ``img-2.dcm`` -> ``img``, ``img-3``, ``img-2``)."""
    paths = [Path(p) for p in paths]
    same_folder = Counter((p.parent, p.stem.lower()) for p in paths)
    names = [f"{p.stem}_{p.suffix.lstrip('.')}" if same_folder[(p.parent, p.stem.lower())] > 1 and p.suffix
             else p.stem for p in paths]
    depth = 0
    while depth < 8:
        counts = Counter(n.lower() for n in names)
        if max(counts.values(), default=1) == 1:
            break
        depth += 1
        names = ["_".join([*p.parts[-1 - depth:-1], p.stem]) if counts[n.lower()] > 1 else n
                 for p, n in zip(paths, names)]
    taken = Counter(n.lower() for n in names)
    used = set()
    for k, name in enumerate(names):
        candidate, number = name, 1
        while candidate.lower() in used or (candidate != name and taken[candidate.lower()]):
            number += 1
            candidate = f"{name}-{number}"
        used.add(candidate.lower())
        names[k] = candidate
    return names


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
    p.add_argument("--threshold", type=probability, default=DEFAULT_THRESHOLD,
                   help=f"probability for a detection, in [0, 1] (default {DEFAULT_THRESHOLD})")
    p.add_argument("--min-breast", type=probability, default=DEFAULT_MIN_BREAST,
                   help=f"least fraction of a window inside the breast to scan it (default {DEFAULT_MIN_BREAST})")
    p.add_argument("--nms", type=non_negative_float, default=PATCH_SIZE,
                   help=f"non-maximum suppression distance in pixels (default {PATCH_SIZE}: one patch)")
    p.add_argument("--hit-radius", type=non_negative_float, default=DEFAULT_HIT_RADIUS,
                   help=f"a detection within this many pixels of a true cluster centre (or inside "
                        f"its outline) hits it (default {DEFAULT_HIT_RADIUS:g})")
    p.add_argument("--pixel-size", type=positive_float, default=None, metavar="MM",
                   help=f"pixel size of the input in mm, 0.01 - 1 (default: DICOM header; {PIXEL_MM} for "
                        f"PNG); images are resampled to {PIXEL_MM} mm")
    p.add_argument("--backend", default="auto", choices=("numpy", "numba", "cuda", "auto"),
                   help="numpy, numba, cuda or auto (default auto)")
    p.add_argument("--tile", type=positive_int, default=DEFAULT_TILE,
                   help=f"tile side in conv2 positions; bounds memory (default {DEFAULT_TILE})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dask_arguments(p)
    p.set_defaults(func=run_command)


def scan_one(model, path, hit_radius: float = DEFAULT_HIT_RADIUS, **options):
    """(ScanResult, ImageTruth or None) of one image, or the exception that stopped it.

    options: keyword arguments of :func:`~shallowcnn.scan.scan_image`. A Dask worker runs
    this too (:mod:`shallowcnn.scan_dask`), so both ways fail the same way.
    """
    try:
        result = scan_image(model, path, **options)
        return result, image_truth(result, hit_radius=hit_radius)
    except SCAN_FAILURES as e:
        return e


def scan_paths(model, paths, out, stride: int = DEFAULT_STRIDE, threshold: float = DEFAULT_THRESHOLD,
               min_breast_fraction: float = DEFAULT_MIN_BREAST, nms_px: float = PATCH_SIZE,
               hit_radius: float = DEFAULT_HIT_RADIUS, pixel_size_mm=None, tile: int = DEFAULT_TILE,
               verbose: bool = True, scanned=None) -> dict:
    """Scan every image of ``paths`` into the folder ``out``; returns the summary dict.

    Per image: ``<name>.prob.npy``, ``<name>.overlay.png``, ``<name>.detections.json``;
    over the annotated images: ``froc.json`` and ``froc.png``; and ``scan_summary.json``.
    An image that cannot be scanned is reported and skipped (listed under "failed").
    ``scanned``: (path, :func:`scan_one`'s answer) for each of ``paths`` in order, computed
    elsewhere (:mod:`shallowcnn.scan_dask`: by Dask workers); by default here, one by one.
    """
    from .plots import plot_froc              # matplotlib loads only when figures are drawn

    out = Path(out)
    truths, summary, failed = [], [], []
    if scanned is None:
        options = dict(stride=stride, threshold=threshold, min_breast_fraction=min_breast_fraction,
                       nms_px=nms_px, pixel_size_mm=pixel_size_mm, tile=tile,
                       progress={"position": 1} if verbose else False)
        scanned = ((path, scan_one(model, path, hit_radius, **options)) for path in paths)
    bar = tqdm(zip(scanned, output_names(paths)), total=len(paths), desc="images", unit="image",
               disable=None if verbose else True)
    for (path, outcome), name in bar:
        path = Path(path)
        bar.set_postfix_str(path.name[:30])
        if isinstance(outcome, BaseException):
            # one image that cannot be scanned never costs the others
            e = outcome
            error = str(e) if isinstance(e, ScanError) else f"{path}: {type(e).__name__}: {cap(e)}"
            tqdm.write(f"skipped {error}", file=sys.stderr)
            failed.append({"image": str(path), "error": error})
            continue
        result, truth = outcome
        try:
            content = write_scan_outputs(result, out, truth=truth, name=name)
        except OSError as e:
            # a full disk (or a file that cannot be written): name it and go on with the
            # other images, whose smaller files may still fit
            error = f"{path}: cannot write its results: {e}"
            tqdm.write(f"skipped {error}", file=sys.stderr)
            failed.append({"image": str(path), "error": error})
            continue
        if truth is not None:
            truths.append(truth)
        line = (f"{path.name}: {result.n_windows} windows in {result.seconds:.1f} s, "
                f"{len(result.detections)} detection(s)")
        if truth is not None:
            line += f", {sum(truth.hit)}/{len(truth.clusters)} true clusters hit"
        if verbose:
            tqdm.write(line)
        summary.append({"image": str(path), "detections": len(result.detections),
                        "seconds": round(result.seconds, 3), "files": content["files"],
                        **({"clusters": len(truth.clusters), "hit": int(sum(truth.hit))}
                           if truth is not None else {})})

    report = {"backend": model.backend, "stride": stride, "threshold": threshold,
              "images": summary, "failed": failed}
    if truths:
        curve = froc_curve(truths)
        write_froc(curve, out / "froc.json", threshold=threshold)
        plot_froc(curve, out / "froc.png", threshold=threshold)
        op = curve.at_threshold(threshold)
        report["froc"] = {"file": "froc.json", "images": curve.n_images, "clusters": curve.n_clusters,
                          "sensitivity": op["sensitivity"], "fp_per_image": op["fp_per_image"]}
        if verbose:
            print(f"FROC over {curve.n_images} annotated image(s), {curve.n_clusters} cluster(s): "
                  f"at p >= {threshold:g} sensitivity {op['sensitivity']:.3f}, "
                  f"{op['fp_per_image']:.2f} false positives per image -> {out / 'froc.png'}")
    atomic_write_text(out / "scan_summary.json", json.dumps(report, indent=2) + "\n")
    return report


def run_command(args) -> int:
    from .dask_cluster import DaskUnavailable

    def fail(message, status=2):
        print(f"shallowcnn scan: error: {message}", file=sys.stderr)
        return status

    try:
        paths = expand_inputs(args.images)
        model = ShallowCNN.load(args.model, backend=args.backend)
        out = check_writable_dir(args.output)
    except (ScanError, StoreError, OutputError, BackendUnavailable, ValueError) as e:
        return fail(e)
    options = dict(stride=args.stride, threshold=args.threshold, min_breast_fraction=args.min_breast,
                   nms_px=args.nms, pixel_size_mm=args.pixel_size, tile=args.tile)
    try:
        with scanning_on_dask(args, model, paths, args.hit_radius, options, verbose=not args.quiet) as scanned:
            report = scan_paths(model, paths, out, hit_radius=args.hit_radius, verbose=not args.quiet,
                                scanned=scanned, **options)
    except (DaskUnavailable, ConnectionError) as e:
        return fail(e, status=3 if isinstance(e, DaskUnavailable) else 2)
    except OSError as e:              # the summary or the FROC files (an OSError names its path)
        return fail(f"cannot write the results: {e}", status=1)
    failed = report["failed"]
    print(f"wrote {len(report['images'])} scan(s) to {out}" + (f"; {len(failed)} image(s) failed:" if failed else ""))
    for line in listed(f"  {f['error']}" for f in failed):
        print(line)
    return 1 if failed else 0
