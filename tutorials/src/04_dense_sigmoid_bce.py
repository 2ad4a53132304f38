# %% [markdown]
# # 4. Dense, sigmoid and binary cross-entropy
#
# After the global max pool each patch is 16 numbers. The paper's head turns them into one
# probability: a dense layer $16 \to 1$ (17 parameters) gives a *logit* $z$, the sigmoid turns
# it into $p = \sigma(z)$, and binary cross-entropy scores $p$ against the label
# $y \in \{0, 1\}$. This notebook writes each piece with its backward pass, checks the package
# against worked numbers, and shows why the package fuses the sigmoid into the loss: the
# textbook formula breaks, in float32, on exactly the patches the network gets most wrong.
#
# | | |
# |---|---|
# | **You will learn** | the dense layer's three gradients; the sigmoid and binary cross-entropy; why fusing them gives the gradient "prediction minus label" and stays finite in float32 |
# | **You need** | matrix products and their shapes; logarithms and exponentials; [notebook 3](03_backward.ipynb) (upstream gradients) |
# | **Time** | about 60 minutes with the two exercises (4.1 easy, 4.2 medium) |
# | **Previous / next** | [3. Backward](03_backward.ipynb) / [5. Gradient checking](05_gradient_checking.ipynb) |

# %%
import os

import numpy as np
import matplotlib.pyplot as plt

from shallowcnn import grading
from shallowcnn.layers import Sigmoid, sigmoid
from shallowcnn.model import ShallowCNN

QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"   # the tests set it (nothing to shrink here)
plt.rcParams.update({"figure.dpi": 80})
rng = np.random.default_rng(0)

# %% [markdown]
# ## 4.1 The dense layer
#
# For a batch $X \in \mathbb{R}^{N \times D}$, $\;\mathrm{out} = XW + b$ with $W \in \mathbb{R}^{D\times M}$
# (Keras' layout; PyTorch stores $W^\top$). With upstream gradient $G = \partial L/\partial\,\mathrm{out}$
# $(N \times M)$, the chain rule on $\mathrm{out}_{nm} = \sum_d X_{nd} W_{dm} + b_m$ gives
#
# $$\frac{\partial L}{\partial W} = X^\top G, \qquad \frac{\partial L}{\partial b} = \sum_n G_{n,:}, \qquad
#   \frac{\partial L}{\partial X} = G\, W^\top.$$
#
# (The shapes alone nearly force these: $D\times M$ from $X^\top G$, $N \times D$ from $GW^\top$.)
#
# **Worked:** $X = \begin{pmatrix}1 & 2\\ 3 & -1\end{pmatrix}$, $W = \begin{pmatrix}3\\4\end{pmatrix}$,
# $b = 0.5$ give $\mathrm{out} = (11.5,\ 5.5)^\top$. With $G = (1, 2)^\top$:
# $\partial L/\partial W = (1\cdot1 + 3\cdot2,\; 2\cdot1 - 1\cdot 2)^\top = (7, 0)^\top$,
# $\partial L/\partial b = 3$, $\partial L/\partial X = \begin{pmatrix}3 & 4\\6 & 8\end{pmatrix}$.
#
# **Exercise 4.1** (easy, 10 min) -- the dense layer's backward pass.

# %%
def dense_backward(G, X, W):
    """G (N, M) upstream gradient, X (N, D) input, W (D, M) -> dX (N, D), dW (D, M), db (M,)."""
    # BEGIN SOLUTION 4.1 | easy | 10 min | let the shapes guide you: dX must be (N, D), dW (D, M) and db (M,)
    return G @ W.T, X.T @ G, G.sum(axis=0)
    # END SOLUTION

# %% check
grading.check_dense_backward(dense_backward, "4.1")
dX_mine, dW_mine, db_mine = dense_backward(np.array([[1.0], [2.0]]), np.array([[1.0, 2.0], [3.0, -1.0]]),
                                           np.array([[3.0], [4.0]]))
assert np.array_equal(dW_mine.ravel(), [7, 0]) and db_mine[0] == 3 and np.array_equal(dX_mine, [[3, 4], [6, 8]])

