"""The paper's Table 3: ShallowCNN against LeNet-5 and MobileNetV2 on one patch store.

    python benchmarks/table3.py --patches patches.npz               # 3 seeds, up to 100 epochs each
    python benchmarks/table3.py --patches patches.npz --seeds 0 --models lenet5,shallowcnn
    python benchmarks/table3.py --quick                             # a small phantom store, one seed

Every network trains on the store's train split -- the same patches, the same
augmentation (the store's x5 geometric transforms, made once for all, and each epoch a
fresh copy of every patch moved by up to ``--shift`` = 24 pixels and turned or mirrored at
random, :func:`augment_epoch`, drawn alike for every network) and the same
recipe: Adam (lr 1e-3, eps 1e-7), batch 64, binary cross-entropy, the same seed for
the order of the batches -- **until its validation score stops improving**: after
``--patience`` epochs without a better score (or ``--epochs``, or ``--minutes`` of
training, or its share of ``--total-minutes``, at most), training stops and the weights
of the best epoch are restored (:func:`fit_until_stale`). The score is the validation accuracy by default -- the
paper's rule ("we selected the model with the highest accuracy") and ``shallowcnn
train``'s -- or the validation loss (``--monitor loss``), which rewards a network's
cautious first epochs (a constant answer has a low loss) over its later, accurate but
overconfident ones. A fixed number of epochs would favour whichever network happens to
converge at that number: ShallowCNN's 8,301 weights and MobileNetV2's two million do
not learn at the same pace.

Each network is scored on the test split: accuracy, sensitivity, specificity and ROC
AUC at the 0.5 threshold (shallowcnn.metrics), as mean and spread (sample standard
deviation) over the seeds of ``--seeds``, with the trainable parameter count, the
epochs trained, the training time and the inference speed (patches per second over
``--inference-patches`` test patches, repeated as needed, best of ``--reps`` passes,
batches of 64).

The peers are PyTorch networks written here (the ``[bench]`` extra; no
torchvision needed), both from scratch (random weights) with ONE input channel.
Both start as Keras (the paper's framework) and ShallowCNN start: Glorot-uniform
weights and zero biases (:func:`keras_init`). Two things a standard PyTorch pipeline
does, and the peers need (measured in benchmarks/README.md, "`--quick` last round (fifth)"):

* a fixed input layer (x - mean) / std with the train split's pixel mean and standard
  deviation (:func:`train_statistics`, :func:`standardized`; like ``transforms.Normalize``),
  applied to every patch the peer sees. ShallowCNN keeps the paper's /255 input;
* MobileNetV2's BatchNorm running statistics recomputed after each epoch over 10 training
  batches with the epoch's final weights (:func:`recompute_batchnorm_statistics`), so that
  validation in eval mode scores the network that was trained.

* LeNet-5 (LeCun et al. 1998) as it is usually re-implemented: conv 6 x 5x5,
  ReLU, max pool 2, conv 16 x 5x5, ReLU, max pool 2, dense 120, 84, 1. At
  144 x 144 the first dense layer sees 16 x 33 x 33 = 17,424 inputs, so it
  holds almost all of the 2,103,821 parameters.
* MobileNetV2 (Sandler et al. 2018, their Table 2; width 1.0): a 3x3 stride-2
  stem of 32, seventeen inverted-residual blocks, a 1x1 conv to 1280, global
  average pooling, dropout 0.2, dense 1280 -> 1: 2,224,577 parameters.

The paper reports 2,233,365 (LeNet-5) and 67,797,505 (MobileNetV2) without
saying how they were built; see benchmarks/README.md for how ours differ.

``--quick`` makes a small phantom store (:func:`quick_store`: 36 patients of 832 x 1024
pixels, x5 augmentation: 2,340 train, 660 validation and 660 test patches) and trains
one seed with patience 6, at most 30 epochs and QUICK_TOTAL_MINUTES minutes of training
for all networks together, shared by :func:`time_share`: each network is owed an equal
share of what is left, so the time ShallowCNN and LeNet-5 leave unused when they stop on
patience passes on to MobileNetV2 (see benchmarks/README.md for timings).

Writes ``table3.md`` and ``table3.json`` into ``--out`` (default
benchmarks/results/), atomically through shallowcnn.storage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))            # run from a checkout without installing

from shallowcnn.metrics import classification_metrics  # noqa: E402
from shallowcnn.storage import atomic_write_text  # noqa: E402

MODELS = ("shallowcnn", "lenet5", "mobilenetv2")
LABELS = {"shallowcnn": "ShallowCNN (this project)", "lenet5": "LeNet-5 (PyTorch)",
          "mobilenetv2": "MobileNetV2 (PyTorch)"}
PAPER = {"mobilenetv2": ("99.8%", 67_797_505), "lenet5": ("99.3%", 2_233_365), "shallowcnn": ("99.3%", 8_301)}
PEERS_MISSING = "LeNet-5 and MobileNetV2 need PyTorch: pip install \".[bench]\""


# ------------------------------------------------------------------ the peers
def lenet5(nn):
    """LeNet-5 for one 144 x 144 channel: conv-pool-conv-pool and three dense layers."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),           # 144 -> 140 -> 70
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),          # 70 -> 66 -> 33
        nn.Flatten(), nn.Linear(16 * 33 * 33, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 1))


