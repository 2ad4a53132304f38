"""``shallowcnn evaluate``: a model's metrics on one split of a patch store (:mod:`shallowcnn.evaluate`)."""
from __future__ import annotations

from pathlib import Path

from ..data.patches import PatchError, open_patches
from ..evaluate import SPLITS, evaluate
from ..model import ShallowCNN
from ..recipe import PAPER
from ..storage import StoreError, check_writable_dir
from .common import CommandError, probability


def add_command(subparsers):
    p = subparsers.add_parser(
        "evaluate", help="accuracy, sensitivity, specificity, ROC AUC... of a model on a patch store",
        description="Evaluate a model on one split of a patch store (or on every patch of a folder of "
                    "PNG patches with class subfolders 0/ and 1/: all in the test split) at the paper's 0.5 "
                    "threshold. Prints a table and writes metrics.json, roc.png and mistakes.png; when the "
                    "store's folder of whole mammograms is at hand, also the FROC headline of the split's "
                    "patients (sensitivity at 0.5, 1, 2 and 4 false positives per image, at the model's "
                    "operating point): froc_<split>.json and froc_<split>.png.")
    p.add_argument("model", help="model file (RUN_DIR/model.npz)")
    p.add_argument("patches", help="patch store (.npz) or folder of PNG patches with 0/ and 1/ "
                                   "(all of its patches form the test split)")
    p.add_argument("--split", default="test", choices=SPLITS, help="which patches to score (default test)")
    p.add_argument("--threshold", type=probability, default=PAPER.threshold,
                   help=f"decision threshold, in [0, 1] (default {PAPER.threshold}, the paper's)")
    p.add_argument("-o", "--output", default=None,
                   help="folder for metrics.json and figures (default: the model's folder)")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    out = args.output or Path(args.model).parent
    try:
        model = ShallowCNN.load(args.model, backend="auto")        # the model first: the first argument
        store = open_patches(args.patches)
        check_writable_dir(out)                                     # before the work, not after
        evaluate(model, store, args.split, out, args.threshold)
    except (StoreError, PatchError, ValueError, FileNotFoundError) as e:
        raise CommandError(e) from None
    except OSError as e:
        raise CommandError(f"cannot write the results: {e}", status=1) from None
    return 0
