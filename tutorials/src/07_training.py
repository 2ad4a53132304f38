# %% [markdown]
# # 7. Training the paper's network end to end
#
# Notebooks 2-6 built every piece and checked it. Here they come together: phantom patches
# (notebook 1) go into the paper's network, trained with the paper's recipe -- binary
# cross-entropy, Adam with learning rate 0.001, batches of 64, dropout keeping 80%, and the epoch
# with the best validation accuracy kept. Then we measure it on patients it has never seen,
# draw the ROC curve, and open the network up: its learned $9\times9$ filters, its feature maps on
# a positive and a negative patch, and the pixels its answer depends on.
#
# The paper trains 100 epochs on 10,088 patches. A notebook cannot wait that long, so this one
# trains six epochs on about 3,000 patches from a 20-patient phantom -- a couple of minutes on two
# cores, enough for a clearly trained network (the tests, in quick mode, run two epochs on a
# handful of patches, and check only the machinery); `shallowcnn train` runs the full recipe.
#
# | | |
# |---|---|
# | **You will learn** | to write one training step from the pieces of notebooks 2-6; to check that a network can learn at all (overfit one batch); best-epoch selection; sensitivity, specificity and the ROC curve on unseen patients; what the trained filters, feature maps and gradients show |
# | **You need** | notebooks [1](01_data.ipynb) (patches, split by patient) to [6](06_adam_dropout.ipynb) (Adam, dropout) |
# | **Time** | about 60 minutes of reading and running (the training cell takes a few minutes), with the exercise 7.1 (medium) |
# | **Previous / next** | [6. Adam and dropout](06_adam_dropout.ipynb) / [8. Making it fast](08_speed.ipynb) |

# %%
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm in a notebook without ipywidgets
from shallowcnn import grading
from shallowcnn.data.patches import make_patches
from shallowcnn.data.phantom import generate_phantom
from shallowcnn.layers import Conv2D, Dense, GlobalMaxPool2D, ReLU
from shallowcnn.losses import BinaryCrossEntropyWithLogits
from shallowcnn.metrics import classification_metrics, format_metrics, roc_auc, roc_curve
from shallowcnn.model import ShallowCNN
from shallowcnn.optim import Adam
from shallowcnn.train import TrainConfig, Trainer

QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"   # the tests set it: tiny data, 2 epochs, no accuracy check
plt.rcParams.update({"figure.dpi": 80, "image.cmap": "gray"})
WORK = Path(tempfile.mkdtemp(prefix="shallowcnn-tutorial-7-"))
BACKEND = "numba"          # the fast CPU kernels of notebook 8; "numpy" gives the same numbers, slowly

# %% [markdown]
# ## 7.1 Data
#
# A phantom of 20 patients, cut into patches split by patient (notebook 1). To keep the run
# short we take 6 positive offsets per cluster and 9 negatives per image (instead of 20 and 30):
# fewer, less redundant patches from the same 20 women -- what the network needs most is many
# *different* clusters, not many shifted copies of the same ones. In quick mode a 6-patient
# phantom, and a small random subset of each split.

# %%
generate_phantom(WORK / "phantom", cases=6 if QUICK else 20, seed=0, verbose=False)
store = make_patches(WORK / "phantom", WORK / "patches.npz", seed=0, verbose=False,
                     **({} if QUICK else dict(per_cluster=6, negatives_per_image=9)))
rng = np.random.default_rng(0)

def split_arrays(name, limit):
    """x, y of a split; with ``limit``, a random subset of limit / 2 patches of each class."""
    x, y = store.arrays(name)
    if not limit:
        return x, y
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:limit // 2] for c in (0, 1)]))
    return x[keep], y[keep]

