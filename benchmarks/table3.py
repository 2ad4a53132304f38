"""The paper's Table 3: ShallowCNN against LeNet-5 and MobileNetV2 on one patch store.

    python benchmarks/table3.py --patches patches.npz               # the paper's 100 epochs
    python benchmarks/table3.py --patches patches.npz --epochs 20 --models lenet5,shallowcnn
    python benchmarks/table3.py --quick                             # a tiny phantom, 2 epochs: minutes

Every network trains on the store's train split, keeps the epoch with the best
validation accuracy (the paper's rule) and is scored on the test split, with
the same recipe: Adam (lr 1e-3, eps 1e-7), batch 64, binary cross-entropy, the
same epochs, the same seed for the order of the batches. For each it reports
accuracy, sensitivity, specificity and ROC AUC at the 0.5 threshold
(shallowcnn.metrics), the trainable parameter count, the training time and the
inference speed (patches per second over ``--inference-patches`` test patches,
repeated as needed, best of ``--reps`` passes).

The peers are PyTorch networks written here (the ``[bench]`` extra; no
torchvision needed), both from scratch (random weights) with ONE input channel:

* LeNet-5 (LeCun et al. 1998) as it is usually re-implemented: conv 6 x 5x5,
  ReLU, max pool 2, conv 16 x 5x5, ReLU, max pool 2, dense 120, 84, 1. At
  144 x 144 the first dense layer sees 16 x 33 x 33 = 17,424 inputs, so it
  holds almost all of the 2,103,821 parameters.
* MobileNetV2 (Sandler et al. 2018, their Table 2; width 1.0): a 3x3 stride-2
  stem of 32, seventeen inverted-residual blocks, a 1x1 conv to 1280, global
  average pooling, dropout 0.2, dense 1280 -> 1: 2,224,577 parameters.

The paper reports 2,233,365 (LeNet-5) and 67,797,505 (MobileNetV2) without
saying how they were built; see benchmarks/README.md for how ours differ.

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


def train_torch(name, data, epochs, batch_size, seed):
    """Train a PyTorch peer; returns (predict function, parameter count, training seconds, best epoch)."""
    import torch
    torch.manual_seed(seed)
    net = {"lenet5": lenet5, "mobilenetv2": mobilenet_v2}[name](torch.nn)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    (x, y), (x_val, y_val) = data["train"], data["val"]
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng([seed, 2])

    def predict(images):
        net.eval()
        with torch.inference_mode():
            return np.concatenate([torch.sigmoid(net(torch.from_numpy(images[i:i + 64]))).numpy().ravel()
                                   for i in range(0, len(images), 64)])

    best = (-1.0, 0, None)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        net.train()
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch_size):
            idx = torch.from_numpy(np.sort(order[i:i + batch_size]))
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x[idx]).ravel(), y[idx]).backward()
            optimizer.step()
        val_accuracy = float(np.mean((predict(x_val) >= 0.5) == (y_val >= 0.5)))
        if val_accuracy > best[0]:                    # the paper keeps the best validation epoch
            best = (val_accuracy, epoch, {k: v.clone() for k, v in net.state_dict().items()})
    seconds = time.perf_counter() - start
    net.load_state_dict(best[2])
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return predict, n_params, seconds, best[1]


def train_shallowcnn(data, epochs, batch_size, seed, backend):
    """Train the project's network with its own Trainer (the paper's recipe)."""
    from shallowcnn.model import ShallowCNN
    from shallowcnn.train import TrainConfig, Trainer

    model = ShallowCNN(backend=backend, seed=seed)
    trainer = Trainer(model, TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, backend=backend),
                      verbose=False)
    start = time.perf_counter()
    trainer.fit(*data["train"], *data["val"])
    seconds = time.perf_counter() - start
    model.set_params(trainer.best_params)
    return lambda images: model.predict_proba(images, batch_size=64), model.n_params(), seconds, \
        trainer.best["epoch"]


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


def markdown_table(rows, epochs, store) -> str:
    lines = [f"Test split of `{store}`; {epochs} epochs, best validation epoch kept.", "",
             "| network | accuracy | sensitivity | specificity | ROC AUC | parameters | training s "
             "| inference patches/s | paper: accuracy, parameters |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper_acc, paper_params = PAPER[r["model"]]
        lines.append(f"| {LABELS[r['model']]} | {r['accuracy']:.4f} | {r['sensitivity']:.4f} | "
                     f"{r['specificity']:.4f} | {r['roc_auc']:.4f} | {r['n_params']:,} | {r['train_seconds']:.1f} | "
                     f"{r['patches_per_second']:.0f} | {paper_acc}, {paper_params:,} |")
    return "\n".join(lines) + "\n"


def quick_store(folder) -> Path:
    """A tiny phantom (4 patients, small images) and its patch store, for --quick."""
    from shallowcnn.data.patches import make_patches
    from shallowcnn.data.phantom import generate_phantom

    generate_phantom(Path(folder) / "phantom", cases=4, seed=3, size=(480, 560), verbose=False)
    path = Path(folder) / "patches.npz"
    make_patches(Path(folder) / "phantom", path, seed=0, per_cluster=6, negatives_per_image=8,
                 augment_patches=False, verbose=False)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patches", help="patch store (.npz); --quick without it makes a tiny phantom one")
    ap.add_argument("--epochs", type=int, default=None, help="epochs for every network (default 100, --quick 2)")
    ap.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64, the paper's)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--seed", type=int, default=0, help="seed of weights and batch order (default 0)")
    ap.add_argument("--backend", default="numba", help="shallowcnn backend (default numba)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every framework")
    ap.add_argument("--reps", type=int, default=3, help="timed inference passes (best reported)")
    ap.add_argument("--inference-patches", type=int, default=256,
                    help="patches per timed inference pass, the test patches repeated (default 256)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for table3.md and table3.json")
    ap.add_argument("--quick", action="store_true", help="a tiny phantom store and 2 epochs: a few minutes")
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
    epochs = args.epochs or (2 if args.quick else 100)

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
    rows = []
    for name in models:
        print(f"training {LABELS[name]} for {epochs} epochs on {len(data['train'][0])} patches ...", flush=True)
        if name == "shallowcnn":
            predict, n_params, seconds, best_epoch = train_shallowcnn(data, epochs, args.batch_size, args.seed,
                                                                      args.backend)
        else:
            predict, n_params, seconds, best_epoch = train_torch(name, data, epochs, args.batch_size, args.seed)
        metrics = classification_metrics(y_test, predict(x_test))
        rows.append({"model": name, "n_params": int(n_params), "train_seconds": seconds, "best_epoch": best_epoch,
                     "patches_per_second": patches_per_second(predict, x_test, args.reps,
                                                                    args.inference_patches),
                     **{k: metrics[k] for k in ("accuracy", "sensitivity", "specificity", "roc_auc")}})
    source = "a tiny phantom (--quick)" if not args.patches else str(store_path)
    table = markdown_table(rows, epochs, source)
    print("\n" + table)
    out = Path(args.out)
    atomic_write_text(out / "table3.md", table)
    atomic_write_text(out / "table3.json", json.dumps(
        {"patches": source, "epochs": epochs, "batch_size": args.batch_size, "threads": args.threads,
         "seed": args.seed, "rows": rows}, indent=2, allow_nan=True))
    print(f"wrote {out / 'table3.md'} and table3.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
