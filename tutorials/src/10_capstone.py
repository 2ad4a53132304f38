# %% [markdown]
# # 10. Capstone: a network made of your own pieces
#
# Notebooks 2-6 had you write every piece of the network: the convolution, the sparse backward
# of conv + ReLU + max pool, the dense layer's backward, the fused loss, Adam and dropout. Here
# they become a network, with nothing of the package in between: you check its gradient as a
# whole, make it memorise 16 patches, and train it on phantom patches of women it never saw.
#
# | | |
# |---|---|
# | **You will learn** | to assemble forward and backward passes into a network; to check a whole network's gradient; the three tests every new network should pass (gradient check, overfit one batch, beat chance on unseen data) |
# | **You need** | notebooks [2](02_convolution_forward.ipynb) to [6](06_adam_dropout.ipynb), **with their exercises done**: this notebook reads your functions from them |
# | **Time** | about 60 minutes with the three exercises (10.1 hard, 10.2 medium, 10.3 medium) |
# | **Previous / next** | [9. Scanning](09_scanning.ipynb) / -- |
#
# The network is the paper's with **one** convolution instead of two, so that your NumPy
# functions train it in seconds:
#
# $$x\ (N, 1, 36, 36) \xrightarrow{\text{conv } 8 \times 5 \times 5,\ \text{ReLU, global max}} (N, 8)
#   \xrightarrow{\text{dropout}} \xrightarrow{\text{dense } 8 \to 1} \text{logit}.$$

# %%
import os

import numpy as np
import matplotlib.pyplot as plt

from shallowcnn import grading
from shallowcnn.grading.notebook import student_functions
from shallowcnn.layers import sigmoid

QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"   # the tests set it (the capstone is small anyway)
plt.rcParams.update({"figure.dpi": 80})

# %% [markdown]
# ## 10.1 Your pieces
#
# `student_functions` reads the notebooks 02-06 that sit beside this one (your own, in the
# student set) and builds the functions defined in them, exactly as `shallowcnn grade` does.
# An exercise you have not done yet raises its `NotImplementedError` as soon as it is used.

# %%
mine = student_functions(os.environ.get("SHALLOWCNN_NOTEBOOK_DIR", "."))
conv2d_shifts = mine["conv2d_shifts"]                                          # 2.2
conv_relu_maxpool_backward_sparse = mine["conv_relu_maxpool_backward_sparse"]  # 3.5
dense_backward, bce_with_logits = mine["dense_backward"], mine["bce_with_logits"]   # 4.1, 4.2
num_grad, my_rel_error = mine["num_grad"], mine["my_rel_error"]               # 5.2, 5.1
adam_step, inverted_dropout = mine["adam_step"], mine["inverted_dropout"]     # 6.1, 6.2
print(sorted(mine))

# %% check
assert all(callable(f) for f in (conv2d_shifts, conv_relu_maxpool_backward_sparse, dense_backward,
                                 bce_with_logits, num_grad, my_rel_error, adam_step, inverted_dropout))

# %% [markdown]
# ## 10.2 Forward and backward of the whole network
#
# The parameters are a dict, `{"W1": (F, 1, K, K), "b1": (F,), "Wd": (F, 1), "bd": (1,)}`
# (`grading.capstone.init_params` makes Glorot-uniform ones). Forward: the convolution,
# then per map its largest value and where it is (`argmax` of the flattened map, as in 3.5),
# the ReLU of that maximum (ReLU then max is max then ReLU), dropout, the dense layer, the loss.
# Backward: the same pieces in reverse order, each handing its gradient to the one before it.
#
# Dropout draws its mask once: `mask = inverted_dropout(np.ones_like(pooled), p_drop, rng)`
# (all ones when `p_drop` is 0); the features are `pooled * mask`, and the gradient that reaches
# `pooled` is the features' gradient times the same mask.
#
# **Exercise 10.1** (hard, 25 min) -- the loss and the gradients of every parameter, with your
# functions of notebooks 2-6.