limit = 96 if QUICK else None
(x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (split_arrays(s, limit) for s in ("train", "val", "test"))
print({s: (len(x), int(y.sum())) for s, x, y in zip(("train", "val", "test"), (x_tr, x_va, x_te), (y_tr, y_va, y_te))},
      "(patches, positives)")
print({s: len(set(store.patient[store.split == s])) for s in ("train", "val", "test")}, "(patients)")

# %% check
assert all(0 < y.mean() < 1 for y in (y_tr, y_va, y_te))          # both classes in every split
assert not set(store.patient[store.split == "test"]) & set(store.patient[store.split == "train"])

# %% [markdown]
# ## 7.2 The network
#
# `ShallowCNN` is the paper's Table 2: 492 + 7,792 + 17 = 8,301 parameters. The paper does not
# say how it initialised them; our reading is Keras' defaults, Glorot-uniform weights and zero
# biases, and the package does the same.

# %%
model = ShallowCNN(backend=BACKEND, seed=0)
print(model.summary())
initial = {k: v.copy() for k, v in model.params.items()}

# %% check
assert model.n_params() == 8301 == 492 + 7792 + 17
assert np.all(model.params["conv1.b"] == 0) and np.abs(model.params["conv1.W"]).max() <= np.sqrt(6 / (81 + 486))

# %% [markdown]
# The shapes a patch goes through, drawn as in the paper's Fig. 4 (measured on the model, not
# typed in): each box is a stack of feature maps (one outline per map), its height to scale.

# %%
h = x_tr[:1]
shapes = [h.shape[1:]]
for layer in (model.conv1, model.relu1, model.conv2, model.relu2, model.pool):
    h = layer.forward(h)
    if layer in (model.conv1, model.conv2, model.pool):
        shapes.append(h.shape[1:])
shapes.append(model.dense.forward(h).shape[1:])              # one logit per patch
print(shapes)

names = ["input patch", "conv1 + ReLU", "conv2 + ReLU", "global max pool", "dense + sigmoid"]
ops = ["6 filters 9x9", "16 filters 9x9", "max per map", "16 weights + bias"]
xs = [0, 95, 200, 320, 420]                                 # where each stage starts
fig, ax = plt.subplots(figsize=(13, 3.8))
for k, (name, shape, x0) in enumerate(zip(names, shapes, xs)):
    if len(shape) == 3:                                      # a stack of maps, to scale, one outline per map
        depth, side = shape[0], shape[1]
        for d in range(depth):
            ax.add_patch(plt.Rectangle((x0 + 2.5 * d, 2.5 * d), side / 5, side, fc="tab:blue", ec="k", lw=0.4, alpha=0.3))
        right, label = x0 + side / 5 + 2.5 * depth, f"{depth} x {side} x {shape[2]}"
    else:                                                    # a vector: one small square per number
        depth = shape[0]
        for d in range(depth):
            ax.add_patch(plt.Rectangle((x0, 72 + 7 * (d - depth / 2)), 7, 7, fc="tab:orange", ec="k", lw=0.4))
        right, label = x0 + 7, f"{depth} number{'s' * (depth > 1)}"
    ax.text(x0, -12, f"{name}\n{label}", fontsize=9, va="top")
    if k < len(ops):
        ax.annotate("", (xs[k + 1] - 6, 72), (right + 6, 72), arrowprops=dict(arrowstyle="->"))
        ax.text((right + xs[k + 1]) / 2, 80, ops[k], fontsize=8, ha="center")
ax.set(xlim=(-5, 470), ylim=(-40, 190), aspect="equal")
ax.axis("off")
ax.set_title("The shallow CNN (after the paper's Fig. 4): 8,301 parameters")
plt.show()

# %% check
assert shapes == [(1, 144, 144), (6, 136, 136), (16, 128, 128), (16,), (1,)]

# %% [markdown]
# ## 7.3 Before training: can it learn at all?
#
# A network that cannot memorise a handful of examples will not learn from thousands -- a bug
# in a backward pass, a sign error in the update or a dead initialisation all show up here in
# seconds. So first write one training step from the pieces of notebooks 4-6, then train it on
# one batch of 16 patches (8 of each class) until the loss is nearly zero. Dropout is off for
# this test (it is there to *prevent* memorising), and the learning rate is a little higher
# than the paper's to get there in a few dozen steps.
#
# **Exercise 7.1** (medium, 15 min) -- one training step. Forward with dropout on, the fused
# loss, backward, one Adam step; return the loss (computed before the update).

# %%
def my_train_step(model, opt, loss_fn, xb, yb):
    """One step of training on (xb, yb); returns the batch's loss before the update."""
    # BEGIN SOLUTION 7.1 | medium | 15 min | forward with dropout on, loss, backward, optimiser step -- in that order, as train_step does in notebook 6
    loss = loss_fn.forward(model.forward(xb, training=True), yb)
    model.backward(loss_fn.backward())
    opt.step(model.grads)
    return loss
    # END SOLUTION

# %% check
grading.check_training_step(my_train_step, "7.1")        # the same numbers as the package's train_step

# %%
pick = np.concatenate([np.flatnonzero(y_tr == c)[:8] for c in (0, 1)])
x16, y16 = x_tr[pick], y_tr[pick]
learner = ShallowCNN(backend=BACKEND, seed=1, p_drop=0.0)
opt16, bce16 = Adam(learner.params, lr=3e-3), BinaryCrossEntropyWithLogits()
overfit = []
for step in range(1000):                 # stops as soon as the batch is memorised
    overfit.append(my_train_step(learner, opt16, bce16, x16, y16))
    if overfit[-1] < 0.05:
        break
print(f"loss on 16 patches: {overfit[0]:.3f} at the start, {overfit[-1]:.4f} after {len(overfit)} steps")

# %% check
grading.check_overfits(overfit, target=0.05)             # the tests run this too: a network that stopped learning fails

# %% [markdown]
# ## 7.4 Training
#
# `Trainer` runs the epochs: a new shuffle of the training patches each epoch, `train_step` on
# every batch (notebook 6), then the loss and accuracy on the validation patches without
# dropout. It keeps a copy of the weights of the epoch with the best validation accuracy (the
# paper's rule) and, given a folder, writes `checkpoint.npz` (weights, Adam's moments, the
# random generators: training can resume exactly), `history.csv` and `model.npz` (the best
# epoch) after every epoch.

# %%
config = TrainConfig(epochs=2 if QUICK else 6, batch_size=64, lr=1e-3, p_drop=0.2, seed=0, backend=BACKEND)
trainer = Trainer(model, config, run_dir=WORK / "run", verbose=False)
history = trainer.fit(x_tr, y_tr, x_va, y_va)
for row in zip(*(history[k] for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"))):
    print("epoch {:2d}  loss {:.4f}  acc {:.3f}  val_loss {:.4f}  val_acc {:.3f}  {:.1f} s".format(*row))
print("best epoch:", trainer.best)

# %% [markdown]
# Checks: the best epoch is the *first* epoch with the highest validation accuracy; `model.npz`
# holds exactly its weights; and the weights did move away from their initial values.

# %%
best_model = ShallowCNN.load(WORK / "run" / "model.npz", backend=BACKEND)
print(sorted(p.name for p in (WORK / "run").iterdir()))

# %% check
assert history["epoch"] == list(range(1, config.epochs + 1))
assert trainer.best["epoch"] == 1 + int(np.argmax(history["val_accuracy"]))
assert all(np.array_equal(best_model.params[k], trainer.best_params[k]) for k in best_model.params)
assert all(not np.array_equal(model.params[k], initial[k]) for k in ("conv1.W", "conv2.W", "dense.W"))

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.5))
a1.plot(history["epoch"], history["accuracy"], "o-", label="training (dropout on)")
a1.plot(history["epoch"], history["val_accuracy"], "o-", label="validation")
a1.axvline(trainer.best["epoch"], color="gray", ls=":", label="kept epoch")
a1.set(xlabel="epoch", ylabel="accuracy", title="accuracy (the paper's Fig. 5a)")
a1.legend()
a2.plot(history["epoch"], history["loss"], "o-", label="training")
a2.plot(history["epoch"], history["val_loss"], "o-", label="validation")
a2.set(xlabel="epoch", ylabel="binary cross-entropy", title="loss (Fig. 5b)")
a2.legend()
plt.show()

# %% [markdown]
# ## 7.5 Metrics on the test patients
#
# With the threshold 0.5 of the paper, the confusion matrix counts true and false positives and
# negatives, and from it: accuracy $\frac{TP+TN}{N}$, sensitivity $\frac{TP}{TP+FN}$ (clusters found),
# specificity $\frac{TN}{TN+FP}$ (normal tissue left alone), precision $\frac{TP}{TP+FP}$ and
# $F_1 = \frac{2\,PS}{P+S}$. The paper reports accuracy only; for a screening tool sensitivity and
# specificity say much more.

# %%
probs = best_model.predict_proba(x_te)
m = classification_metrics(y_te, probs)
print(format_metrics(m))

# %% [markdown]
# How to read these numbers. These are patients the network has never seen, neither in training
# nor in choosing the epoch, so they are an honest estimate -- from only a few women, though, so
# expect them to move by several points with another seed. After a few hundred Adam steps the
# network has clearly found the calcifications, but it is not finished: compare sensitivity with
# specificity to see on which side of the threshold its errors fall. The phantom's faintest
# clusters (a few 1-2 pixel specks barely above the quantum noise) are the hard positives, and
# a network this young has not learned them yet; the paper trained for about 16,000 steps. (In quick mode -- two epochs on 96 patches --
# the numbers mean nothing: the network has barely moved from its start, and an accuracy near
# 50% with everything on one side of the threshold is what that looks like.) The checks in this
# notebook verify the machinery -- selection of the best epoch, the metrics, the ROC, the
# gradients -- which is the same at any accuracy.
#
# The same numbers counted by hand:

# %%
pred = probs >= 0.5
tp, tn = int(np.sum(pred & (y_te == 1))), int(np.sum(~pred & (y_te == 0)))
fp, fn = int(np.sum(pred & (y_te == 0))), int(np.sum(~pred & (y_te == 1)))
print(dict(tp=tp, tn=tn, fp=fp, fn=fn))

# %% check
assert m["confusion_matrix"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
assert abs(m["accuracy"] - (tp + tn) / len(y_te)) < 1e-12
assert abs(m["sensitivity"] - tp / (tp + fn)) < 1e-12 and abs(m["specificity"] - tn / (tn + fp)) < 1e-12

# %% [markdown]
# ## 7.6 The ROC curve
#
# Moving the threshold from 1 down to 0 trades specificity for sensitivity; the ROC curve plots
# the true-positive rate against the false-positive rate along the way. Its area (AUC) has a
# plain meaning: **the probability that a random positive patch scores higher than a random
# negative one** (ties count half). We check the package's rank formula against that
# definition, by brute force over all pairs.

# %%
pos, neg = probs[y_te == 1], probs[y_te == 0]
auc_pairs = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
fpr, tpr, thr = roc_curve(y_te, probs)
auc_trapezoid = np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr)
print(f"AUC: ranks {roc_auc(y_te, probs):.6f}, all pairs {auc_pairs:.6f}, trapezoids {auc_trapezoid:.6f}")

# %% check
assert abs(roc_auc(y_te, probs) - auc_pairs) < 1e-12
assert abs(auc_trapezoid - auc_pairs) < 1e-9
assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
if not QUICK:                     # the full run has learned: far better than chance on unseen patients
    assert auc_pairs > 0.8, auc_pairs

# %%
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.plot(fpr, tpr, label=f"shallow CNN (AUC {auc_pairs:.3f})")
ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
at = np.argmin(np.abs(thr - 0.5))
ax.plot(fpr[at], tpr[at], "o", label="threshold 0.5")
ax.set(xlabel="false-positive rate (1 - specificity)", ylabel="true-positive rate (sensitivity)",
       title="ROC on the test patients")
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# ## 7.7 The learned filters
#
# The six $9\times9$ filters of conv1, before and after training (same colour scale per filter). Adam
# moves each weight by typically about the learning rate, 0.001, per step (at most about 3.2 times
# that, notebook 6), and the steps of a noisy gradient partly cancel, while Glorot's initial
# weights are of order 0.1: after a few hundred steps most of each filter is still its random
# start. Look for what has changed, though: some filters have grown a compact warm (positive) blob
# a few pixels wide on a cooler surround -- a bright-spot detector the size of a
# microcalcification, which is what the task asks for. The paper's 100 epochs of 158 steps each
# give the filters about 55 times as many steps (15,800 against the 6 x 48 = 288 of this run) to clean up.

# %%
W0, W1 = initial["conv1.W"][:, 0], best_model.params["conv1.W"][:, 0]
fig, axes = plt.subplots(2, 6, figsize=(12, 4.2))
for f in range(6):
    lim = np.abs(np.concatenate([W0[f], W1[f]])).max()
    for row, (W, name) in enumerate(((W0, "initial"), (W1, "trained"))):
        axes[row, f].imshow(W[f], cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[row, f].set_title(f"{name} {f}", fontsize=9)
        axes[row, f].axis("off")
plt.show()
print("mean |change| of conv1 weights:", float(np.abs(W1 - W0).mean()))

# %% [markdown]
# ## 7.8 Feature maps of a positive and a negative patch
#
# To look inside we rebuild the network from the package's layers with the trained weights,
# in float64 and with `need_dx` on for conv1 (so that the gradient reaches the patch), and run
# a positive and a negative test patch through it. We keep every intermediate map.

# %%
def rebuilt(params):
    c1, c2 = Conv2D(1, 6, 9, dtype=np.float64), Conv2D(6, 16, 9, dtype=np.float64)
    dense = Dense(16, 1, dtype=np.float64)
    for layer, name in ((c1, "conv1"), (c2, "conv2"), (dense, "dense")):
        layer.params["W"][...] = params[f"{name}.W"]
        layer.params["b"][...] = params[f"{name}.b"]
    return [c1, ReLU(), c2, ReLU(), GlobalMaxPool2D(), dense]

layers = rebuilt(best_model.params)
i_pos = int(np.flatnonzero(y_te == 1)[np.argmax(probs[y_te == 1])])   # the most confident positive
i_neg = int(np.flatnonzero(y_te == 0)[np.argmin(probs[y_te == 0])])   # the most confident negative
maps = {}
for name, i in (("positive", i_pos), ("negative", i_neg)):
    h = x_te[i:i + 1].astype(np.float64)
    acts = [h]
    for layer in layers:
        h = layer.forward(h)
        acts.append(h)
    maps[name] = acts
    print(name, "logit", float(h[0, 0]), "probability", float(probs[i]))

# %% check
for name, i in (("positive", i_pos), ("negative", i_neg)):
    logit = maps[name][-1][0, 0]
    assert abs(1 / (1 + np.exp(-logit)) - probs[i]) < 1e-5        # float64 rebuild = float32 model
    assert maps[name][2].shape == (1, 6, 136, 136) and maps[name][4].shape == (1, 16, 128, 128)

# %%
w_dense = best_model.params["dense.W"][:, 0]
top = np.argsort(-np.abs(w_dense))[:4]                               # the conv2 maps that weigh most
fig, axes = plt.subplots(2, 11, figsize=(20, 4.2))
for row, name in enumerate(("positive", "negative")):
    acts = maps[name]
    axes[row, 0].imshow(acts[0][0, 0], vmin=0, vmax=1)
    axes[row, 0].set_title(f"{name} patch", fontsize=9)
    for f in range(6):
        axes[row, 1 + f].imshow(acts[2][0, f], cmap="magma")
        axes[row, 1 + f].set_title(f"conv1 map {f}", fontsize=9)
    for k, f in enumerate(top):
        axes[row, 7 + k].imshow(acts[4][0, f], cmap="magma")
        axes[row, 7 + k].set_title(f"conv2 map {f} (w={w_dense[f]:+.2f})", fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
plt.show()

# %% [markdown]
# What to look for. The conv1 maps of the spot-like filters light up on the calcifications of the
# positive patch and respond only to the smooth tissue texture on the negative one; a conv1 map
# that is black on both patches belongs to a filter whose response is negative everywhere, so the
# ReLU silences it (a "dead" filter, common with few epochs and only six filters). The conv2 maps
# with positive dense weights are the cluster detectors: on the positive patch they are dark
# except for a few bright points on calcifications, on the negative patch they stay dark, and
# after the global max pool only their brightest point counts. A map with a negative weight
# responds to tissue and pulls the logit down.
#
# ## 7.9 What the network looks at
#
# The gradient of the logit with respect to the patch, $\partial z/\partial x$, tells which pixels would
# change the answer. By notebook 3 it lives only inside the $17\times17$ fields of view of the (at
# most 16) maxima that passed the ReLU -- the network's answer *is* a weighted sum of 16 local
# detector responses, and we can see exactly where each one fired.

# %%
sal = {}
for name, i in (("positive", i_pos), ("negative", i_neg)):
    h = x_te[i:i + 1].astype(np.float64)
    for layer in layers:
        h = layer.forward(h)
    d = np.ones((1, 1))                       # d logit / d logit
    for layer in reversed(layers):
        d = layer.backward(d)                 # conv1 was built with need_dx on: d reaches the patch
    sal[name] = d[0, 0]

def windows(i):
    z = layers[2].forward(layers[1].forward(layers[0].forward(x_te[i:i + 1].astype(np.float64))))[0]
    flat = z.reshape(16, -1)
    return [divmod(int(a), 128) for a, v in zip(flat.argmax(1), flat.max(1)) if v > 0]

# %% check
for name, i in (("positive", i_pos), ("negative", i_neg)):
    inside = np.zeros((144, 144), bool)
    for r, c in windows(i):
        inside[r:r + 17, c:c + 17] = True
    assert not np.any(sal[name][~inside])                 # zero outside the fields of view

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
for k, (name, i) in enumerate((("positive", i_pos), ("negative", i_neg))):
    axes[2 * k].imshow(x_te[i, 0], vmin=0, vmax=1)
    for r, c in windows(i):
        axes[2 * k].add_patch(plt.Rectangle((c - 0.5, r - 0.5), 17, 17, fill=False, ec="tab:orange", lw=0.8))
    axes[2 * k].set_title(f"{name} (p = {probs[i]:.2f}) and the\nfields of view of its maxima", fontsize=9)
    axes[2 * k + 1].imshow(np.abs(sal[name]), cmap="magma")
    axes[2 * k + 1].set_title("|d logit / d pixel|", fontsize=9)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# On the positive patch the fields of view of the maxima pile up on one or a few calcifications,
# and the saliency is a small bright spot there: the whole answer hinges on a handful of pixels of
# a calcification, not on the tissue around it. On the negative patch the few maxima that pass
# the ReLU sit wherever the texture happens to look most spot-like. Notice too the two
# probabilities in the titles: on this pair the network is far surer of the cluster it sees
# than of the absence of one. One pair is not the test set, though: the confusion matrix of 7.6
# counts the errors on each side, and there the missed clusters (false negatives, the faint
# clusters of 7.6) outnumber the false alarms.

# %% [markdown]
# ## Takeaways
#
# * A training step is four lines: forward with dropout, fused loss, backward, Adam.
# * Before a long run, overfit one small batch: if the loss does not go to ~0, something is broken.
# * Keep the epoch with the best validation accuracy, and judge it on patients never seen in
#   training or in that choice; report sensitivity and specificity, not only accuracy.
# * The trained network's answer is a weighted vote of 16 detectors, each looking at a
#   $17 \times 17$ window: the gradient shows exactly which pixels it used.
#
# ## More exercises
#
# 3. Pick the threshold that gives 95% sensitivity on the *validation* split from its ROC curve,
#    and report the specificity it gives on the test split.
# 5. Interrupt a training run (Ctrl-C) and continue it with `--resume`. Check that the history
#    is identical to an uninterrupted run with the same seed.
#
# ### Take-home (runs of many minutes to hours)
#
# 1. Train for the paper's 100 epochs from the shell (`shallowcnn patches` then `shallowcnn train
#    patches.npz -o run`) and compare the curves with the paper's Fig. 5. Does the validation
#    loss rise at the end (overfitting)?
# 2. Rebuild the store with `split_mode="paper"` (notebook 1) and train again. How much higher is
#    the test accuracy, and what does that say about the paper's 99.3%?
# 4. Train two networks with seeds 0 and 1. How different are their test accuracies? How many
#    test patients would you need for the difference to be significant?
#
# Next: [8. Making it fast](08_speed.ipynb).