# %% [markdown]
# ## 4.2 The sigmoid
#
# $\sigma(z) = 1/(1 + e^{-z})$ maps a logit to $(0, 1)$; $\sigma(0) = \tfrac12$, so logit 0 is the
# paper's decision threshold $p = 0.5$. Its derivative is
#
# $$\sigma'(z) = \frac{e^{-z}}{(1+e^{-z})^2} = \sigma(z)\,\bigl(1 - \sigma(z)\bigr),$$
#
# so the backward pass needs only the forward output. **Worked:** $\sigma(\ln 3) = 1/(1 + 1/3) = 0.75$
# and $\sigma'(\ln 3) = 0.75 \cdot 0.25 = 0.1875$; $\sigma'(0) = 0.25$ is the largest slope it has.

# %%
sig = Sigmoid()
p = sig.forward(np.array([0.0, np.log(3.0)]))
dp = sig.backward(np.ones(2))
print(p, dp)

# %% check
assert np.allclose(p, [0.5, 0.75], rtol=1e-15) and np.allclose(dp, [0.25, 0.1875], rtol=1e-15)

# %% [markdown]
# Written as `1 / (1 + np.exp(-z))`, the sigmoid overflows for very negative $z$: $e^{-z}$ exceeds
# float32's $3.4\times10^{38}$ once $z < -88.7$. The answer ($1/\infty = 0$) happens to be right, but
# with a floating-point overflow on the way. The package computes $e^{-|z|} \le 1$ instead and uses
# $\sigma(z) = e^{z}/(1 + e^{z})$ for $z < 0$: no overflow for any input.

# %%
z_big = np.array([-100.0, 100.0], dtype=np.float32)
with np.errstate(over="raise"):
    try:
        1 / (1 + np.exp(-z_big))
        naive_overflowed = False
    except FloatingPointError:
        naive_overflowed = True
    safe = sigmoid(z_big)                              # raises nothing
print(naive_overflowed, safe)

# %% check
assert naive_overflowed and np.array_equal(safe, np.array([np.exp(np.float32(-100)), 1.0], np.float32))

# %% [markdown]
# ## 4.3 Binary cross-entropy
#
# The negative log-likelihood of a Bernoulli label, averaged over the batch (the paper's Eq. 5):
#
# $$L = -\frac1N \sum_{n} \Bigl[y_n \log p_n + (1 - y_n) \log(1 - p_n)\Bigr], \qquad
#   \frac{\partial L}{\partial p_n} = \frac1N\Bigl(-\frac{y_n}{p_n} + \frac{1-y_n}{1-p_n}\Bigr).$$
#
# **Worked:** $p = (0.8, 0.2, 0.5)$, $y = (1, 0, 1)$:
# $L = \tfrac13(-\ln 0.8 - \ln 0.8 - \ln 0.5) = \tfrac13(0.223144 + 0.223144 + 0.693147) = 0.379811$,
# and $\partial L/\partial p = \tfrac13(-1.25,\ 1.25,\ -2) = (-0.416667,\ 0.416667,\ -0.666667)$.

# %%
def textbook_bce(p, y):
    """p (N,) probabilities, y (N,) labels -> (the mean loss above, dL/dp (N,))."""
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return loss, (-y / p + (1 - y) / (1 - p)) / len(p)

loss, grad = textbook_bce(np.array([0.8, 0.2, 0.5]), np.array([1.0, 0.0, 1.0]))
print(loss, grad)

# %% check
assert abs(loss - 0.379811) < 1e-6
assert np.allclose(grad, [-1.25 / 3, 1.25 / 3, -2 / 3], rtol=1e-12)

