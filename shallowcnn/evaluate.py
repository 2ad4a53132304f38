"""Evaluate a trained model on a split of a patch store.

``shallowcnn evaluate RUN_DIR/model.npz patches.npz --split test`` prints the
table of :mod:`shallowcnn.metrics` at the paper's 0.5 threshold and writes,
beside the model (or into ``-o OUT``): ``metrics.json``, ``roc.png`` and
``mistakes.png`` (the most confidently wrong patches). When the store's source folder of
whole mammograms is at hand, the FROC headline comes beside them: sensitivity at 0.5, 1,
2 and 4 false positives per image on the split's patients' mammograms
(:mod:`shallowcnn.detection_report`; ``froc_<split>.json`` and ``froc_<split>.png``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .detection_report import split_froc
from .metrics import classification_metrics, format_metrics, roc_curve
from .model import ShallowCNN
from .recipe import PAPER
from .storage import atomic_write_text
from .train import StopOnCtrlC

SPLITS = ("train", "val", "test", "all")


def _split_images(store, split):
    """uint8 images (n, 144, 144) and labels (n,) of a split ('all' for every patch)."""
    idx = store.indices(None if split == "all" else split)
    return store.patches[idx], store.labels[idx]


def _predict_stopping_on_ctrl_c(model, images, batch_size: int = 64) -> np.ndarray:
    """``model.predict_proba`` of (n, 144, 144) images, batch by batch; Ctrl-C stops between
    batches with a clean KeyboardInterrupt (train.StopOnCtrlC), never inside a Numba kernel,
    where it would surface as a SystemError (or worse)."""
    out = []
    with StopOnCtrlC() as stop:
        for i in range(0, len(images), batch_size):
            out.append(model.predict_proba(images[i:i + batch_size, None], batch_size=batch_size))
            stop.check()
    return np.concatenate(out)


def evaluate(model, store, split="test", out_dir=None, threshold=PAPER.threshold, verbose=True,
             whole_images=True) -> dict:
    """Metrics of ``model`` (a ShallowCNN or the path of a model file) on a split.

    ``store``: a :class:`~shallowcnn.data.patches.PatchStore`
    (:func:`~shallowcnn.data.patches.open_patches` opens a file or a PNG folder). Writes
    metrics.json, roc.png and mistakes.png into ``out_dir`` when given. Returns the metrics
    dict; with ``whole_images`` and the store's mammograms at hand, ``metrics["froc"]`` holds the
    whole-image figures (:func:`~shallowcnn.detection_report.split_froc`), else None.
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
    metrics["froc"] = split_froc(model, store, split, out_dir, verbose=verbose) \
        if whole_images and split != "all" else None
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

