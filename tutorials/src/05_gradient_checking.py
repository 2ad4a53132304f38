# %% [markdown]
# # 5. Gradient checking
#
# A backward pass can be wrong and training can still *seem* to work: the loss goes down a
# little, the accuracy is mediocre, and nobody knows why. The cure is cheap: compare every
# analytic gradient with a numerical one, computed from nothing but forward passes. This
# notebook builds the tool -- centred differences, a relative error, float64 -- shows the
# traps (kinks, float32), catches two planted bugs, and then runs the package's check of
# every layer and every parameter of the network (`shallowcnn gradcheck` on the command line).
#
# | | |
# |---|---|
# | **You will learn** | centred differences and their error; how to choose $h$; the relative error; to catch bugs in a backward pass, and to tell a bug from a kink |
# | **You need** | Taylor series; [notebooks 3](03_backward.ipynb) and [4](04_dense_sigmoid_bce.ipynb) (the backward passes being checked) |
# | **Time** | about 60 minutes with the two exercises (5.1 easy, 5.2 medium) |
# | **Previous / next** | [4. Dense, sigmoid and BCE](04_dense_sigmoid_bce.ipynb) / [6. Adam and dropout](06_adam_dropout.ipynb) |

# %%
import os

import numpy as np
import matplotlib.pyplot as plt

from shallowcnn import grading
from shallowcnn.layers import Conv2D, Dense, GlobalMaxPool2D, ReLU
from shallowcnn.losses import BinaryCrossEntropyWithLogits
from shallowcnn.model import ShallowCNN

QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"   # the tests set it: fewer entries checked
plt.rcParams.update({"figure.dpi": 80})
rng = np.random.default_rng(0)

# %% [markdown]
# ## 5.1 One-sided and centred differences
#
# Taylor's theorem, $f(x \pm h) = f(x) \pm h f'(x) + \tfrac{h^2}{2} f''(x) \pm \tfrac{h^3}{6} f'''(x) + \dots$, gives
#
# $$\frac{f(x+h) - f(x)}{h} = f'(x) + \tfrac{h}{2} f''(x) + O(h^2), \qquad
#   \frac{f(x+h) - f(x-h)}{2h} = f'(x) + \tfrac{h^2}{6} f'''(x) + O(h^4).$$
#
# The centred difference cancels the even terms: its error is $O(h^2)$ instead of $O(h)$.
# **Worked:** $f(x) = x^3$ at $x = 1$ ($f' = 3$). Exactly, $\frac{(1+h)^3 - 1}{h} = 3 + 3h + h^2$ and
# $\frac{(1+h)^3 - (1-h)^3}{2h} = 3 + h^2$: with $h = 10^{-3}$ the errors are $3.001\times10^{-3}$ and
# $10^{-6}$.

# %%
f = lambda x: x ** 3
h = 1e-3
one_sided = (f(1 + h) - f(1)) / h
centred = (f(1 + h) - f(1 - h)) / (2 * h)
print(one_sided - 3, centred - 3)

# %% check
assert abs((one_sided - 3) - 3.001e-3) < 1e-9
assert abs((centred - 3) - 1e-6) < 1e-9

# %% [markdown]
# ## 5.2 How small should $h$ be?
#
# Not as small as possible. The computer rounds $f(x \pm h)$ to a relative precision
# $\varepsilon$ ($1.1\times10^{-16}$ in float64, $6\times10^{-8}$ in float32), and dividing by $2h$ magnifies
# that: the total error is about
#
# $$\underbrace{\tfrac{h^2}{6}|f'''|}_{\text{truncation}} + \underbrace{\varepsilon\,|f|/h}_{\text{rounding}},$$
#
# smallest near $h \approx \varepsilon^{1/3}$: about $5\times10^{-6}$ in float64 (error $\sim10^{-11}$) but
# $4\times10^{-3}$ in float32 (error $\sim10^{-5}$). Measure it on $f = \sin$ at $x = 1$:

# %%
hs = np.logspace(-12, -0.5, 120)
err = {}
for dt in (np.float64, np.float32):
    x0 = dt(1.0)
    err[dt.__name__] = np.array([abs(float((np.sin(x0 + dt(h)) - np.sin(x0 - dt(h))) / (2 * dt(h))) - np.cos(1.0))
                                 for h in hs])