# %%
def network_loss_and_grads(params, x, y, p_drop=0.0, rng=None):
    """x (N, 1, S, S), y (N,) -> (mean loss, {"W1", "b1", "Wd", "bd": gradients shaped like params})."""
    # BEGIN SOLUTION 10.1 | hard | 25 min | conv2d_shifts, then per map the max and its flat argmax, the ReLU, the dropout mask, the dense layer and bce_with_logits; back through dense_backward (dz as an (N, 1) column) and conv_relu_maxpool_backward_sparse
    z = conv2d_shifts(x, params["W1"], params["b1"])               # (N, F, Ho, Wo)
    flat = z.reshape(len(x), z.shape[1], -1)
    argmax = flat.argmax(axis=2)
    pooled = np.maximum(flat.max(axis=2), 0.0)                       # (N, F)
    mask = np.ones_like(pooled) if p_drop == 0 else inverted_dropout(np.ones_like(pooled), p_drop, rng)
    h = pooled * mask
    logits = (h @ params["Wd"] + params["bd"])[:, 0]
    loss, dz = bce_with_logits(logits, y)
    dh, dWd, dbd = dense_backward(dz[:, None], h, params["Wd"])
    _, dW1, db1 = conv_relu_maxpool_backward_sparse(dh * mask, x, params["W1"], argmax, pooled)
    return loss, {"W1": dW1, "b1": db1, "Wd": dWd, "bd": dbd}
    # END SOLUTION

# %% [markdown]
# The gradient check of the whole network, with your own `num_grad` and `my_rel_error` of
# notebook 5, in float64, on six small random patches:

# %%
rng = np.random.default_rng(0)
x_small, y_small = rng.random((6, 1, 12, 12)), np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
p_small = grading.capstone.init_params(filters=4, kernel=3, seed=1)
loss_small, g_small = network_loss_and_grads(p_small, x_small, y_small)
errors = {k: my_rel_error(g_small[k], num_grad(lambda: network_loss_and_grads(p_small, x_small, y_small)[0], w))
          for k, w in p_small.items()}
print(f"loss {loss_small:.6f}", {k: f"{e:.1e}" for k, e in errors.items()})

# %% check
assert max(errors.values()) < 1e-6
grading.check_network_gradients(network_loss_and_grads, "10.1")

# %% [markdown]
# ## 10.3 Training with your Adam: first, memorise 16 patches
#
# **Exercise 10.2** (medium, 15 min) -- the training loop. Every epoch, a new permutation of
# the patches (`rng.permutation`), cut into batches of `batch_size`; for each batch, the loss
# and gradients (with dropout, drawing from `rng`), then one `adam_step` per parameter, in place,
# with its own moments `m[k]`, `v[k]` (zeros at the start) and the step count `t` from 1; use
# the package's constants $\beta_1 = 0.9$, $\beta_2 = 0.999$, $\epsilon = 10^{-7}$. Return the
# list of batch losses.

# %%
def train_network(params, x, y, epochs, lr=1e-2, batch_size=32, p_drop=0.2, seed=0):
    """Train params in place with Adam; -> the loss of every batch, in order."""
    rng = np.random.default_rng(seed)
    # BEGIN SOLUTION 10.2 | medium | 15 min | one dict of zero moments m and v per parameter, t += 1 before every step, adam_step(params[k], grads[k], m[k], v[k], t, lr, 0.9, 0.999, 1e-7) for every k
    m = {k: np.zeros_like(w) for k, w in params.items()}
    v = {k: np.zeros_like(w) for k, w in params.items()}
    t, losses = 0, []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            loss, grads = network_loss_and_grads(params, x[batch], y[batch], p_drop, rng)
            t += 1
            for k in params:
                adam_step(params[k], grads[k], m[k], v[k], t, lr, 0.9, 0.999, 1e-7)
            losses.append(loss)
    return losses
    # END SOLUTION

# %% [markdown]
# A network that cannot memorise one small batch has a broken step. The check gives it 16
# small patches (half with three bright dots), dropout off, 150 steps: the loss must fall
# below 0.05.