# (expansion t, output channels c, repeats n, first stride s): Sandler et al., Table 2
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(nn):
    """MobileNetV2 (width 1.0) from scratch, one input channel, one output logit."""

    def conv_bn(cin, cout, kernel, stride=1, groups=1, relu=True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        return layers + [nn.ReLU6()] if relu else layers

    class InvertedResidual(nn.Module):
        """1x1 expand, 3x3 depthwise, 1x1 linear projection; a shortcut when shapes allow."""

        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = conv_bn(cin, hidden, 1) if expand != 1 else []
            layers += conv_bn(hidden, hidden, 3, stride, groups=hidden) + conv_bn(hidden, cout, 1, relu=False)
            self.block = nn.Sequential(*layers)
            self.shortcut = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.block(x) if self.shortcut else self.block(x)

    layers, cin = conv_bn(1, 32, 3, stride=2), 32
    for t, c, n, s in MOBILENET_V2_BLOCKS:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += conv_bn(cin, 1280, 1) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, 1)]
    return nn.Sequential(*layers)


def keras_init(net, nn):
    """Initialise a peer as Keras (the paper's framework) and ShallowCNN do: Glorot-uniform
    weights, zero biases (BatchNorm keeps its scale 1, shift 0). PyTorch's own default
    (uniform +-1/sqrt(fan_in) weights *and biases*) leaves LeNet-5 with 3 of its 6 first
    filters negative over every /255 patch -- dead ReLUs from the first step on.
    Returns ``net``."""
    for layer in net.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return net


# ------------------------------------------------------------------ augmentation, every epoch
SHIFT_PX = 24      # each epoch moves every training patch by up to this many pixels in each direction


def moved_patch(patch, dy: int, dx: int, turns: int, flip: bool, shift: int = SHIFT_PX):
    """One patch (C, H, W) moved by (dy, dx) pixels (|dy|, |dx| <= shift; the rows and columns
    that come in are the patch's own, mirrored at its border), then turned ``turns`` quarter
    turns and mirrored left-right if ``flip``: out[c, i, j] = patch[c, reflect(i - dy), reflect(j - dx)]
    before the turn."""
    C, H, W = patch.shape
    padded = np.pad(patch, ((0, 0), (shift, shift), (shift, shift)), mode="reflect")
    out = np.rot90(padded[:, shift - dy:shift - dy + H, shift - dx:shift - dx + W], turns, axes=(1, 2))
    return out[:, :, ::-1] if flip else out


def augment_epoch(x, rng, shift: int = SHIFT_PX):
    """A new copy of the training patches x (n, C, H, W) for one epoch: each moved by a random
    offset of up to ``shift`` pixels and put through a random one of the square's 8 symmetries
    (:func:`moved_patch`). Every network draws from a generator seeded alike, so all see the
    same patches in the same epochs. ``shift`` 0 and no turn leave a patch as it was."""
    n = len(x)
    dy, dx = rng.integers(-shift, shift + 1, n), rng.integers(-shift, shift + 1, n)
    turns, flips = rng.integers(0, 4, n), rng.integers(0, 2, n)
    return np.stack([moved_patch(x[i], dy[i], dx[i], turns[i], bool(flips[i]), shift) for i in range(n)])


