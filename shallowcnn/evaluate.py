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

from .metrics import classification_metrics, format_metrics, roc_curve
from .model import ShallowCNN
from .storage import StoreError, atomic_write_text

SPLITS = ("train", "val", "test", "all")


def _split_images(store, split):
    """uint8 images (n, 144, 144) and labels (n,) of a split ('all' for every patch)."""
    idx = store.indices(None if split == "all" else split)
    return store.patches[idx], store.labels[idx]


def evaluate(model, patches, split="test", out_dir=None, threshold=0.5, verbose=True) -> dict:
    """Metrics of ``model`` (a ShallowCNN or the path of a model file) on a split.

    ``patches``: a loaded store, the path of a store, or a folder of PNG patches
    with class subfolders 0/ and 1/ (turned into a store on the fly; every patch
    counts, whatever ``split`` says). Writes metrics.json, roc.png and
    mistakes.png into ``out_dir`` when given. Returns the metrics dict.
    """
    from .data.patches import load_patches, make_patches

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if isinstance(model, (str, Path)):
        model = ShallowCNN.load(model, backend="auto")
    source = str(patches) if isinstance(patches, (str, Path)) else "the patch store"
    if isinstance(patches, (str, Path)) and Path(patches).is_dir():
        patches = make_patches(patches, None, augment_patches=False, balance=False, verbose=False, audit=False)
        split = "all"
    elif isinstance(patches, (str, Path)):
        patches = load_patches(patches)
    images, labels = _split_images(patches, split)
    if len(images) == 0:
        raise ValueError(f"{source}: no patches in split {split!r}")
    probs = model.predict_proba(images[:, None], batch_size=64)
    metrics = classification_metrics(labels, probs, threshold)
    metrics.update({"split": split, "patches": str(source)})
    if verbose:
        print(f"{split} split of {source}:")
        print(format_metrics(metrics))
    if out_dir is not None:
        from .plots import plot_confident_mistakes, plot_roc
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
                    "PNG patches with class subfolders 0/ and 1/) at the paper's 0.5 threshold. Prints a "
                    "table and writes metrics.json, roc.png and mistakes.png.")
    p.add_argument("model", help="model file (RUN_DIR/model.npz)")
    p.add_argument("patches", help="patch store (.npz) or folder of PNG patches with 0/ and 1/")
    p.add_argument("--split", default="test", choices=SPLITS, help="which patches to score (default test)")
    p.add_argument("--threshold", type=float, default=0.5, help="decision threshold (default 0.5, the paper's)")
    p.add_argument("-o", "--output", default=None, help="folder for metrics.json and figures (default: the model's folder)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    out = args.output or Path(args.model).parent
    try:
        evaluate(args.model, args.patches, args.split, out, args.threshold)
    except (StoreError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
