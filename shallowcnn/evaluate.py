"""Evaluate a trained model on a split of a patch store.

``shallowcnn evaluate RUN_DIR/model.npz patches.npz --split test`` prints the
table of :mod:`shallowcnn.metrics` at the paper's 0.5 threshold and writes,
beside the model (or into ``-o OUT``): ``metrics.json``, ``roc.png`` and
``mistakes.png`` (the most confidently wrong patches).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .data.patches import PatchError, open_patches
from .metrics import classification_metrics, format_metrics, roc_curve
from .model import ShallowCNN
from .options import probability
from .storage import StoreError, atomic_write_text, check_writable_dir

SPLITS = ("train", "val", "test", "all")


def _split_images(store, split):
    """uint8 images (n, 144, 144) and labels (n,) of a split ('all' for every patch)."""
    idx = store.indices(None if split == "all" else split)
    return store.patches[idx], store.labels[idx]


def _predict_stopping_on_ctrl_c(model, images, batch_size: int = 64) -> np.ndarray:
    """``model.predict_proba`` of (n, 144, 144) images, batch by batch; Ctrl-C stops between
    batches with a clean KeyboardInterrupt (train.StopOnCtrlC), never inside a Numba kernel,
    where it would surface as a SystemError (or worse)."""
    from .train import StopOnCtrlC

    out = []
    with StopOnCtrlC() as stop:
        for i in range(0, len(images), batch_size):
            out.append(model.predict_proba(images[i:i + batch_size, None], batch_size=batch_size))
            stop.check()
    return np.concatenate(out)


def evaluate(model, store, split="test", out_dir=None, threshold=0.5, verbose=True) -> dict:
    """Metrics of ``model`` (a ShallowCNN or the path of a model file) on a split.

    ``store``: a :class:`~shallowcnn.data.patches.PatchStore`
    (:func:`~shallowcnn.data.patches.open_patches` opens a file or a PNG folder). Writes
    metrics.json, roc.png and mistakes.png into ``out_dir`` when given. Returns the metrics dict.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if isinstance(model, (str, Path)):
        model = ShallowCNN.load(model, backend="auto")
    source = str(store.path) if store.path is not None else "the patch store"
    images, labels = _split_images(store, split)
    if len(images) == 0:
        raise ValueError(f"{source}: no patches in split {split!r}")
    probs = _predict_stopping_on_ctrl_c(model, images)
    metrics = classification_metrics(labels, probs, threshold)
    metrics.update({"split": split, "patches": str(source)})
    if verbose:
        print(f"{split} split of {source}:")
        print(format_metrics(metrics))
    if out_dir is not None:
        from .plots import plot_confident_mistakes, plot_roc   # matplotlib loads only when figures are drawn
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fpr, tpr, _ = roc_curve(labels, probs)
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=True))
        plot_roc(fpr, tpr, metrics["roc_auc"], out_dir / "roc.png", title=f"ROC, {split} split")
        plot_confident_mistakes(images, labels, probs, out_dir / "mistakes.png")
        if verbose:
            print(f"wrote {out_dir / 'metrics.json'}, roc.png and mistakes.png")
    return metrics


def add_command(subparsers):
    p = subparsers.add_parser(
        "evaluate", help="accuracy, sensitivity, specificity, ROC AUC... of a model on a patch store",
        description="Evaluate a model on one split of a patch store (or on every patch of a folder of "
                    "PNG patches with class subfolders 0/ and 1/: all in the test split) at the paper's 0.5 threshold. Prints a "
                    "table and writes metrics.json, roc.png and mistakes.png.")
    p.add_argument("model", help="model file (RUN_DIR/model.npz)")
    p.add_argument("patches", help="patch store (.npz) or folder of PNG patches with 0/ and 1/ "
                                   "(all of its patches form the test split)")
    p.add_argument("--split", default="test", choices=SPLITS, help="which patches to score (default test)")
    p.add_argument("--threshold", type=probability, default=0.5,
                   help="decision threshold, in [0, 1] (default 0.5, the paper's)")
    p.add_argument("-o", "--output", default=None, help="folder for metrics.json and figures (default: the model's folder)")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    out = args.output or Path(args.model).parent
    try:
        model = ShallowCNN.load(args.model, backend="auto")        # the model first: the first argument
        store = open_patches(args.patches)
        check_writable_dir(out)                                     # before the work, not after
        evaluate(model, store, args.split, out, args.threshold)
    except (StoreError, PatchError, ValueError, FileNotFoundError) as e:
        print(f"shallowcnn evaluate: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"shallowcnn evaluate: error: cannot write the results: {e}", file=sys.stderr)
        return 1
    return 0
