"""Figures, written as PNG files with matplotlib's Agg backend (no display needed).

Each function takes arrays (or a result object), writes one PNG and returns its path;
none of them shows a window, so they work on servers and in tests. Every figure of the
package is drawn here -- patches (Fig. 2, 3), training curves, ROC, mistakes, the search --
but the two a scan writes, the overlay (:mod:`shallowcnn.overlay`) and the FROC curve
(:mod:`shallowcnn.froc_figure`), which Pillow draws: importing matplotlib and rendering
them took a third of ``shallowcnn scan``'s time.
"""
from __future__ import annotations

from pathlib import Path

import io

import numpy as np

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from .data.augment import TRANSFORMS, apply_transform  # noqa: E402
from .storage import atomic_write_bytes  # noqa: E402

def _png(fig) -> bytes:
    """The figure as PNG bytes (and closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def save_figure(fig, path) -> Path:
    """Save through a temporary name and rename, like every other file of the project."""
    return atomic_write_bytes(Path(path), _png(fig))


def plot_patch_examples(patches: np.ndarray, labels: np.ndarray, path, per_class: int = 6,
                        seed: int = 0, titles=("with microcalcification cluster (label 1)",
                                               "normal tissue (label 0)")) -> Path:
    """The paper's Fig. 2: a row of positive patches above a row of negative ones.

    patches  (M, 144, 144) uint8
    labels   (M,) 0/1
    """
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, per_class, figsize=(1.9 * per_class, 4.4), squeeze=False)
    for row, (label, title) in enumerate(zip((1, 0), titles)):
        chosen = np.flatnonzero(labels == label)
        chosen = rng.choice(chosen, size=min(per_class, len(chosen)), replace=False) if len(chosen) else []
        for k, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(chosen):
                ax.imshow(patches[chosen[k]], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[row, 0].set_title(title, loc="left", fontsize=10)
    fig.suptitle("Fig. 2 -- 144 x 144 patches (1 cm$^2$)", fontsize=11)
    return save_figure(fig, path)


def plot_transforms(patch: np.ndarray, path) -> Path:
    """The paper's Fig. 3: one patch and its four augmentations.

    patch  (144, 144) uint8 (the untransformed original)
    """
    fig, axes = plt.subplots(1, len(TRANSFORMS), figsize=(2.2 * len(TRANSFORMS), 2.6))
    for ax, name in zip(axes, TRANSFORMS):
        ax.imshow(apply_transform(patch, name), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Fig. 3 -- geometric transforms used for augmentation", fontsize=11)
    return save_figure(fig, path)


def plot_store_figures(store, out_path) -> list:
    """Fig. 2 (example patches) and Fig. 3 (transforms) of a patch store, as PNGs next
    to ``out_path`` (``<stem>_fig2_examples.png``, ``<stem>_fig3_transforms.png``).

    store  a :class:`~shallowcnn.data.patches.PatchStore`
    """
    stem = Path(out_path).with_suffix("")
    originals = store.transform == "none"
    written = [plot_patch_examples(store.patches[originals], store.labels[originals],
                                   f"{stem}_fig2_examples.png", seed=store.metadata.get("seed", 0))]
    positives = np.flatnonzero(originals & (store.labels == 1))
    if len(positives):
        written.append(plot_transforms(store.patches[positives[0]], f"{stem}_fig3_transforms.png"))
    return written


# ---------------------------------------------------------------- training
def plot_training_curves(history: dict, path) -> Path:
    """The paper's Fig. 5: (a) accuracy and (b) loss per epoch, train vs validation.

    history: lists "epoch", "loss", "accuracy", "val_loss", "val_accuracy"
    (validation entries may be NaN when there was no validation set).
    """
    epochs = np.asarray(history["epoch"])
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((ax_acc, "accuracy", "(a) accuracy"), (ax_loss, "loss", "(b) loss")):
        ax.plot(epochs, history[key], "o-", ms=3, label="training")
        val = np.asarray(history.get(f"val_{key}", []), dtype=float)
        if val.size and np.isfinite(val).any():
            ax.plot(epochs, val, "s-", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.set_ylabel("accuracy")
    ax_loss.set_ylabel("binary cross-entropy")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_roc(fpr, tpr, auc: float, path, title="ROC curve") -> Path:
    """Sensitivity against 1 - specificity over all thresholds, with the area."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot(fpr, tpr, lw=2, label=f"ShallowCNN (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="chance")
    ax.set_xlabel("false-positive rate (1 - specificity)")
    ax.set_ylabel("true-positive rate (sensitivity)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_confident_mistakes(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, path, n: int = 16) -> Path:
    """The ``n`` most confidently wrong patches, each titled with label and probability.

    images (M, H, W) uint8, labels (M,), probs (M,) probability of class 1.
    """
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    wrong = np.flatnonzero((probs >= 0.5) != (labels == 1))
    confidence = np.abs(probs[wrong] - 0.5)
    chosen = wrong[np.argsort(-confidence, kind="stable")][:n]
    cols = max(1, min(8, len(chosen)))
    rows = max(1, int(np.ceil(len(chosen) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), chosen):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"label {labels[i]}, p={probs[i]:.2f}", fontsize=8)
    if len(chosen) == 0:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("most confidently wrong patches", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------ search
def plot_search(n_params, val_accuracy, lr, path, best=None, paper_params=8301,
                title="Random search: validation accuracy against size") -> Path:
    """Each trial of a hyperparameter search as a dot: parameter count (log scale)
    against validation accuracy, coloured by learning rate (log scale).

    n_params, val_accuracy, lr: (T,) for the trials that finished; ``best``: index of
    the best trial (circled); the paper's size (8,301) is marked by a dotted line.
    """
    from matplotlib.colors import LogNorm     # only this figure needs it

    n_params, val_accuracy, lr = (np.asarray(a, dtype=float) for a in (n_params, val_accuracy, lr))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if len(lr):
        dots = ax.scatter(n_params, val_accuracy, c=lr, cmap="viridis",
                          norm=LogNorm(lr.min(), max(lr.max(), lr.min() * 1.01)),
                          s=36, edgecolors="black", linewidths=0.4)
        fig.colorbar(dots, ax=ax, label="learning rate")
    if best is not None:
        ax.scatter([n_params[best]], [val_accuracy[best]], s=160, facecolors="none", edgecolors="red",
                   linewidths=1.5, label="best trial")
    ax.axvline(paper_params, color="grey", ls=":", lw=1, label=f"paper's network ({paper_params:,})")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("validation accuracy (best epoch)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)