# %% [markdown]
# ## 4.4 Fusing the sigmoid into the loss
#
# With $p = \sigma(z)$ use $\log\sigma(z) = -\log(1 + e^{-z})$ and $\log(1 - \sigma(z)) = -z - \log(1 + e^{-z})$:
#
# $$\ell(z, y) = -y\log\sigma(z) - (1-y)\log(1-\sigma(z)) = (1 - y)\,z + \log(1 + e^{-z}).$$
#
# For $z < 0$, $e^{-z}$ can overflow; rewrite $\log(1 + e^{-z}) = -z + \log(1 + e^{z})$ there, and
# both cases become one formula with an exponent that is never positive:
#
# $$\ell(z, y) = \max(z, 0) - z\,y + \log\!\bigl(1 + e^{-|z|}\bigr).$$
#
# Its derivative is strikingly simple:
# $\partial\ell/\partial z = (1 - y) - \frac{e^{-z}}{1+e^{-z}} = (1-y) - (1 - \sigma(z)) = \sigma(z) - y$:
# **prediction minus label**. `BinaryCrossEntropyWithLogits` returns $(\sigma(z) - y)/N$, and
# that is all that flows back into the network.
#
# **Exercise 4.2** (medium, 15 min) -- the fused loss and its gradient. Return the mean of
# $\ell(z_n, y_n)$ in the stable form above and its gradient with respect to $z$. The check
# includes logits of $\pm 800$: nothing may overflow.

# %%
def bce_with_logits(z, y):
    """z (N,) logits, y (N,) labels in {0, 1} -> (mean loss: float, dL/dz (N,))."""
    # BEGIN SOLUTION 4.2 | medium | 15 min | the loss in the stable form derived above, averaged; the gradient is prediction minus label, over N
    loss = float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))
    return loss, (sigmoid(z) - y) / len(z)
    # END SOLUTION

# %% check
grading.check_bce_with_logits(bce_with_logits, "4.2")

# %% [markdown]
# For moderate logits the fused and the textbook routes must agree, both in the loss and in the
# gradient (`Sigmoid.backward` after the textbook gradient $\partial L/\partial p$ is the chain rule
# $\frac{\partial L}{\partial p}\,\sigma(1-\sigma)$, and $\bigl(-\frac yp + \frac{1-y}{1-p}\bigr)p(1-p) = p - y$).

# %%
z = np.array([-2.0, 0.3, 4.0])
y = np.array([0.0, 1.0, 1.0])
L_fused, g_fused = bce_with_logits(z, y)                     # yours, Exercise 4.2
sig = Sigmoid()
L_text, dL_dp = textbook_bce(sig.forward(z), y)
g_text = sig.backward(dL_dp)
print(L_fused, L_text, g_fused, g_text)

# %% check
assert abs(L_fused - L_text) < 1e-12
assert np.allclose(g_fused, (1 / (1 + np.exp(-z)) - y) / 3, rtol=1e-12)
assert np.allclose(g_fused, g_text, rtol=1e-10)

# %% [markdown]
# ## 4.5 Why the fused loss is stable
#
# Now a patch the network gets badly wrong, in float32 as in training. A cluster ($y = 1$) with
# logit $z = -110$: the right loss is $-\log\sigma(-110) = 110 + \log(1 + e^{-110}) = 110.0$, and the
# right gradient is $\sigma(z) - y \approx -1$, a strong push.
#
# * Textbook: $\sigma(-110) \approx 1.7\times10^{-48}$ is below float32's smallest number
#   ($1.4\times10^{-45}$), so $p = 0$ and $-\log p = \infty$.
# * Clipping $p$ to $[10^{-7}, 1 - 10^{-7}]$ -- what a loss that sees only probabilities must
#   do, and what Keras' `binary_crossentropy` does when it cannot find the logits behind $p$ --
#   gives the loss $-\ln 10^{-7} = 16.118$ and, worse, a **zero** gradient, since the clip is
#   flat. The most wrong patches stop teaching the network anything. (For the paper's model,
#   a `Dense(1, activation="sigmoid")` output, Keras on its **TensorFlow** backend -- the one the
#   paper used -- finds the logits behind the sigmoid and computes the fused, stable loss from
#   $z$. Keras 3 on the JAX or PyTorch backend does not: it clips. So this failure was not the
#   paper's, but it is what happens on other backends, and to anyone who writes sigmoid and BCE
#   as two separate layers.)
# * Fused: $110$ and $-1$, exactly.
#
# The other side fails sooner: for a negative patch ($y=0$) with $z = 17$, the sigmoid computed as
# $1/(1 + e^{-17})$ in float32 gives exactly $1.0$. The reason is the sum in the denominator:
# $e^{-17} = 4.1\times10^{-8}$ is less than half the spacing of float32 numbers just above 1
# ($2^{-23} = 1.2\times10^{-7}$), so $1 + e^{-17}$ rounds to 1. (The true $\sigma(17) = 1 - 4.1\times10^{-8}$ is
# itself representable to within rounding: float32 numbers just *below* 1 are $2^{-24} = 6\times10^{-8}$
# apart, and the nearest one is $1 - 2^{-24}$, not 1.) Either way $1 - p$ has lost all its digits, so
# $\log(1 - p) = -\infty$. The fused loss is $17 + \log(1 + e^{-17}) = 17.00000004$.

