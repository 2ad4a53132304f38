# %% [markdown]
# # 6. Adam and dropout, step by step
#
# The paper trains with Adam (learning rate 0.001; for the rest we take Keras' defaults -- our
# reading, since the paper lists no other setting but was written in TensorFlow 2) and regularises with dropout that keeps 80%. The paper does not say
# where the dropout sits; our reading, which the package follows, is on the 16 pooled features
# just before the dense layer. Both are a few lines of code, and both are easy to get subtly
# wrong: a widely copied NumPy CNN re-created Adam's moments every batch and skipped the bias
# correction, and nothing caught it. Here each is computed by hand, number by number, and the
# package is checked against the hand computation.
#
# | | |
# |---|---|
# | **You will learn** | Adam's update and its bias correction, the classic Adam bugs, inverted dropout and its statistics, and what one training step does |
# | **You need** | running averages; [notebook 4](04_dense_sigmoid_bce.ipynb) (the loss's gradient) |
# | **Time** | about 60 minutes with the two exercises (6.1 medium, 6.2 easy) |
# | **Previous / next** | [5. Gradient checking](05_gradient_checking.ipynb) / [7. Training](07_training.ipynb) |

# %%
import os
import warnings

import numpy as np
import matplotlib.pyplot as plt

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm in a notebook without ipywidgets
from shallowcnn import grading
from shallowcnn.losses import BinaryCrossEntropyWithLogits     # notebook 4's loss (the package's)
from shallowcnn.model import ShallowCNN

QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"   # the tests set it: smaller samples
plt.rcParams.update({"figure.dpi": 80})
rng = np.random.default_rng(0)

# %% [markdown]
# ## 6.1 Adam
#
# For each parameter $w$ with gradient $g_t$ at step $t = 1, 2, \dots$ (Kingma and Ba, 2015):
#
# $$m_t = \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2, \qquad m_0 = v_0 = 0,$$
#
# running means of the gradient and of its square. Started at zero they are biased towards
# zero early on, by exactly the factors $1 - \beta_1^t$ and $1 - \beta_2^t$; dividing them out and taking
# a step gives
#
# $$w_t = w_{t-1} - \eta_t\,\frac{m_t}{\sqrt{v_t} + \epsilon}, \qquad \eta_t = \eta\,\frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}.$$
#
# (This is Keras' arrangement, with the correction folded into the learning rate; Kingma and
# Ba's $\hat m_t/(\sqrt{\hat v_t} + \epsilon)$ differs only in where $\epsilon$ sits.) Keras' defaults: $\eta = 0.001$,
# $\beta_1 = 0.9$, $\beta_2 = 0.999$, $\epsilon = 10^{-7}$.
#
# **By hand**, one weight $w_0 = 1$ with gradients $g_1 = 0.5$, $g_2 = -0.2$:
#
# | | $m$ | $v$ | $\eta_t$ | step | $w$ |
# |---|---|---|---|---|---|
# | $t=1$ | $0.05$ | $2.5\times10^{-4}$ | $10^{-3}\,\frac{\sqrt{0.001}}{0.1} = 3.16228\times10^{-4}$ | $\eta_1 \frac{0.05}{0.0158114 + 10^{-7}} = 9.99994\times10^{-4}$ | $0.99900001$ |
# | $t=2$ | $0.045 - 0.02 = 0.025$ | $2.4975\times10^{-4} + 4\times10^{-5} = 2.8975\times10^{-4}$ | $10^{-3}\,\frac{\sqrt{0.001999}}{0.19} = 2.35317\times10^{-4}$ | $\eta_2 \frac{0.025}{0.0170220 + 10^{-7}} = 3.45604\times10^{-4}$ | $0.99865440$ |
#
# Note the first step: $m_1/\sqrt{v_1} = (1-\beta_1)g/(\sqrt{1-\beta_2}\,|g|)$, and the correction turns it into
# exactly $\eta\,\mathrm{sign}(g)$ (up to $\epsilon$). Adam's steps are *typically* about $\eta$ in size whatever the
# scale of the gradient -- but not at most $\eta$: a large gradient after a run of small ones makes
# $m_t/\sqrt{v_t}$ as large as $(1-\beta_1)/\sqrt{1-\beta_2} = 3.16$, so a step can reach about $3.2\,\eta$
# (Kingma and Ba, section 2.1).
#
# **Exercise 6.1** (medium, 20 min) -- one Adam step, in place. Update the moment arrays `m` and
# `v` and the weights `w` *in place* (the caller keeps them between steps), for step number
# $t = 1, 2, \dots$, in Keras' form above.

