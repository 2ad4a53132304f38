"""One phantom mammogram saved in every container, scanned with the bundled model.

    PYTHONPATH=$PWD python benchmarks/bench_formats.py [--cases 6] [--seed 11] [--size 832x1024]

Writes a phantom, picks its image with the most clusters, saves it as each rendition of
:mod:`shallowcnn.data.renditions` (14-bit DICOM, MONOCHROME1, JPEG 2000, RLE, JPEG-LS,
16-bit PNG and TIFF, 8-bit min-max PNG and JPEG 95, the DICOM's 8-bit window as PNG) and
scans each one with ``--pixel-size 0.07`` where the file has no pixel size. Prints one
row per rendition: windows scanned, detections, the top probability, and against the
14-bit DICOM's detections the largest position difference (mm) and probability
difference of the nearest detection, and how many of the DICOM's detections have no
counterpart within 1.4 mm and 0.1 (``lost``), and the largest probability difference
over every window both scanned (``map dp``). The issue's bar: every rendition within
1.4 mm and 0.1 of the DICOM.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shallowcnn.constants import PIXEL_MM  # noqa: E402
from shallowcnn.data.clusters import find_clusters  # noqa: E402
from shallowcnn.data.phantom import generate_phantom  # noqa: E402
from shallowcnn.data.renditions import RENDITIONS, write_renditions  # noqa: E402
from shallowcnn.scan import scan_image  # noqa: E402
from shallowcnn.web.bundled import load_bundled_model  # noqa: E402

HAS_PIXEL_SIZE = {"dicom14", "monochrome1", "rle", "jpegls"}   # the others are scanned with --pixel-size
POSITION_MM, PROBABILITY = 1.4, 0.1


def compare(reference, detections) -> tuple:
    """(largest position difference in mm, largest probability difference, lost) of each
    reference detection against its nearest counterpart."""
    worst_mm = worst_p = 0.0
    lost = 0
    for ref in reference:
        if not detections:
            lost += 1
            continue
        dist = [np.hypot(d.row - ref.row, d.col - ref.col) * PIXEL_MM for d in detections]
        near = detections[int(np.argmin(dist))]
        mm, dp = min(dist), abs(near.probability - ref.probability)
        worst_mm, worst_p = max(worst_mm, mm), max(worst_p, dp)
        lost += mm > POSITION_MM or dp > PROBABILITY
    return worst_mm, worst_p, lost


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--size", default="832x1024", help="phantom width x height (default: the demo's)")
    args = parser.parse_args(argv)
    model = load_bundled_model()
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as work:
        images = generate_phantom(Path(work) / "ph", cases=args.cases, seed=args.seed, size=args.size,
                                  verbose=False)
        image = max(images, key=lambda im: len(find_clusters(im.rois)))
        paths = write_renditions(image.dicom_path, Path(work) / "renditions")
        print(f"{image.dicom_path.name}: {len(find_clusters(image.rois))} true cluster(s); "
              f"missing encoders here: {', '.join(sorted(set(RENDITIONS) - set(paths))) or 'none'}")
        print(f"{'rendition':<15}{'windows':>8}{'dets':>6}{'max p':>8}{'max dmm':>9}{'max dp':>8}{'lost':>6}"
              f"{'map dp':>8}")
        reference = reference_map = None
        for name, path in paths.items():
            size = None if name in HAS_PIXEL_SIZE else PIXEL_MM
            result = scan_image(model, path, pixel_size_mm=size)
            dets = result.detections
            if reference is None:
                reference, reference_map = dets, result.prob_map
            mm, dp, lost = compare(reference, dets)
            top = max((d.probability for d in dets), default=float(np.nanmax(result.prob_map)))
            both = np.isfinite(result.prob_map) & np.isfinite(reference_map)
            map_dp = float(np.abs(result.prob_map - reference_map)[both].max())
            print(f"{name:<15}{result.n_windows:>8}{len(dets):>6}{top:>8.3f}{mm:>9.2f}{dp:>8.3f}{lost:>6}"
                  f"{map_dp:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