best = {k: (v.min(), hs[v.argmin()]) for k, v in err.items()}
typical32 = np.median(err["float32"][(hs >= 1e-4) & (hs <= 1e-1)])   # around float32's best h
print({k: f"min error {e:.1e} at h = {hh:.0e}" for k, (e, hh) in best.items()},
      f"typical float32 error near its best h: {typical32:.1e}")

# %% check
assert best["float64"][0] < 1e-9 and 1e-7 < best["float64"][1] < 1e-3
assert typical32 > 1e-6          # float32 stays ~1e-5 off (a lucky cancellation at one h aside)
assert err["float32"][np.argmin(abs(hs - 1e-5))] > 1e-4           # and h = 1e-5 is hopeless there

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for k, v in err.items():
    ax.loglog(hs, np.maximum(v, 1e-17), label=k)
ax.axvline(1e-5, color="gray", ls=":", label="h = 1e-5 (the package's)")
ax.set(xlabel="h", ylabel="|centred difference - cos(1)|", title="Rounding (left) against truncation (right)")
ax.legend()
plt.show()

# %% [markdown]
# Hence the rules: **float64**, centred differences, $h = 10^{-5}$. Every layer of the package
# works in float64 for exactly this purpose, and the package's gradient checker
# (`shallowcnn gradcheck`) refuses anything else.

# %% [markdown]
# ## 5.3 Comparing two gradients: the relative error
#
# Gradients span many orders of magnitude, so an absolute tolerance is meaningless. CS231n's
# measure, used by the package, is the worst entry of
#
# $$\mathrm{rel}(a, b) = \frac{|a - b|}{\max(10^{-8},\ |a| + |b|)}.$$
#
# The floor $10^{-8}$ keeps two tiny numbers from looking different: below it the error is
# effectively absolute (times $10^8$). **Worked:** $\mathrm{rel}(1, 1.001) = 0.001/2.001 = 4.9975\times10^{-4}$;
# $\mathrm{rel}(0, 0) = 0$; $\mathrm{rel}(10^{-10}, 2\times10^{-10}) = 10^{-10}/10^{-8} = 0.01$.
# A correct float64 gradient typically scores $10^{-7}$ or better; $10^{-2}$ means a bug.
#
# **Exercise 5.1** (easy, 5 min) -- the relative error of two arrays (or numbers): the worst entry.