# %%
def adam_step(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
    """Update w, m, v (arrays of one shape) in place with gradient g at step t >= 1."""
    # BEGIN SOLUTION 6.1 | medium | 20 min | first the two moments (in place), then the bias-corrected learning rate, then the step on w (in place)
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    w -= lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t) * m / (np.sqrt(v) + eps)
    # END SOLUTION

# %% check
grading.check_adam_step(adam_step, "6.1")
w_mine, m_mine, v_mine = np.array([1.0]), np.zeros(1), np.zeros(1)
for t, g in enumerate((0.5, -0.2), start=1):
    adam_step(w_mine, np.array([g]), m_mine, v_mine, t)
assert abs(w_mine[0] - 0.99865440) < 1e-8                 # the table above

# %% [markdown]
# Your `adam_step` keeps nothing itself: the caller owns the moments `m`, `v` and counts the
# steps, as the package's `Adam` object does for every parameter. Two steps, with the moments
# printed after each:

# %%
w, m, v = np.array([1.0]), np.zeros(1), np.zeros(1)
trace = []
for t, g in enumerate((0.5, -0.2), start=1):
    adam_step(w, np.array([g]), m, v, t)
    trace.append((m[0], v[0], w[0]))
print(np.array(trace))

# %% check
(m1, v1, w1), (m2, v2, w2) = trace
assert abs(m1 - 0.05) < 1e-15 and abs(v1 - 2.5e-4) < 1e-15 and abs(w1 - 0.99900001) < 1e-8
assert abs(m2 - 0.025) < 1e-15 and abs(v2 - 2.8975e-4) < 1e-15 and abs(w2 - 0.99865440) < 1e-8

# %% [markdown]
# ### The two classic bugs
#
# 1. **Moments re-created every batch** (an `Adam()` built inside the training loop, or
#    `m = zeros` at the top of `step`). Every step is then a first step: with the bias
#    correction it is $\eta\,\mathrm{sign}(g)$ -- sign descent, no memory, no averaging of noisy
#    gradients.
# 2. **No bias correction** as well: the first-step ratio is
#    $\frac{(1-\beta_1) g}{\sqrt{1-\beta_2}\,|g|} = \frac{0.1}{0.0316}\,\mathrm{sign}(g) = 3.162\,\mathrm{sign}(g)$, so every step is
#    $3.16\,\eta$ in the direction of the gradient's sign, forever.
#
# Both still "train". On $f(w) = \frac12 (w - 3)^2$ from $w = 0$ with $\eta = 0.05$, for 300 steps:

# %%
def run(variant, steps=300, lr=0.05):
    w, m, v = np.array([0.0]), np.zeros(1), np.zeros(1)
    path = [0.0]
    for t in range(1, steps + 1):
        g = w - 3.0
        if variant == "correct":
            adam_step(w, g, m, v, t, lr)                                # your Adam, moments kept
        elif variant == "re-created moments":
            adam_step(w, g, np.zeros(1), np.zeros(1), 1, lr)            # every step a first step
        else:                                                           # and no bias correction
            w -= lr * (0.1 * g) / (np.sqrt(0.001 * g ** 2) + 1e-7)
        path.append(w[0])
    return np.array(path)

paths = {v: run(v) for v in ("correct", "re-created moments", "re-created, no bias correction")}
print({k: np.round(p[[1, 2, 10, 300]], 4) for k, p in paths.items()})

# %% check
steps = {k: np.diff(p) for k, p in paths.items()}
assert np.allclose(steps["re-created moments"][:50], 0.05, rtol=1e-4)             # eta * sign(g)
assert np.allclose(steps["re-created, no bias correction"][:15], 0.05 * 0.1 / np.sqrt(0.001), rtol=1e-4)
assert abs(paths["correct"][-1] - 3) < 0.05                                            # and the real one converges

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
for k, p in paths.items():
    ax.plot(p, label=k)
ax.axhline(3, color="gray", ls=":")
ax.set(xlabel="step", ylabel="w", title="Adam on (w - 3)^2 / 2, and two buggy Adams")
ax.legend()
plt.show()

# %% [markdown]
# The buggy versions never settle: a step of fixed size cannot shrink as $w$ approaches the
# minimum, so they rattle around it (the broken one by up to $\pm 0.16$), while the real Adam's
# running means let the steps die down. In the package the moments live in the `Adam` object
# for the whole of training, and `state_dict()` saves them in checkpoints.
#
# ### Adam on a badly scaled problem
#
# Adam divides each coordinate by its own $\sqrt{v}$, so it takes similar steps along a steep and a
# shallow direction, where plain gradient descent must pick a learning rate small enough for
# the steepest one. On $f(x, y) = \tfrac12(x^2 + 50\,y^2)$:

# %%
def descend(kind, steps=150, start=(-4.0, 1.5)):
    xy, m, v = np.array(start), np.zeros(2), np.zeros(2)
    scale = np.array([1.0, 50.0])
    path = [xy.copy()]
    for t in range(1, steps + 1):
        g = scale * xy
        if kind == "Adam":
            adam_step(xy, g, m, v, t, 0.1)      # your Adam
        else:
            xy -= 0.038 * g                     # just below 2/50, the largest stable rate
        path.append(xy.copy())
    return np.array(path)

trajs = {k: descend(k) for k in ("gradient descent", "Adam")}
X, Y = np.meshgrid(np.linspace(-4.5, 1, 200), np.linspace(-2, 2, 200))
fig, ax = plt.subplots(figsize=(7, 4))
ax.contour(X, Y, 0.5 * (X ** 2 + 50 * Y ** 2), levels=np.geomspace(0.05, 120, 14), colors="lightgray")
for k, t in trajs.items():
    ax.plot(t[:, 0], t[:, 1], ".-", ms=3, label=f"{k}: f = {0.5 * (t[-1, 0] ** 2 + 50 * t[-1, 1] ** 2):.1e} after 150 steps")
ax.legend(loc="lower left")
ax.set_title("f(x, y) = (x^2 + 50 y^2) / 2")
plt.show()

# %% [markdown]
# ## 6.2 Dropout
#
# During training, each of the 16 pooled features is kept with probability $1 - p_\text{drop} = 0.8$
# and zeroed otherwise; the network cannot lean on any single feature. The package uses
# *inverted* dropout, which scales the survivors up during training:
#
# $$\mathrm{out} = x \odot \frac{\mathrm{mask}}{1 - p_\text{drop}}, \qquad \mathrm{mask}_k \sim \mathrm{Bernoulli}(1 - p_\text{drop}),
#   \qquad \mathbb{E}[\mathrm{out}] = x,$$
#
# so that at inference dropout is simply switched off -- no rescaling of the weights. The
# backward pass multiplies by the same mask and scale: $\partial L/\partial x = g \odot \mathrm{mask}/(1-p_\text{drop})$.
#
# **By hand:** with $p_\text{drop} = 0.2$ every output is either $0$ or $x/0.8 = 1.25\,x$. The layer draws
# $u \sim U(0,1)$ from its generator and keeps the units with $u < 0.8$; drawing the same numbers from
# the same seed, we can predict its output exactly.
#
# **Exercise 6.2** (easy, 10 min) -- inverted dropout's forward pass. Draw `u = rng.random(x.shape)`
# (exactly once, so that the check can draw the same numbers), keep the units with
# $u < 1 - p_\text{drop}$, and scale the survivors.

# %%
def inverted_dropout(x, p_drop, rng):
    """x any shape, p_drop in [0, 1), rng a numpy Generator -> out of x's shape."""
    # BEGIN SOLUTION 6.2 | easy | 10 min | draw u once with rng.random(x.shape); the survivors are the units with u < 1 - p_drop, scaled so that the mean stays x
    keep = rng.random(x.shape) < 1 - p_drop
    return np.where(keep, x / (1 - p_drop), 0.0)
    # END SOLUTION

# %% check
grading.check_dropout(inverted_dropout, "6.2")

# %% [markdown]
# The mask depends only on the generator's draws, so the same seed gives the same mask: the
# backward pass, the upstream gradient times the same mask and scale, is your function applied
# to $g$ with the generator in the same state.

# %%
x = rng.standard_normal((4, 16))
out = inverted_dropout(x, 0.2, np.random.default_rng(42))
mask = np.random.default_rng(42).random((4, 16)) < 0.8          # by hand: the same draws
g = rng.standard_normal((4, 16))
print(out[0, :6].round(3), "\n", (x[0, :6] * mask[0, :6] * 1.25).round(3))

# %% check
assert np.array_equal(out, np.where(mask, x / 0.8, 0.0))          # 1.25 x, as x / (1 - p_drop) rounds
assert np.array_equal(inverted_dropout(g, 0.2, np.random.default_rng(42)), np.where(mask, g / 0.8, 0.0))

# %% [markdown]
# And the statistics. Over $n$ units of value 1, the dropped fraction should be $0.2 \pm \sqrt{0.2\cdot0.8/n}$,
# and the mean output $1 \pm 0.5/\sqrt n$ (each output is $0$ or $1.25$, whose variance is
# $1.25^2 \cdot 0.8 - 1 = 0.25$). We accept 5 standard deviations.

# %%
n = 200_000 if QUICK else 2_000_000
ones = np.ones(n)
o = inverted_dropout(ones, 0.2, np.random.default_rng(1))
frac_dropped, mean_out = np.mean(o == 0), o.mean()
print(frac_dropped, mean_out, sorted(set(np.unique(o))))