def train_statistics(x_train) -> tuple:
    """(mean, standard deviation) of every pixel of the train split ``x_train`` (n, 1, H, W),
    as Python floats computed in float64: the numbers of the peers' input layer. The
    validation and test splits never enter them."""
    x = np.asarray(x_train)
    return float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))


def standardized(net, torch, mean: float, std: float):
    """``net`` behind a fixed input layer that maps x to (x - mean) / std: what a standard
    PyTorch pipeline does (``transforms.Normalize`` with the train split's statistics). The
    two numbers are buffers, not parameters: saved with the weights, never trained, and
    applied identically to every patch the network sees (train, validation, test, timing).

    Why the peers need it: the /255 patches have mean 0.68 (background tissue) and standard
    deviation 0.125, so each of LeNet-5's conv outputs is mostly 0.68 x (the sum of its
    weights) and its 17,424-input dense layer stalls (train accuracy 0.49-0.53);
    standardised, it fits its training patches (on the quick store it then memorises them:
    validation stays near chance). ShallowCNN keeps the paper's /255: it is the
    network the paper defines, and its scan uses the same input (benchmarks/README.md)."""
    class Standardize(torch.nn.Module):
        """(x - mean) / std with two fixed scalars."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

        def forward(self, x):
            return (x - self.mean) / self.std

    return torch.nn.Sequential(Standardize(), net)


def recompute_batchnorm_statistics(net, torch, x, rng, batches: int = 10, batch_size: int = 64):
    """Replace every BatchNorm layer's running mean and variance by their average over
    ``batches`` random training batches of ``x`` (n, C, H, W) float32 tensor, passed forward
    with the current weights ("precise BatchNorm", Wu & Johnson 2021). Does nothing to a
    network without BatchNorm; changes no weight. Returns ``net``.

    Why MobileNetV2 needs it: its running statistics (momentum 0.1) trail weights that Adam
    moves fast from scratch, so in eval mode a network that classifies its training
    batches well can score chance on every patch, its training patches included
    (benchmarks/README.md); averaging the statistics of the weights being evaluated is the
    standard cure."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return net
    was_training, momenta = net.training, [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                    # None: a cumulative (equal-weight) average over the batches
    net.train()
    order = rng.permutation(len(x))[:batches * batch_size]
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            net(x[torch.from_numpy(np.sort(order[i:i + batch_size]))])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.train(was_training)
    return net


def fit_until_stale(train_epoch, validate, snapshot, restore, max_epochs, patience, monitor="accuracy",
                    max_seconds=None, clock=time.perf_counter, on_epoch=None):
    """Early stopping with the best weights kept, for any framework.

    Calls ``train_epoch(epoch)`` for epoch = 1, 2, ... and ``validate()`` after each, which
    returns (validation loss, validation accuracy). The best epoch is the one with the
    highest validation accuracy (``monitor="accuracy"``: the paper's rule, and
    ``shallowcnn train``'s) or the lowest validation loss (``monitor="loss"``); a later
    epoch must do strictly better, and a NaN never counts as better. Training stops after
    ``patience`` epochs in a row without a better score, after ``max_epochs``, or (if
    ``max_seconds``) after the epoch that took the training past ``max_seconds`` of ``clock``.
    ``snapshot()`` copies the weights of each new best epoch and ``restore(copy)`` puts
    the best back at the end; ``on_epoch(epoch, loss, accuracy)``, if given, hears of each
    epoch. Returns (best epoch, epochs trained, validation losses, validation accuracies).
    """
    if monitor not in ("accuracy", "loss"):
        raise ValueError(f"monitor must be 'accuracy' or 'loss', not {monitor!r}")
    sign = 1.0 if monitor == "accuracy" else -1.0       # compare as "higher is better"
    best_score, best_epoch, best_weights, losses, accuracies = -np.inf, 0, None, [], []
    start = clock()
    for epoch in range(1, max_epochs + 1):
        train_epoch(epoch)
        loss, accuracy = (float(v) for v in validate())
        losses.append(loss)
        accuracies.append(accuracy)
        if on_epoch is not None:
            on_epoch(epoch, loss, accuracy)
        score = sign * (accuracy if monitor == "accuracy" else loss)
        if score > best_score:                 # False for NaN
            best_score, best_epoch, best_weights = score, epoch, snapshot()
        elif epoch - best_epoch >= patience:
            break
        if max_seconds is not None and clock() - start >= max_seconds:
            break
    if best_weights is not None:
        restore(best_weights)
    return best_epoch, len(losses), losses, accuracies


def build_peer(name, torch, mean: float, std: float):
    """A peer ("lenet5" or "mobilenetv2") ready to train: Keras' initialisation
    (:func:`keras_init`) behind the fixed input layer (x - mean) / std (:func:`standardized`),
    in PyTorch's channels_last layout (the same arithmetic, 1.6x faster for MobileNetV2 on
    CPU: benchmarks/README.md). Seed torch first for reproducible weights."""
    net = keras_init({"lenet5": lenet5, "mobilenetv2": mobilenet_v2}[name](torch.nn), torch.nn)
    return standardized(net, torch, mean, std).to(memory_format=torch.channels_last)


def train_torch(name, data, batch_size, seed, stopping, shift=SHIFT_PX):
    """Train a PyTorch peer until its validation score stops improving: ``stopping`` holds
    :func:`fit_until_stale`'s keywords (max_epochs, patience, monitor, max_seconds, on_epoch);
    each epoch trains on :func:`augment_epoch`'s copy of the train split (``shift`` None: the
    split as stored).

    Returns (predict function, parameter count, training seconds, best epoch, epochs trained,
    validation loss of each epoch, validation accuracy of each epoch)."""
    import torch
    torch.manual_seed(seed)
    net = build_peer(name, torch, *train_statistics(data["train"][0]))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    (x_stored, y), (x_val, y_val) = data["train"], data["val"]
    y = torch.from_numpy(y)
    rng = np.random.default_rng([seed, 2])
    batchnorm_rng = np.random.default_rng([seed, 3])     # its own: the batch order stays as without it
    augment_rng = np.random.default_rng([seed, 4])       # the same draws as ShallowCNN's

    def logits(images):
        net.eval()
        with torch.inference_mode():
            return np.concatenate([net(torch.from_numpy(images[i:i + 64]).contiguous(
                memory_format=torch.channels_last)).numpy().ravel()
                                   for i in range(0, len(images), 64)])

    def train_epoch(epoch):
        net.train()
        x = x_stored if shift is None else augment_epoch(x_stored, augment_rng, shift)
        x = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch_size):
            idx = torch.from_numpy(np.sort(order[i:i + batch_size]))
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x[idx]).ravel(), y[idx]).backward()
            optimizer.step()
        recompute_batchnorm_statistics(net, torch, x, batchnorm_rng, batch_size=batch_size)

    def validate():
        val_logits = logits(x_val)
        loss = float(loss_fn(torch.from_numpy(val_logits), torch.from_numpy(y_val)))
        return loss, float(np.mean((val_logits >= 0) == (y_val >= 0.5)))      # logit 0 = probability 0.5

    start = time.perf_counter()
    best_epoch, epochs, val_losses, val_accuracies = fit_until_stale(
        train_epoch, validate, lambda: {k: v.clone() for k, v in net.state_dict().items()},
        net.load_state_dict, **stopping)
    seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)

    def predict(images):
        return 0.5 * (1 + np.tanh(logits(images) / 2))          # the sigmoid, without overflow

    return predict, n_params, seconds, best_epoch, epochs, val_losses, val_accuracies