# %%
f32 = np.float32
z_wrong = np.array([-110.0, 17.0], dtype=f32)
y_wrong = np.array([1.0, 0.0], dtype=f32)
p_wrong = sigmoid(z_wrong)
with np.errstate(divide="ignore"):
    textbook = -(y_wrong * np.log(p_wrong) + (1 - y_wrong) * np.log(1 - p_wrong))
p_clipped = np.clip(p_wrong[:1], f32(1e-7), f32(1 - 1e-7))
L_clip, dL_dp = textbook_bce(p_clipped, y_wrong[:1])
g_clip = dL_dp * (p_clipped == p_wrong[:1])                # the clip is flat where it acts: no gradient
per_sample = [bce_with_logits(z_wrong[i:i + 1], y_wrong[i:i + 1])[0] for i in range(2)]   # yours
g_fused = bce_with_logits(z_wrong[:1], y_wrong[:1])[1]
print("p:", p_wrong, "| textbook:", textbook, "| clipped:", L_clip, g_clip, "| fused:", per_sample, g_fused)

# %% check
assert p_wrong[0] == 0.0 and p_wrong[1] == 1.0            # float32 has lost both probabilities
assert f32(1) + f32(np.exp(-17)) == f32(1)                # the sum 1 + e^-17 is where sigma(17) becomes 1
assert f32(1 / (1 + np.exp(-17.0))) == f32(1) - f32(2.0 ** -24)   # correctly rounded, it would be 1 - 2^-24
assert np.all(np.isinf(textbook))
assert abs(L_clip - 7 * np.log(10)) < 1e-4 and g_clip[0] == 0.0
assert abs(per_sample[0] - 110.0) < 1e-4 and abs(per_sample[1] - 17.0) < 1e-5
assert abs(g_fused[0] - (-1.0)) < 1e-6

# %% [markdown]
# The whole picture, for a positive patch ($y = 1$) over a range of logits. Where float32's
# $p$ underflows (left of about $-104$) the textbook loss is infinite; the clipped loss goes flat
# at 16.1 from $z \approx -16$ on, and its gradient drops to zero; the fused loss and its
# gradient $\sigma(z) - 1$ are right everywhere.

# %%
zs = np.linspace(-120, 10, 1301).astype(f32)
ps = sigmoid(zs)
with np.errstate(divide="ignore"):
    L_textbook = -np.log(ps)
L_clipped = -np.log(np.clip(ps, f32(1e-7), f32(1 - 1e-7)))
L_fus = np.array([bce_with_logits(zs[i:i + 1], np.ones(1, f32))[0] for i in range(len(zs))])   # yours
G_clipped = np.where((ps > 1e-7) & (ps < 1 - 1e-7), ps - 1, 0)
G_fus = bce_with_logits(zs, np.ones_like(zs))[1] * len(zs)                                  # yours, times N
fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3.8))
a1.plot(zs, np.where(np.isinf(L_textbook), np.nan, L_textbook), lw=4, alpha=0.4, label="textbook (inf where p = 0)")
a1.plot(zs, L_clipped, label="clipped p")
a1.plot(zs, L_fus, "--", label="fused with the sigmoid")
a1.set(xlabel="logit z", ylabel="loss for y = 1", title="float32 loss of a positive patch")
a1.legend()
a2.plot(zs, G_clipped, label="clipped p")
a2.plot(zs, G_fus, "--", label="fused: sigmoid(z) - y")
a2.set(xlabel="logit z", ylabel="dL/dz", title="gradient: the clip stops learning")
a2.legend()
plt.show()

