"""Scan mammogram files and write what was found (``shallowcnn scan``, the demo).

Per image (:func:`write_scan_outputs`): the probability map (.npy), the overlay figure
(:func:`shallowcnn.overlay.plot_scan_overlay`) and the detections (.json); over all images
with annotations, the FROC curve (:mod:`shallowcnn.froc`). The scanning itself is
:func:`shallowcnn.scan.scan_image`; :class:`ScanSettings` holds its options.
:mod:`shallowcnn.scan_dask` runs :func:`scan_one` on Dask workers instead of here.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from .data.images import ScanError
from .froc import DEFAULT_HIT_RADIUS, froc_curve, image_truth, localization_summary, write_froc
from .froc_figure import plot_froc
from .messages import cap
from .operating_point import model_nms, model_threshold
from .overlay import plot_scan_overlay
from .scan import DEFAULT_MIN_BREAST, DEFAULT_STRIDE, DEFAULT_TILE, ScanResult, scan_image
from .storage import atomic_write_text, save_npy

# What makes one image fail without costing the others.
SCAN_FAILURES = (ScanError, ValueError, OverflowError, MemoryError, RecursionError)


@dataclass(frozen=True)
class ScanSettings:
    """How the images are scanned and scored (``shallowcnn scan``'s options).

    stride               pixels between windows
    threshold            probability for a detection, in [0, 1]; None: the model's operating
                         point (:func:`~shallowcnn.operating_point.model_threshold`)
    min_breast_fraction  least fraction of a window inside the breast to scan it
    nms_px               non-maximum suppression distance in pixels; None: the model's
                         (:func:`~shallowcnn.operating_point.model_nms`)
    hit_radius           a detection within this many pixels of a true cluster hits it (FROC)
    pixel_size_mm        the input's pixel size (None: the DICOM header's, or 0.07 mm for PNG)
    tile                 tile side in conv2 positions (bounds memory)
    """
    stride: int = DEFAULT_STRIDE
    threshold: float | None = None
    min_breast_fraction: float = DEFAULT_MIN_BREAST
    nms_px: float | None = None
    hit_radius: float = DEFAULT_HIT_RADIUS
    pixel_size_mm: float | None = None
    tile: int = DEFAULT_TILE

    def image_options(self) -> dict:
        """The keyword arguments of :func:`~shallowcnn.scan.scan_image` (all but hit_radius)."""
        options = asdict(self)
        del options["hit_radius"]
        return options

    def for_model(self, model) -> ScanSettings:
        """These settings with the threshold and NMS distance resolved: the ones given, else
        the model's operating point, else :data:`~shallowcnn.operating_point.FALLBACK_THRESHOLD`
        and :data:`~shallowcnn.operating_point.FALLBACK_NMS_PX`."""
        return replace(self, threshold=model_threshold(model, self.threshold),
                       nms_px=model_nms(model, self.nms_px))

def write_scan_outputs(result: ScanResult, out_dir, truth=None, name: str | None = None) -> dict:
    """Write ``<name>.prob.npy``, ``<name>.overlay.png`` and ``<name>.detections.json``.

    returns the JSON content (a dict). ``truth`` (:class:`~shallowcnn.froc.ImageTruth`)
    adds each true cluster (hit or missed) and each detection's verdict.
    """
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
        for det, cluster, error in zip(content["detections"], truth.detection_cluster, truth.detection_error_mm):
            det["hits_cluster"] = cluster          # index into true_clusters, None = false positive
            det["localization_error_mm"] = None if error is None else round(error, 3)
        content.update(truth.to_dict())
    atomic_write_text(paths["detections"], json.dumps(content, indent=2) + "\n")
    return content


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


def scan_one(model, path, settings: ScanSettings, progress=False):
    """(ScanResult, ImageTruth or None) of one image, or the exception that stopped it.

    ``progress``: :func:`~shallowcnn.scan.scan_image`'s. A Dask worker runs this too
    (:mod:`shallowcnn.scan_dask`), so both ways fail the same way.
    """
    try:
        settings = settings.for_model(model)
        result = scan_image(model, path, progress=progress, **settings.image_options())
        return result, image_truth(result, hit_radius=settings.hit_radius)
    except SCAN_FAILURES as e:
        return e


def scan_paths(model, paths, out, settings: ScanSettings | None = None, verbose: bool = True,
               scanned=None) -> dict:
    """Scan every image of ``paths`` into the folder ``out``; returns the summary dict.

    Per image: ``<name>.prob.npy``, ``<name>.overlay.png``, ``<name>.detections.json``;
    over the annotated images: ``froc.json`` and ``froc.png``; and ``scan_summary.json``.
    An image that cannot be scanned is reported and skipped (listed under "failed").
    ``scanned``: (path, :func:`scan_one`'s answer) for each of ``paths`` in order, computed
    elsewhere (:mod:`shallowcnn.scan_dask`: by Dask workers); by default here, one by one.
    """
    settings = (settings or ScanSettings()).for_model(model)
    stride, threshold = settings.stride, settings.threshold
    out = Path(out)
    truths, summary, failed = [], [], []
    if scanned is None:
        progress = {"position": 1} if verbose else False
        scanned = ((path, scan_one(model, path, settings, progress)) for path in paths)
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
        if result.image.pixel_size_note:   # even when quiet: the positions in mm depend on it
            tqdm.write(f"{path.name}: {result.image.pixel_size_note}", file=sys.stderr)
        summary.append({"image": str(path), "detections": len(result.detections),
                        "seconds": round(result.seconds, 3), "files": content["files"],
                        **({"clusters": len(truth.clusters), "hit": int(sum(truth.hit))}
                           if truth is not None else {})})

    report = {"backend": model.backend, "stride": stride, "threshold": threshold, "nms_px": settings.nms_px,
              "images": summary, "failed": failed}
    if truths:
        curve = froc_curve(truths)
        write_froc(curve, out / "froc.json", threshold=threshold)
        plot_froc(curve, out / "froc.png", threshold=threshold)
        op = curve.at_threshold(threshold)
        located = localization_summary(curve.errors_mm)
        report["froc"] = {"file": "froc.json", "images": curve.n_images, "clusters": curve.n_clusters,
                          "sensitivity": op["sensitivity"], "fp_per_image": op["fp_per_image"],
                          "localization": located}
        if verbose:
            print(f"FROC over {curve.n_images} annotated image(s), {curve.n_clusters} cluster(s): "
                  f"at p >= {threshold:g} sensitivity {op['sensitivity']:.3f}, "
                  f"{op['fp_per_image']:.2f} false positives per image -> {out / 'froc.png'}")
            if located["hits"]:
                print(f"localization: {located['hits']} hit(s) lie a median {located['median_mm']:.2f} mm "
                      f"(90th percentile {located['p90_mm']:.2f} mm) from their cluster's centre")
    atomic_write_text(out / "scan_summary.json", json.dumps(report, indent=2) + "\n")
    return report