def train_shallowcnn(data, batch_size, seed, backend, stopping, shift=SHIFT_PX):
    """Train the project's network with its own Trainer's epochs (the paper's recipe) until
    its validation score stops improving, on :func:`augment_epoch`'s copy of the train split
    each epoch (as the peers); returns what :func:`train_torch` does."""
    from shallowcnn.model import ShallowCNN
    from shallowcnn.train import TrainConfig, Trainer, evaluate_arrays

    model = ShallowCNN(backend=backend, seed=seed)
    config = TrainConfig(epochs=stopping["max_epochs"], batch_size=batch_size, seed=seed, backend=backend)
    trainer = Trainer(model, config, verbose=False)
    (x, y), (x_val, y_val) = data["train"], data["val"]
    augment_rng = np.random.default_rng([seed, 4])       # the same draws as the peers'
    start = time.perf_counter()
    best_epoch, epochs, val_losses, val_accuracies = fit_until_stale(
        lambda epoch: trainer.run_epoch(x if shift is None else augment_epoch(x, augment_rng, shift), y, epoch),
        lambda: evaluate_arrays(model, x_val, y_val),
        lambda: {k: v.copy() for k, v in model.params.items()}, model.set_params, **stopping)
    seconds = time.perf_counter() - start
    return lambda images: model.predict_proba(images, batch_size=64), model.n_params(), seconds, \
        best_epoch, epochs, val_losses, val_accuracies