# %% check
assert np.isinf(L_textbook[zs < -104]).all() and np.isfinite(L_textbook[zs > -100]).all()
assert np.all(G_clipped[zs < -17] == 0) and np.allclose(G_fus[zs < -17], -1, atol=1e-6)

# %% [markdown]
# ## 4.6 The head of the network
#
# `ShallowCNN.forward` returns logits, `predict_proba` applies the sigmoid, and training feeds
# the logits to the fused loss. With the pooled features $F \in \mathbb{R}^{N\times16}$ (no dropout),
# the gradient of the loss with respect to the dense weights is, by 4.1 and 4.4,
#
# $$\frac{\partial L}{\partial W} = F^\top\,\frac{\sigma(z) - y}{N}, \qquad \frac{\partial L}{\partial b} = \frac1N\sum_n(\sigma(z_n) - y_n).$$
#
# We check the package's model against this formula written out by hand, on a few small
# (32 x 32) random patches in float64.

# %%
model = ShallowCNN(dtype=np.float64, seed=1, p_drop=0.0)
xb = rng.random((5, 1, 32, 32))
yb = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
feats = model.features_forward(xb)                          # (5, 16) pooled features
logits = model.forward(xb)
_, dz = bce_with_logits(logits, yb)                        # yours, Exercise 4.2
model.backward(dz)
r = (1 / (1 + np.exp(-logits)) - yb) / len(yb)
print(feats.shape, logits.round(4), model.grads["dense.b"])

# %% check
assert np.allclose(logits, feats @ model.params["dense.W"][:, 0] + model.params["dense.b"][0], rtol=1e-12)
assert np.allclose(model.predict_proba(xb), 1 / (1 + np.exp(-logits)), rtol=1e-12)
assert np.allclose(model.grads["dense.W"][:, 0], feats.T @ r, rtol=1e-10)
assert np.allclose(model.grads["dense.b"], r.sum(), rtol=1e-10)
assert model.params["dense.W"].size + model.params["dense.b"].size == 17

# %% [markdown]
# ## Takeaways
#
# * Dense: $dW = X^\top G$, $db = \sum_n G_n$, $dX = G W^\top$ -- the shapes nearly force them.
# * Sigmoid and binary cross-entropy fused into one function of the logit have the gradient
#   $(\sigma(z) - y)/N$: prediction minus label.
# * Written separately in float32 they fail on the most wrong patches: $p$ rounds to 0 or 1, and
#   the loss is infinite; clipping $p$ makes it finite but kills the gradient.
# * The model returns logits; probabilities are for people (`predict_proba`), logits for the loss.
#
# ## More exercises
#
# 1. Derive $\sigma'(z) = \sigma(z)(1 - \sigma(z))$ and show that $\sigma(-z) = 1 - \sigma(z)$. Which of
#    the two is the package's `sigmoid` using for $z < 0$?
# 2. `np.log(1 + np.exp(-z))` overflows for $z < -710$ in float64. Show that `np.logaddexp(0, -z)`
#    gives the same numbers without overflow, and that it equals the term used in 4.4.
# 3. The paper balanced its classes (7,880 + 7,880). With an imbalance, a weighted loss
#    $-\frac1N\sum [w_1 y \log p + w_0 (1-y)\log(1-p)]$ is common. Derive its fused form and its
#    gradient with respect to $z$.
# 4. For which float32 logits does $\sigma(z)$ round to exactly 1? To exactly 0? (Hint: $2^{-24}$
#    and the smallest subnormal, $2^{-149}$.) Confirm with `sigmoid` on a fine grid.
# 5. The gradient $(\sigma(z) - y)/N$ is bounded by $1/N$ in size. What does that imply for
#    the effect of a single mislabelled patch on one Adam step (notebook 6)?
#
# Next: [5. Gradient checking](05_gradient_checking.ipynb).