# %% check
assert abs(frac_dropped - 0.2) < 5 * np.sqrt(0.16 / n)
assert abs(mean_out - 1.0) < 5 * 0.5 / np.sqrt(n)
assert set(np.unique(o)) == {0.0, 1.25}

# %% [markdown]
# ## 6.3 One training step, with our own Adam
#
# `shallowcnn.train.train_step` is the heart of training:
#
# ```python
# logits = model.forward(xb, training=True)     # dropout on
# loss   = bce.forward(logits, yb)              # sigmoid fused into the loss (notebook 4)
# model.backward(bce.backward())                # fills model.grads (notebook 3)
# adam.step(model.grads)                        # updates model.params in place
# ```
#
# We repeat it for three steps on a small float64 model: the forward and backward passes are
# the package's (`hand.forward`, `hand.backward`, checked in notebooks 3-5), the update is
# `adam_step` from Exercise 6.1 with our own moment arrays. The check is Adam's signature: the
# first step moves every weight by $\eta$ against the sign of its gradient (up to $\epsilon$).

# %%
xb = rng.random((6, 1, 24, 24))
yb = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
hand = ShallowCNN(dtype=np.float64, seed=5, channels=(3, 4), kernel_size=5)
m = {k: np.zeros_like(p) for k, p in hand.params.items()}
v = {k: np.zeros_like(p) for k, p in hand.params.items()}
bce = BinaryCrossEntropyWithLogits()
for t in (1, 2, 3):
    before = {k: p.copy() for k, p in hand.params.items()}
    loss = bce.forward(hand.forward(xb, training=True), yb)
    hand.backward(bce.backward())
    if t == 1:
        first_grads = {k: g.copy() for k, g in hand.grads.items()}
    for k, p in hand.params.items():
        adam_step(p, hand.grads[k], m[k], v[k], t)          # Exercise 6.1, in place
    if t == 1:
        first_moves = {k: hand.params[k] - before[k] for k in hand.params}
    print(f"step {t}: loss {loss:.10f}")

# %% check
# step 1 is lr * sqrt(1 - beta2) |g| / (sqrt(1 - beta2) |g| + eps) = lr (1 - 3e-4) or closer where |g| > 0.01
for k, g in first_grads.items():
    big = np.abs(g) > 1e-2
    assert np.allclose(first_moves[k][big], -1e-3 * np.sign(g[big]), rtol=1e-3), k
assert sum(int((np.abs(g) > 1e-2).sum()) for g in first_grads.values()) > 10
assert not np.allclose(hand.params["conv1.W"], ShallowCNN(dtype=np.float64, seed=5, channels=(3, 4),
                                                          kernel_size=5).params["conv1.W"])   # it did move

# %% [markdown]
# ## Takeaways
#
# * Adam keeps running means of $g$ and $g^2$ for the whole training; the bias correction
#   $\sqrt{1-\beta_2^t}/(1-\beta_1^t)$ makes the early steps the right size.
# * Its steps are typically about $\eta$ whatever the gradient's scale, and at most about $3.2\,\eta$.
# * Re-creating the moments or skipping the bias correction still "trains" -- which is why the
#   check against a hand computation matters.
# * Inverted dropout scales the survivors by $1/(1-p_\text{drop})$ in training, so inference is
#   the identity.
#
# ## More exercises
#
# 1. Show that the bias correction is exact for a constant gradient: if $g_t = g$ for all $t$, then
#    $m_t/(1 - \beta_1^t) = g$ and $v_t/(1-\beta_2^t) = g^2$.
# 2. Write Kingma and Ba's form $w \leftarrow w - \eta\,\hat m_t/(\sqrt{\hat v_t} + \epsilon)$ and compare it with the package's
#    Keras form over 1,000 steps on the quadratic of 6.1. How large does $\epsilon$ have to be before
#    the two differ visibly?
# 3. Why does Adam's effective step barely depend on the scale of the loss? Multiply the loss
#    (and so every gradient) by 1,000 and rerun the two-step example.
# 4. "Standard" (non-inverted) dropout keeps the survivors as they are in training and multiplies
#    by $1 - p_\text{drop}$ at inference. Show the two are equivalent in expectation, and explain why
#    inverted dropout is the more convenient one for `predict_proba` and for scanning a whole
#    mammogram (notebook 9).
# 5. Dropout after a *global max pool* zeroes a whole feature map's vote. With $p_\text{drop} = 0.2$ and
#    16 features, what is the probability that a training step sees all 16? At least 14?
#
# Next: [7. Training the paper's network](07_training.ipynb).