# %% check
grading.check_network_overfits(train_network, "10.2")

# %% [markdown]
# ## 10.4 Phantom patches of unseen women
#
# `grading.phantom_patches()` writes a phantom of four women, cuts their 144 x 144 patches
# split by patient (two women to train on, two to test on) and shrinks each 4 x 4 block to its
# brightest pixel less its mean: a calcification stays a bright pixel, the smooth tissue
# fades. That makes the task small enough for one convolution of 8 filters.
#
# **Exercise 10.3** (medium, 10 min) -- `predict`: the forward pass without dropout, then the
# sigmoid. The check compares it with the oracle, then trains a fresh network with **your**
# `train_network` for 8 epochs (learning rate 0.01, batches of 32, dropout 0.2) and needs an
# accuracy of at least 0.75 on the test women's patches.

# %%
def predict(params, x):
    """x (N, 1, S, S) -> probabilities (N,)."""
    # BEGIN SOLUTION 10.3 | medium | 10 min | conv2d_shifts, the ReLU of each map's maximum, the dense layer, then sigmoid
    z = conv2d_shifts(x, params["W1"], params["b1"])
    pooled = np.maximum(z.reshape(len(x), z.shape[1], -1).max(axis=2), 0.0)
    return sigmoid((pooled @ params["Wd"] + params["bd"])[:, 0])
    # END SOLUTION

# %%
data = grading.phantom_patches()
x_tr, y_tr, x_te, y_te = data
print("train", x_tr.shape, int(y_tr.sum()), "positives | test", x_te.shape, int(y_te.sum()), "positives")

# %% check
accuracy = grading.check_phantom_accuracy(train_network, predict, "10.3", data=data)
print(f"accuracy on the test women's patches: {accuracy:.3f} (needed {grading.ACCURACY_TARGET})")

# %% [markdown]
# The same training once more, to look at it: the batch losses, and the probabilities of the
# test patches of each class.

# %%
params = grading.capstone.init_params(seed=0)
losses = train_network(params, x_tr, y_tr, epochs=grading.capstone.TRAIN_EPOCHS, lr=grading.capstone.TRAIN_LR,
                       batch_size=grading.capstone.BATCH, p_drop=0.2, seed=0)
p_te = predict(params, x_te)
fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3.6))
a1.plot(losses, lw=0.8)
a1.set(xlabel="batch", ylabel="loss", title=f"training with your Adam ({len(losses)} steps)")
a2.hist([p_te[y_te == 0], p_te[y_te == 1]], bins=20, label=["no cluster", "cluster"])
a2.set(xlabel="predicted probability", title=f"test patches: accuracy {np.mean((p_te > 0.5) == (y_te > 0.5)):.3f}")
a2.legend()
plt.show()

# %% check
assert abs(np.mean((p_te > 0.5) == (y_te > 0.5)) - accuracy) < 1e-12     # the same run as the check's

# %% [markdown]
# ## Takeaways
#
# * A network is its pieces in order; its backward pass is the same pieces in reverse, each
#   handing its gradient to the one before it.
# * Three tests tell a working network from a broken one: the gradient check of the whole,
#   memorising one small batch, and beating chance on data from people it never saw.
# * The package's `ShallowCNN` is this network with a second convolution, Numba kernels and
#   float32; notebook 7 trains it.
#
# ## More exercises
#
# 1. Add the second convolution (6 then 8 filters): you need the dense backward of a
#    convolution for the first layer (3.1 and 3.2, or a vectorised version of them). Does the
#    accuracy improve within the same number of epochs?
# 2. Train without dropout, and with `p_drop = 0.5`. What happens to the training loss and to
#    the test accuracy?
# 3. Replace the 4 x 4 "brightest less mean" shrinking by a plain mean. Why does the network
#    now fail, and what does that say about the tissue's brightness?
#
# ### Take-home
#
# 4. Train on a phantom of 20 women (`grading.phantom_patches(cases=20)`) for 30 epochs and
#    plot the ROC curve of the test patches (`shallowcnn.metrics.roc_curve`).