# %%
def my_rel_error(a, b):
    """Largest |a - b| / max(1e-8, |a| + |b|) over the entries, as a float."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    # BEGIN SOLUTION 5.1 | easy | 5 min | elementwise first, then the worst entry; the floor 1e-8 keeps 0 / 0 away
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))
    # END SOLUTION

# %% check
grading.check_rel_error(my_rel_error, "5.1")

# %% [markdown]
# The worked numbers:

# %%
print(my_rel_error(1.0, 1.001), my_rel_error(0.0, 0.0), my_rel_error(1e-10, 2e-10))

# %% check
assert abs(my_rel_error(1.0, 1.001) - 0.001 / 2.001) < 1e-15
assert my_rel_error(0.0, 0.0) == 0.0 and abs(my_rel_error(1e-10, 2e-10) - 0.01) < 1e-12

# %% [markdown]
# ## 5.4 The numerical gradient of a whole array
#
# To check a layer, turn its output into a scalar: $L = \sum \mathrm{out} \odot R$ with a fixed random
# $R$, so that $\partial L/\partial\,\mathrm{out} = R$ is what we feed to `backward`. (With $R = 1$ many bugs
# hide: a gradient with two indices swapped, say, still sums the same numbers.) Then nudge
# each entry of each array by $\pm h$, in place, and difference the losses.
#
# **Exercise 5.2** (medium, 15 min) -- the centred-difference gradient. `loss()` reads `arr`, so
# changing an entry in place changes the loss; put every entry back as you found it.

# %%
def num_grad(loss, arr, h=1e-5):
    """Centred-difference gradient of the scalar loss() with respect to arr (same shape as arr)."""
    grad = np.zeros_like(arr)
    # BEGIN SOLUTION 5.2 | medium | 15 min | nudge one entry at a time to old + h and to old - h, evaluate the loss each time, put the entry back, difference
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + h
        up = loss()
        arr[idx] = old - h
        down = loss()
        arr[idx] = old                      # always restore
        grad[idx] = (up - down) / (2 * h)
    # END SOLUTION
    return grad

# %% check
grading.check_numerical_gradient(num_grad, "5.2")

# %% [markdown]
# Now on the dense layer of notebook 4, for its input and both parameters:

# %%
dense = Dense(16, 3, rng=rng, dtype=np.float64)
X = rng.standard_normal((5, 16))
R = rng.standard_normal((5, 3))
loss = lambda: float(np.sum(dense.forward(X) * R))
dense.forward(X)
dX = dense.backward(R)
errors = {"X": my_rel_error(dX, num_grad(loss, X)),
          "W": my_rel_error(dense.grads["W"], num_grad(loss, dense.params["W"])),
          "b": my_rel_error(dense.grads["b"], num_grad(loss, dense.params["b"]))}
print(errors)

# %% check
assert max(errors.values()) < 1e-8

# %% [markdown]
# ## 5.5 Catching bugs
#
# Two plausible mistakes in a convolution's backward pass (notebook 3). The first forgets that
# $db$ is a *sum* over the batch and the positions and takes the mean; the second slides each
# filter over $dx$ upside down -- the classic flip confusion between convolution and
# cross-correlation. Both run, both return arrays of the right shape, and a network trained
# with either would still learn something. The check says otherwise.

# %%
def conv_backward_buggy(dout, x, W):
    N, F, Ho, Wo = dout.shape
    K = W.shape[2]
    dx, dW = np.zeros_like(x), np.zeros_like(W)
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    dW[f] += dout[n, f, i, j] * x[n, :, i:i + K, j:j + K]
                    dx[n, :, i:i + K, j:j + K] += dout[n, f, i, j] * W[f, :, ::-1, ::-1]   # bug 2: flipped
    db = dout.mean(axis=(0, 2, 3))                                                        # bug 1: mean
    return dx, dW, db

conv = Conv2D(2, 3, 3, rng=rng, dtype=np.float64)
xc = rng.standard_normal((2, 2, 6, 6))
Rc = rng.standard_normal((2, 3, 4, 4))
loss = lambda: float(np.sum(conv.forward(xc) * Rc))
dx_bug, dW_bug, db_bug = conv_backward_buggy(Rc, xc, conv.params["W"])
bug_report = {"x": my_rel_error(dx_bug, num_grad(loss, xc)),
              "W": my_rel_error(dW_bug, num_grad(loss, conv.params["W"])),
              "b": my_rel_error(db_bug, num_grad(loss, conv.params["b"]))}
print({k: f"{v:.1e}" for k, v in bug_report.items()})

# %% check
assert bug_report["W"] < 1e-8                          # the part without a bug passes
assert bug_report["x"] > 0.1 and bug_report["b"] > 0.5  # both bugs are caught, by a mile

# %% [markdown]
# For the mean, the ratio is exact: the buggy $db$ is the right one divided by
# $N H_o W_o = 2 \cdot 4 \cdot 4 = 32$, so the relative error is $(1 - 1/32)/(1 + 1/32) = 31/33 = 0.939$.

# %% check
assert abs(bug_report["b"] - 31 / 33) < 1e-8

# %% [markdown]
# ## 5.6 Kinks
#
# ReLU and max are not differentiable everywhere. If $x \pm h$ straddles a kink the centred
# difference averages two slopes and disagrees with the analytic one -- with no bug anywhere.
#
# **Worked (ReLU):** at $x = 10^{-6}$ with $h = 10^{-5}$, $\frac{\mathrm{relu}(x+h) - \mathrm{relu}(x-h)}{2h} = \frac{1.1\times10^{-5} - 0}{2\times10^{-5}} = 0.55$,
# while the analytic slope is 1: relative error $0.45/1.55 = 0.290$.
#
# **Worked (max):** $\max(a, b)$ with $a = 1$, $b = 1 + 5\times10^{-6}$: the analytic gradient with
# respect to $a$ is 0 ($b$ wins), but $\frac{(1 + 10^{-5}) - (1 + 5\times10^{-6})}{2\times10^{-5}} = 0.25$.

# %%
relu = ReLU()
xk = np.array([1e-6])
relu.forward(xk)
relu_err = my_rel_error(relu.backward(np.ones(1)), num_grad(lambda: float(relu.forward(xk).sum()), xk))
pool = GlobalMaxPool2D()
xm = np.array([[[[1.0, 1.0 + 5e-6]]]])
pool.forward(xm)
analytic_max = pool.backward(np.ones((1, 1)))
numeric_max = num_grad(lambda: float(pool.forward(xm).sum()), xm)
print(relu_err, analytic_max.ravel(), numeric_max.ravel())

# %% check
assert abs(relu_err - 0.45 / 1.55) < 1e-6
assert np.array_equal(analytic_max.ravel(), [0, 1]) and np.allclose(numeric_max.ravel(), [0.25, 0.75])

# %% [markdown]
# In a network the kinks are everywhere (every ReLU, every max), but with random inputs an
# input lands within $h = 10^{-5}$ of a kink rarely, and the harm is bounded. The package therefore
# (i) keeps test inputs of ReLU away from 0 and avoids exact ties in max pools, and (ii) accepts a
# relative error up to $10^{-5}$ wherever ReLU or max is involved, and $10^{-7}$ for smooth layers.
#
# ## 5.7 The whole network
#
# Your `num_grad` and `my_rel_error` on every parameter of a small `ShallowCNN` (3 and 4
# filters of 3 x 3, 147 parameters, float64), through the fused loss of notebook 4. (The
# package's `shallowcnn gradcheck` does the same on the paper's sizes, sampling entries: all
# 8,301 would take $2 \times 8{,}301$ forward passes.)

# %%
def model_errors(fused):
    net = ShallowCNN(dtype=np.float64, seed=3, channels=(3, 4), kernel_size=3, fused=fused)
    xs, ys = np.random.default_rng(7).random((3, 1, 11, 11)), np.array([1.0, 0.0, 1.0])
    bce = BinaryCrossEntropyWithLogits()
    model_loss = lambda: bce.forward(net.forward(xs), ys)
    model_loss()
    net.backward(bce.backward())
    analytic = {k: g.copy() for k, g in net.grads.items()}
    return {k: my_rel_error(analytic[k], num_grad(model_loss, net.params[k])) for k in net.params}, analytic

errs, grads = {}, {}
for fused_flag in (False, True):
    errs[fused_flag], grads[fused_flag] = model_errors(fused_flag)
print({k: f"{e:.1e}" for k, e in errs[False].items()})

# %% check
assert set(errs[False]) == {"conv1.W", "conv1.b", "conv2.W", "conv2.b", "dense.W", "dense.b"}
assert max(max(v.values()) for v in errs.values()) <= 1e-5            # ReLU and max: the kink bound

# %% [markdown]
# The fused model (conv2 + ReLU + max pool as one layer with a sparse backward, notebook 3) and
# the textbook stack, with the same weights, give the same analytic gradients -- a check that
# compares two implementations instead of one against finite differences.

# %% check
assert all(np.allclose(grads[False][k], grads[True][k], rtol=1e-10, atol=1e-14) for k in grads[False])

# %% [markdown]
# ## Takeaways
#
# * Centred differences have error $O(h^2)$; with rounding, the best $h$ is about $\varepsilon^{1/3}$:
#   check gradients in float64 with $h = 10^{-5}$, never in float32.
# * Compare with the relative error's worst entry; a correct gradient scores about $10^{-7}$ or
#   better, a bug $10^{-2}$ or worse.
# * Weight the output with a random $R$ before summing, or symmetric bugs hide.
# * Kinks (ReLU at 0, ties in a max) disagree with no bug present: keep inputs away from them.
#
# ## More exercises
#
# 1. Redo 5.2 with the one-sided difference. Where is its optimal $h$, and its best error, in
#    float64 and float32? (Expect $\varepsilon^{1/2}$.)
# 2. Complex-step differentiation: $f'(x) \approx \mathrm{Im}\,f(x + ih)/h$ has no subtraction and
#    therefore no rounding catastrophe. Try it on $\sin$ with $h = 10^{-20}$. Why can it not be used
#    through a ReLU?
# 3. Plant a third bug in `conv_backward_buggy`: shift the window of $dW$ by one pixel
#    (`x[n, :, i+1:i+K+1, ...]`, with a bigger input). Which relative error does the check report?
# 4. Check a `Dropout` layer with your `num_grad`, drawing a new mask at every call of the loss.
#    Why does it fail, and what must stay fixed between the two evaluations?
#
# ### Take-home
#
# 5. From the shell: `shallowcnn gradcheck --entries 0 --size 17` checks every entry. How long
#    does it take, and which component has the largest error?
#
# Next: [6. Adam and dropout](06_adam_dropout.ipynb).