# ------------------------------------------------------------------ the table
def patches_per_second(predict, images, reps, count=256) -> float:
    """Inference speed on ``count`` patches (``images`` repeated or cut): the best of
    ``reps`` timed passes after one warm-up batch."""
    images = np.resize(images, (max(1, count),) + images.shape[1:])
    predict(images[:64])
    best = min(_timed(predict, images) for _ in range(max(1, reps)))
    return len(images) / best


def _timed(predict, images) -> float:
    start = time.perf_counter()
    predict(images)
    return time.perf_counter() - start


SCORES = ("accuracy", "sensitivity", "specificity", "roc_auc")


def summarize(runs) -> dict:
    """One network's runs (one dict per seed) -> mean and sample standard deviation of
    each score and of the epochs and training seconds (std 0 for a single seed)."""
    out = {"model": runs[0]["model"], "seeds": [r["seed"] for r in runs], "n_params": runs[0]["n_params"],
           "patches_per_second": float(np.median([r["patches_per_second"] for r in runs]))}
    for key in (*SCORES, "best_epoch", "epochs", "train_seconds"):
        values = np.array([r[key] for r in runs], dtype=float)
        out[key] = float(values.mean())
        out[key + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def markdown_table(rows, settings, store) -> str:
    """The table: mean +- std over the seeds, beside the paper's accuracy and parameters."""
    n_seeds = len(rows[0]["seeds"])
    lines = [f"Test split of `{store}`; {settings}; mean +- standard deviation over {n_seeds} seed(s).", "",
             "| network | accuracy | sensitivity | specificity | ROC AUC | parameters | epochs (best) "
             "| training s | inference patches/s | paper: accuracy, parameters |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper_acc, paper_params = PAPER[r["model"]]
        scores = " | ".join(f"{r[k]:.3f} +- {r[k + '_std']:.3f}" for k in SCORES)
        lines.append(f"| {LABELS[r['model']]} | {scores} | {r['n_params']:,} | {r['epochs']:.1f} "
                     f"({r['best_epoch']:.1f}) | {r['train_seconds']:.0f} | {r['patches_per_second']:.0f} | "
                     f"{paper_acc}, {paper_params:,} |")
    return "\n".join(lines) + "\n"


QUICK_TOTAL_MINUTES = 15   # --quick: the training time of all networks together (time_share)


def time_share(total_seconds, spent_seconds, runs_left, cap_seconds=None):
    """The seconds of training the next run may use: an equal share of what is left of
    ``total_seconds`` after ``spent_seconds``, among the ``runs_left`` runs still to train
    (this one included), at most ``cap_seconds`` if given; None if neither is set. Every
    network is owed the same share, and time that a network leaves unused (it stopped on
    patience) passes on to the networks after it. Never below zero."""
    if total_seconds is None:
        return cap_seconds
    share = max(0.0, total_seconds - spent_seconds) / max(1, runs_left)
    return share if cap_seconds is None else min(share, cap_seconds)


def quick_store(folder) -> Path:
    """A small phantom (36 patients, images of the demo size, 832 x 1024) and its patch store
    with the paper's x5 augmentation, for --quick: 2,340 train, 660 validation, 660 test
    patches. Two offsets per cluster and three negatives per image: many distinct clusters
    (117 in the train split) rather than many shifted copies of a few -- 12 patients with 8
    offsets and 10 negatives gave about as many patches (2,100) from only 26 clusters, which
    MobileNetV2 memorised (train accuracy 0.82 at epoch 3, validation 0.51). Smaller images
    (480 x 560) taught no network anything (benchmarks/README.md)."""
    from shallowcnn.data.patches import make_patches
    from shallowcnn.data.phantom import generate_phantom

    generate_phantom(Path(folder) / "phantom", cases=36, seed=3, size="demo", verbose=False)
    path = Path(folder) / "patches.npz"
    make_patches(Path(folder) / "phantom", path, seed=0, per_cluster=2, negatives_per_image=3,
                 augment_patches=True, verbose=False)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patches", help="patch store (.npz); --quick without it makes a tiny phantom one")
    ap.add_argument("--epochs", type=int, default=None,
                    help="at most this many epochs per network (default 100, --quick 30)")
    ap.add_argument("--patience", type=int, default=None,
                    help="stop after this many epochs without a better validation score (default 10, --quick 6)")
    ap.add_argument("--monitor", choices=("accuracy", "loss"), default="accuracy",
                    help="the validation score that picks the kept epoch and stops training: the highest "
                         "accuracy (default: the paper's rule and shallowcnn train's) or the lowest loss")
    ap.add_argument("--minutes", type=float, default=None,
                    help="stop a network's training after the epoch that passes this many minutes (default none)")
    ap.add_argument("--total-minutes", type=float, default=None,
                    help="training minutes for all networks and seeds together: each run may use an equal "
                         "share of what is left, so time a network leaves unused passes on to the next "
                         f"(default none; --quick {QUICK_TOTAL_MINUTES})")
    ap.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64, the paper's)")
    ap.add_argument("--shift", type=int, default=SHIFT_PX,
                    help=f"each epoch, move every training patch by up to this many pixels and turn or mirror "
                         f"it at random, the same for every network (default {SHIFT_PX}; -1: train on the "
                         "stored patches as they are)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated seeds of weights and batch order (default 0,1,2; --quick 0)")
    ap.add_argument("--backend", default="numba", help="shallowcnn backend (default numba)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every framework")
    ap.add_argument("--reps", type=int, default=3, help="timed inference passes (best reported)")
    ap.add_argument("--inference-patches", type=int, default=256,
                    help="patches per timed inference pass, the test patches repeated (default 256)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for table3.md and table3.json")
    ap.add_argument("--quick", action="store_true",
                    help=f"a small phantom store (unless --patches), one seed, patience 6, at most "
                         f"{QUICK_TOTAL_MINUTES} minutes of training for all networks together")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        ap.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if not args.patches and not args.quick:
        ap.error("give --patches STORE (or --quick to use a tiny phantom)")
    if any(m != "shallowcnn" for m in models):
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            print(f"error: {PEERS_MISSING}", file=sys.stderr)
            return 3
    if args.backend == "numba":
        import numba
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    max_epochs = args.epochs or (30 if args.quick else 100)
    patience = args.patience or (6 if args.quick else 10)
    try:
        seeds = [int(v) for v in (args.seeds or ("0" if args.quick else "0,1,2")).split(",") if v.strip()]
    except ValueError:
        ap.error(f"--seeds: expected whole numbers separated by commas, got {args.seeds!r}")
    if not seeds or min(seeds) < 0 or max_epochs < 1 or patience < 1:
        ap.error("--seeds needs at least one seed >= 0; --epochs and --patience must be at least 1")
    if args.shift < -1 or args.shift >= 72:
        ap.error(f"--shift must be -1 (none) or 0 to 71 pixels, got {args.shift}")
    shift = None if args.shift == -1 else args.shift
    minutes = args.minutes
    total_minutes = args.total_minutes if args.total_minutes is not None else (
        QUICK_TOTAL_MINUTES if args.quick else None)
    for option, value in (("--minutes", minutes), ("--total-minutes", total_minutes)):
        if value is not None and value <= 0:
            ap.error(f"{option} must be positive, got {value}")
    stopping = {"max_epochs": max_epochs, "patience": patience, "monitor": args.monitor,
                "on_epoch": lambda epoch, loss, accuracy: print(
                    f"    epoch {epoch}: validation loss {loss:.4f}, accuracy {accuracy:.4f}", flush=True)}

    from shallowcnn.data.patches import PatchError, open_patches
    from shallowcnn.storage import StoreError
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(args.patches) if args.patches else quick_store(tmp)
        try:
            store = open_patches(store_path)
        except (StoreError, PatchError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        data = {split: store.arrays(split) for split in ("train", "val", "test")}
    if any(len(data[s][0]) == 0 for s in data):
        print(f"error: {store_path}: needs train, val and test patches", file=sys.stderr)
        return 2
    x_test, y_test = data["test"]
    runs = {name: [] for name in models}
    spent, runs_left = 0.0, len(seeds) * len(models)
    for seed in seeds:
        for name in models:
            stopping["max_seconds"] = time_share(None if total_minutes is None else 60 * total_minutes, spent,
                                                 runs_left, None if minutes is None else 60 * minutes)
            budget = "" if stopping["max_seconds"] is None else f", {stopping['max_seconds'] / 60:.1f} minutes"
            print(f"seed {seed}: training {LABELS[name]} on {len(data['train'][0])} patches "
                  f"(at most {max_epochs} epochs{budget}, patience {patience}) ...", flush=True)
            if name == "shallowcnn":
                trained = train_shallowcnn(data, args.batch_size, seed, args.backend, stopping, shift)
            else:
                trained = train_torch(name, data, args.batch_size, seed, stopping, shift)
            predict, n_params, seconds, best_epoch, epochs, val_losses, val_accuracies = trained
            spent, runs_left = spent + seconds, runs_left - 1
            metrics = classification_metrics(y_test, predict(x_test))
            run = {"model": name, "seed": seed, "n_params": int(n_params), "train_seconds": seconds,
                   "budget_seconds": stopping["max_seconds"],
                   "best_epoch": best_epoch, "epochs": epochs, "val_losses": [round(v, 5) for v in val_losses],
                   "val_accuracies": [round(v, 5) for v in val_accuracies],
                   "patches_per_second": patches_per_second(predict, x_test, args.reps, args.inference_patches),
                   **{k: float(metrics[k]) for k in SCORES}}
            runs[name].append(run)
            print(f"  accuracy {run['accuracy']:.3f}, ROC AUC {run['roc_auc']:.3f}; best epoch {best_epoch} "
                  f"of {epochs}, {seconds:.0f} s", flush=True)
    rows = [summarize(runs[name]) for name in models]
    source = "a small phantom store (--quick)" if not args.patches else str(store_path)
    settings = (f"at most {max_epochs} epochs" + (f" and {minutes:g} minutes" if minutes else "")
                + " per network" + (f", {total_minutes:g} minutes for all (equal shares, unused time passed on)"
                                    if total_minutes else "")
                + f", patience {patience}, best epoch by validation {args.monitor}, batch {args.batch_size}, "
                + ("the stored patches as they are" if shift is None else
                   f"each epoch every training patch moved by up to {shift} px and turned or mirrored at random")
                + "; "
                "the peers standardise their input with the train split's mean {:.3f} and std {:.3f}".format(
                    *train_statistics(data["train"][0])))
    table = markdown_table(rows, settings, source)
    print("\n" + table)
    out = Path(args.out)
    atomic_write_text(out / "table3.md", table)
    atomic_write_text(out / "table3.json", json.dumps(
        {"patches": source, "max_epochs": max_epochs, "patience": patience, "monitor": args.monitor, "shift": shift,
         "max_minutes": minutes, "total_minutes": total_minutes, "batch_size": args.batch_size,
         "threads": args.threads, "seeds": seeds, "rows": rows,
         "runs": [r for name in models for r in runs[name]]}, indent=2, allow_nan=True))
    print(f"wrote {out / 'table3.md'} and table3.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
