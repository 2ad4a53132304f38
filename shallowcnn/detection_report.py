"""Whole-image detection figures of a model on the patients of one split.

Patch metrics (accuracy, ROC AUC per 1 cm^2 patch) say little to someone who reads a
mammogram: what matters there is how many clusters are found for how many false alarms
per image. :func:`split_froc` scans the whole mammograms of a store's split (its patients
only, from the store's source folder) and reports the FROC headline: sensitivity at 0.5,
1, 2 and 4 false positives per image, and the operating point the model would use.
"""
from __future__ import annotations

from pathlib import Path

from .data.inbreast import is_inbreast_folder
from .froc import froc_curve, image_truth, localization_summary, write_froc
from .froc_figure import plot_froc
from .mining import cases_of_split
from .operating_point import model_nms, model_threshold
from .scan import scan_image

FP_RATES = (0.5, 1, 2, 4)


def split_froc(model, store, split: str = "test", out_dir=None, threshold: float | None = None,
               source=None, verbose: bool = True) -> dict | None:
    """FROC of ``model`` on the whole mammograms of ``split``'s patients, or None when the
    store's images are not at hand (a PNG folder, or a source folder that has moved).

    source     the INbreast-layout folder (default: the store's ``metadata['source']``)
    threshold  the operating point (default: the model's own, see operating_point.py)
    out_dir    if given: ``froc_<split>.json`` and ``froc_<split>.png`` are written there
    returns    {"split", "images", "clusters", "sensitivity_at_fp_per_image": {rate: s},
               "threshold", "operating_point": {"sensitivity", "fp_per_image"},
               "localization": {"hits", "median_mm", "p90_mm"} of the hits at the threshold}
    """
    source = source or (store.metadata or {}).get("source")
    if not source or not is_inbreast_folder(source):
        return None
    cases = cases_of_split(store, source, split)
    if not cases:
        return None
    threshold = model_threshold(model, threshold)
    # scanned at the operating point: the curve sweeps every threshold, the localization
    # errors are those of the detections at this one
    nms_px = model_nms(model)
    truths = [image_truth(scan_image(model, case.dicom_path, threshold=threshold, nms_px=nms_px)) for case in cases]
    curve = froc_curve([t for t in truths if t is not None])
    op = curve.at_threshold(threshold)
    result = {"split": split, "images": curve.n_images, "clusters": curve.n_clusters,
              "sensitivity_at_fp_per_image": {str(f): curve.sensitivity_at_fpi(f) for f in FP_RATES},
              "threshold": threshold,
              "operating_point": {"sensitivity": op["sensitivity"], "fp_per_image": op["fp_per_image"]},
              "localization": localization_summary(curve.errors_mm)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_froc(curve, out_dir / f"froc_{split}.json", threshold=threshold)
        plot_froc(curve, out_dir / f"froc_{split}.png", threshold=threshold, rates=FP_RATES)
    if verbose:
        print(format_froc(result))
    return result


def format_froc(result: dict) -> str:
    """Two lines: sensitivity at each rate, and the operating point."""
    rates = ", ".join(f"{s:.3f} at {f} FP/image" for f, s in result["sensitivity_at_fp_per_image"].items())
    op = result["operating_point"]
    located = result.get("localization") or {}
    where = (f"; the {located['hits']} hit(s) lie a median {located['median_mm']:.2f} mm (90th percentile "
             f"{located['p90_mm']:.2f} mm) from their cluster's centre") if located.get("hits") else ""
    return (f"whole mammograms of the {result['split']} patients ({result['images']} images, "
            f"{result['clusters']} clusters): sensitivity {rates}\n"
            f"  operating point p >= {result['threshold']:.4f}: sensitivity {op['sensitivity']:.3f} at "
            f"{op['fp_per_image']:.2f} false positives per image{where}")
