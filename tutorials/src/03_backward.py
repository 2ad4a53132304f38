# %% [markdown]
# # 3. Backward through convolution, ReLU and global max pooling
#
# Training needs the derivative of the loss with respect to every weight. Backpropagation
# gets it layer by layer, from the loss back to the input: each layer receives
# $\partial L/\partial\,\mathrm{out}$ (the *upstream gradient*, `dout`), and returns
# $\partial L/\partial\,\mathrm{in}$ plus the gradients of its own parameters. This notebook
# derives the three backward passes of the feature stack -- convolution, ReLU, global max
# pooling -- writes them as loops, checks them against the definition of a derivative, and then looks at the
# remarkable thing the max pool does to the gradient: it makes it almost entirely zero.
#
# | | |
# |---|---|
# | **You will learn** | to derive and write the backward passes of convolution (dW, db, dx), ReLU and global max pooling; why the max pool's gradient is one-hot and what that sparsity saves |
# | **You need** | the chain rule for sums; [notebook 2](02_convolution_forward.ipynb) done: this notebook runs your `conv2d_shifts` (Exercise 2.2) as its forward convolution |
# | **Time** | about 2 hours with the five exercises (3.1-3.4 easy to medium, 3.5 hard) |
# | **Previous / next** | [2. Convolution, forward](02_convolution_forward.ipynb) / [4. Dense, sigmoid and BCE](04_dense_sigmoid_bce.ipynb) |

# %%
import os
import time

import numpy as np
import matplotlib.pyplot as plt

from shallowcnn import grading
from shallowcnn.grading.notebook import student_functions

# the forward convolution is yours: conv2d_shifts of notebook 2, read from the notebook beside this one
conv2d_forward = student_functions(os.environ.get("SHALLOWCNN_NOTEBOOK_DIR", "."), ["02"])["conv2d_shifts"]
QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"   # the tests set it: smaller sizes
plt.rcParams.update({"figure.dpi": 80, "image.cmap": "gray"})
rng = np.random.default_rng(0)

# %% [markdown]
# ## 3.1 The convolution's three gradients
#
# Forward: $\mathrm{out}[n,f,i,j] = b[f] + \sum_{c,p,q} W[f,c,p,q]\,x[n,c,i+p,j+q]$.
# Every output is linear in $W$, $b$ and $x$, so the chain rule
# $\frac{\partial L}{\partial \theta} = \sum_{n,f,i,j} \frac{\partial L}{\partial\,\mathrm{out}[n,f,i,j]}\,\frac{\partial\,\mathrm{out}[n,f,i,j]}{\partial\theta}$
# gives, with $g = $ `dout`:
#
# $$\frac{\partial L}{\partial b[f]} = \sum_{n,i,j} g[n,f,i,j], \qquad
#   \frac{\partial L}{\partial W[f,c,p,q]} = \sum_{n,i,j} g[n,f,i,j]\; x[n,c,i+p,j+q],$$
#
# $$\frac{\partial L}{\partial x[n,c,h,w]} = \sum_{f,p,q} g[n,f,h-p,w-q]\; W[f,c,p,q]
#   \quad\text{(over the } (p,q) \text{ where } (h-p, w-q) \text{ is a valid output).}$$
#
# $dW$ is again a cross-correlation (of the input with the gradient). $dx$ is a "full"
# *convolution* (in the mathematician's sense, $\sum g[h-p, w-q]\,W[p,q]$, which flips) of the
# gradient with the filters as they are -- equivalently, a full *cross-correlation* of the
# zero-padded gradient with the filters rotated by 180 degrees. (Saying "a convolution with the
# flipped filters" flips twice, and is wrong.) The simplest way to *compute* them is to read the
# forward pass backwards: output $(n,f,i,j)$ was the dot product of filter $f$ with one window,
# so its gradient $g$ adds $g\cdot$window to $dW[f]$ and $g\cdot W[f]$ to that window of $dx$.
#
# **Exercise 3.1** (medium, 15 min) -- $dW$ and $db$ by loops. For every output $(n, f, i, j)$,
# add $g \cdot$ its window of $x$ to $dW[f]$, and $g$ to $db[f]$.

# %%
def conv2d_dW_loops(dout, x, W):
    """dout (N, F, Ho, Wo), x (N, C, H, W), W (F, C, K, K) -> dW (F, C, K, K), db (F,), by loops."""
    N, F, Ho, Wo = dout.shape
    K = W.shape[2]
    dW, db = np.zeros_like(W), np.zeros(F, dtype=W.dtype)
    # BEGIN SOLUTION 3.1 | medium | 15 min | read the forward pass backwards: output (n, f, i, j) used one window of x and filter f -- what does its gradient add to dW[f] and db[f]?
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    g = dout[n, f, i, j]
                    db[f] += g
                    dW[f] += g * x[n, :, i:i + K, j:j + K]
    # END SOLUTION
    return dW, db

# %% check
grading.check_conv2d_dW(conv2d_dW_loops, "3.1")

# %% [markdown]
# **Exercise 3.2** (medium, 15 min) -- $dx$ by loops. Output $(n, f, i, j)$ read the window
# `x[n, :, i:i+K, j:j+K]` with weights $W[f]$; send $g \cdot W[f]$ back into the same window
# (accumulate: windows overlap).

# %%
def conv2d_dx_loops(dout, W, x_shape):
    """dout (N, F, Ho, Wo), W (F, C, K, K) -> dx of shape x_shape (N, C, H, W), by loops."""
    N, F, Ho, Wo = dout.shape
    K = W.shape[2]
    dx = np.zeros(x_shape, dtype=np.result_type(dout, W))
    # BEGIN SOLUTION 3.2 | medium | 15 min | the loop of 3.1 again: output (n, f, i, j) sends its gradient times W[f] back into the window it read (no flip)
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    dx[n, :, i:i + K, j:j + K] += dout[n, f, i, j] * W[f]
    # END SOLUTION
    return dx

# %% check
grading.check_conv2d_dx(conv2d_dx_loops, "3.2")

# %%
def conv2d_backward_loops(dout, x, W):
    """dout (N, F, Ho, Wo), x (N, C, H, W), W (F, C, K, K) -> dx, dW, db, by loops."""
    dW, db = conv2d_dW_loops(dout, x, W)
    return conv2d_dx_loops(dout, W, x.shape), dW, db

# %% [markdown]
# **Worked in advance.** Image $x[i,j] = 4i + j$ ($4\times4$), one $2\times2$ filter of ones, and
# upstream gradient $g = 1$ on all $3\times3$ outputs (so $L$ is the sum of the outputs):
#
# * $db = 9$, the number of outputs;
# * $dW[p,q]$ is the sum of the $3\times3$ window at $(p,q)$, which is 9 times its centre:
#   $9(5 + 4p + q)$, i.e. $\begin{pmatrix}45&54\\81&90\end{pmatrix}$ -- the forward result of
#   notebook 2, as it must be: with $g = 1$, $dW$ *is* a forward convolution;
# * $dx[h,w]$ counts the windows that cover pixel $(h,w)$: $c_h c_w$ with $c = (1,2,2,1)$.

# %%
x = np.arange(16.0).reshape(1, 1, 4, 4)
W = np.ones((1, 1, 2, 2))
dx, dW, db = conv2d_backward_loops(np.ones((1, 1, 3, 3)), x, W)
print(db, dW[0, 0], dx[0, 0], sep="\n")

# %% check
c = np.array([1.0, 2.0, 2.0, 1.0])
assert db[0] == 9
assert np.array_equal(dW[0, 0], [[45, 54], [81, 90]])
assert np.array_equal(dx[0, 0], np.outer(c, c))

# %% [markdown]
# Now random numbers with every dimension different, against the definition of a derivative:
# with $L = \sum \mathrm{out}\cdot g$ (whose gradient with respect to `out` is exactly $g$), nudge
# a few entries of $W$, $x$ and $b$ by $\pm h$ and difference the loss. Notebook 5 does this
# properly, for every entry of every layer.

# %%
x = rng.standard_normal((2, 3, 9, 10))
Wc, bc = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
g = rng.standard_normal(conv2d_forward(x, Wc, bc).shape)
dx_loops, dW_loops, db_loops = conv2d_backward_loops(g, x, Wc)

def L():
    return float(np.sum(conv2d_forward(x, Wc, bc) * g))

def centred(arr, idx, h=1e-6):
    old = arr[idx]
    arr[idx] = old + h
    up = L()
    arr[idx] = old - h
    down = L()
    arr[idx] = old
    return (up - down) / (2 * h)

pairs = [(centred(Wc, i), dW_loops[i]) for i in [(1, 2, 0, 1), (3, 0, 2, 2), (0, 1, 1, 0)]]
pairs += [(centred(x, i), dx_loops[i]) for i in [(0, 0, 0, 0), (1, 2, 4, 5), (1, 1, 8, 9)]]
pairs += [(centred(bc, (i,)), db_loops[i]) for i in range(4)]
print(np.array(pairs))

# %% check
assert all(abs(num - mine) < 1e-6 * max(1.0, abs(num)) for num, mine in pairs)

# %% [markdown]
# ## 3.2 ReLU
#
# $\mathrm{relu}(z) = \max(z, 0)$ has slope 1 for $z > 0$ and 0 for $z < 0$, so the backward
# pass is a mask: $\partial L/\partial z = g\,[z > 0]$. (At $z = 0$ exactly the slope is
# undefined; we use 0, as PyTorch and TensorFlow do.) Worked: $z = (-2, -0.5, 0.5, 3)$ and
# $g = (1, 2, 3, 4)$ give $(0, 0, 3, 4)$.
#
# **Exercise 3.3** (easy, 5 min) -- ReLU backward.

# %%
def relu_backward(dout, z):
    """dout and z of the same shape -> dL/dz."""
    # BEGIN SOLUTION 3.3 | easy | 5 min | the slope is 1 where z > 0 and 0 elsewhere (z == 0 included)
    return dout * (z > 0)
    # END SOLUTION

# %% check
grading.check_relu_backward(relu_backward, "3.3")
assert np.array_equal(relu_backward(np.array([1.0, 2.0, 3.0, 4.0]), np.array([-2.0, -0.5, 0.5, 3.0])), [0, 0, 3, 4])

# %% [markdown]
# ## 3.3 Global max pooling
#
# The paper's pooling keeps one number per feature map, $\mathrm{out}[n,c] = \max_{i,j} x[n,c,i,j]$.
# Since $\partial \max(a, b)/\partial a$ is 1 when $a > b$ and 0 when $a < b$, the gradient is
# *one-hot*: all of $g[n,c]$ goes to the position of the maximum, nothing anywhere else.
# With exact ties the derivative does not exist; the package sends the gradient to the first
# maximum in row-major order, as `argmax` finds it.
#
# Worked: $\begin{pmatrix}1&5\\3&2\end{pmatrix}$ pools to 5 and sends $g = 7$ to the top-right
# corner; $\begin{pmatrix}5&5\\0&0\end{pmatrix}$ sends it to the top-left one.
#
# **Exercise 3.4** (medium, 10 min) -- the sparse backward of global max pooling. Every map gets
# its pooled gradient at the position of its first maximum and zero elsewhere.

# %%
def global_maxpool_backward(dpooled, x):
    """dpooled (N, C), x (N, C, H, W) the pool's input -> dx (N, C, H, W), one non-zero per map."""
    N, C, H, W = x.shape
    dx = np.zeros_like(x, dtype=np.result_type(dpooled, x))
    # BEGIN SOLUTION 3.4 | medium | 10 min | all of dpooled[n, c] goes to the first position where x[n, c] is largest (np.argmax of the flattened map)
    for n in range(N):
        for c in range(C):
            i, j = divmod(int(np.argmax(x[n, c])), W)
            dx[n, c, i, j] = dpooled[n, c]
    # END SOLUTION
    return dx

# %% check
grading.check_global_maxpool_backward(global_maxpool_backward, "3.4")

# %% [markdown]
# The two worked examples:

# %%
xs = np.array([[[[1.0, 5.0], [3.0, 2.0]], [[5.0, 5.0], [0.0, 0.0]]]])   # (1, 2, 2, 2)
print(xs.max(axis=(2, 3)), global_maxpool_backward(np.array([[7.0, 7.0]]), xs), sep="\n")

# %% check
assert np.array_equal(global_maxpool_backward(np.array([[7.0, 7.0]]), xs), [[[[0, 7], [0, 0]], [[7, 0], [0, 0]]]])

# %% [markdown]
# ## 3.4 The gradient that the max pool leaves behind
#
# Put the pieces in the paper's order: conv1, ReLU, conv2, ReLU, global max pool. Let the
# upstream gradient be $g = 1$ for all 16 pooled features (as if the dense layer's weights were
# all 1). How many of the $16 \times 128 \times 128 = 262{,}144$ entries of
# $\partial L/\partial z_2$ (the gradient at conv2's output, per patch) are not zero?
#
# The max pool passes gradient to one position per map, and the ReLU in front of it lets it
# through only if that maximum is positive. So: **at most 16 per patch**, a fraction of
# $16/262{,}144 = 6.1\times10^{-5}$. We use mammogram-like patches (as in notebook 2: tissue,
# noise, six calcifications).

# %%
def toy_patch(rng, size=144, n_spots=6):
    yy, xx = np.mgrid[:size, :size]
    img = 0.4 + 0.12 * np.sin(xx / 19.0) * np.cos(yy / 27.0) + 0.02 * rng.standard_normal((size, size))
    for cy, cx in rng.uniform(16, size - 16, (n_spots, 2)):
        img += 0.3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5 ** 2))
    return img.astype(np.float32)

N = 2 if QUICK else 4
patches = np.stack([toy_patch(np.random.default_rng(s)) for s in range(N)])[:, None]
# Glorot-uniform weights as the package draws them; small positive biases: most maxima are > 0
W1 = rng.uniform(-np.sqrt(6 / (81 + 486)), np.sqrt(6 / (81 + 486)), (6, 1, 9, 9)).astype(np.float32)
W2 = rng.uniform(-np.sqrt(6 / (486 + 1296)), np.sqrt(6 / (486 + 1296)), (16, 6, 9, 9)).astype(np.float32)
b1, b2 = np.full(6, 0.01, np.float32), np.full(16, 0.01, np.float32)
z1 = conv2d_forward(patches, W1, b1)
h1 = np.maximum(z1, 0)
z2 = conv2d_forward(h1, W2, b2)
pooled = np.maximum(z2, 0).max(axis=(2, 3))
dz2 = relu_backward(global_maxpool_backward(np.ones_like(pooled), np.maximum(z2, 0)), z2)   # (N, 16, 128, 128)
per_patch = (dz2 != 0).reshape(N, -1).sum(axis=1)
print(dz2.shape, "non-zero per patch:", per_patch, "of", dz2[0].size)

# %% check
assert dz2[0].size == 262_144
assert np.all(per_patch == (pooled > 0).sum(axis=1))      # one per map whose maximum passed the ReLU
assert np.all(per_patch <= 16) and per_patch.sum() > 0

# %% [markdown]
# ### What that buys
#
# In the formulas of 3.1, every term with $g[n,f,i,j] = 0$ vanishes. With one non-zero
# $g$ per $(n, f)$, at position $(i^*, j^*)$:
#
# $$dW_2[f] = \sum_n g[n,f]\; h_1[n, :, i^*\!:i^*\!+9,\, j^*\!:j^*\!+9], \qquad
#   db_2[f] = \sum_n g[n,f], \qquad dh_1[n,:,\text{window}] \mathrel{+}= g[n,f]\, W_2[f].$$
#
# The textbook backward multiplies $N \cdot 16 \cdot 128^2$ gradient entries by 486-value windows;
# this one touches $N \cdot 16$ windows: $128^2 = 16{,}384$ times less work for $dW_2$ and
# $dh_1$. It is literally the loop of 3.1 restricted to the non-zero gradients -- and the
# forward pass needs to remember only the maximum and its position, not the 16 maps.
# The package's fused forward returns exactly that: `pooled` and the flat `argmax`
# $= i^* W_o + j^*$.
#
# **Exercise 3.5** (hard, 20 min) -- the sparse backward of conv + ReLU + global max pool. It is
# the loop of Exercises 3.1 and 3.2 restricted to the one position per $(n, f)$ that received a
# gradient -- and to the maps whose maximum passed the ReLU.

# %%
def conv_relu_maxpool_backward_sparse(dpooled, x, W, argmax, pooled):
    """dpooled, argmax, pooled (N, F); x (N, C, H, W); W (F, C, K, K) -> dx, dW, db."""
    N, F = dpooled.shape
    K = W.shape[2]
    Wo = x.shape[3] - K + 1
    dx, dW, db = np.zeros_like(x), np.zeros_like(W), np.zeros(F, dtype=W.dtype)
    # BEGIN SOLUTION 3.5 | hard | 20 min | only maps whose maximum passed the ReLU (pooled > 0) carry gradient, through one window each; argmax is the flat index i * Wo + j
    for n in range(N):
        for f in range(F):
            if pooled[n, f] <= 0:               # the ReLU was closed: no gradient at all
                continue
            i, j = divmod(int(argmax[n, f]), Wo)
            g = dpooled[n, f]
            db[f] += g
            dW[f] += g * x[n, :, i:i + K, j:j + K]
            dx[n, :, i:i + K, j:j + K] += g * W[f]
    # END SOLUTION
    return dx, dW, db

# %% check
grading.check_sparse_backward(conv_relu_maxpool_backward_sparse, "3.5")

# %% [markdown]
# Check it against the dense textbook path -- your ReLU and max-pool backward, then your loops
# of 3.1 and 3.2 on the mostly-zero $dz$ -- on a small random problem, and time both.

# %%
xq = rng.standard_normal((2, 3, 12, 13))
Wq, bq = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
zq = conv2d_forward(xq, Wq, bq)
zq[0, 1] = -np.abs(zq[0, 1]) - 0.1                                 # one map the ReLU closes
pq, aq = np.maximum(zq, 0).max(axis=(2, 3)), zq.reshape(2, 4, -1).argmax(axis=2)
gq = rng.standard_normal(pq.shape)
t0 = time.perf_counter()
dzq = relu_backward(global_maxpool_backward(gq, np.maximum(zq, 0)), zq)
dx_dense, dW_dense, db_dense = conv2d_backward_loops(dzq, xq, Wq)
t_dense = time.perf_counter() - t0
t0 = time.perf_counter()
dx_sparse, dW_sparse, db_sparse = conv_relu_maxpool_backward_sparse(gq, xq, Wq, aq, pq)
t_sparse = time.perf_counter() - t0
print(f"dense loops {t_dense * 1e3:.1f} ms, sparse loops {t_sparse * 1e3:.2f} ms, "
      f"max difference {np.abs(dW_dense - dW_sparse).max():.1e}")

# %% check
assert np.allclose(dW_sparse, dW_dense, rtol=1e-10, atol=1e-12)
assert np.allclose(db_sparse, db_dense, rtol=1e-10, atol=1e-12)
assert np.allclose(dx_sparse, dx_dense, rtol=1e-10, atol=1e-12)

# %% [markdown]
# Both are Python loops, and the sparse one is far faster: it touches $N \cdot F$ windows where
# the dense one touches $N \cdot F \cdot H_o \cdot W_o$. The package wraps this in a layer,
# `ConvReLUGlobalMaxPool`; `ShallowCNN(fused=True)` runs the same sparse backward through its
# backend's `features_forward/backward` (the NumPy reference's in `kernels/reference.py`), and
# notebook 8's Numba and CUDA kernels implement it fast. On the patches above, the sparse
# backward of conv2 costs no more than on the toy problem:

# %%
am2 = z2.reshape(N, 16, -1).argmax(axis=2)
p2 = pooled
gp = rng.standard_normal(p2.shape).astype(np.float32)
t0 = time.perf_counter()
dh1_sparse, dW2_sparse, db2_sparse = conv_relu_maxpool_backward_sparse(gp, h1, W2, am2, p2)
print(f"sparse backward of conv2 on {N} patches: {(time.perf_counter() - t0) * 1e3:.1f} ms")

# %% check
assert np.allclose(db2_sparse, (gp * (p2 > 0)).sum(axis=0), rtol=1e-5)

# %% [markdown]
# ## 3.5 Where the gradient reaches the patch
#
# The sparsity propagates. $dh_1$ is non-zero only inside the $\le 16$ windows of $9\times9$
# picked by the maxima: at most $16 \cdot 81 = 1{,}296$ of the $136^2 = 18{,}496$ positions of
# conv1's maps (7%). One layer further, the gradient with respect to the *patch* lives inside
# $\le 16$ windows of $17\times17$ pixels: the network's answer depends on a few small places,
# and the gradient says which. (Here the weights are random; notebook 7 repeats this with a
# trained network.)

# %%
dz1 = relu_backward(dh1_sparse, z1)
support = np.any(dz1 != 0, axis=1)                 # (N, 136, 136)
print("conv1 positions with gradient, per patch:", support.reshape(N, -1).sum(axis=1), "of", 136 * 136)

# %% check
assert np.all(support.reshape(N, -1).sum(axis=1) <= 16 * 81)
inside = np.zeros((136, 136), bool)
for a in am2[0][p2[0] > 0]:
    i, j = divmod(int(a), 128)
    inside[i:i + 9, j:j + 9] = True                 # the 9 x 9 window of conv1 maps that output (i, j) read
assert inside[support[0]].all()                     # no gradient outside those windows

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
axes[0].imshow(patches[0, 0])
for a in am2[0][p2[0] > 0]:
    i, j = divmod(int(a), 128)
    axes[0].add_patch(plt.Rectangle((j - 0.5, i - 0.5), 17, 17, fill=False, ec="tab:orange"))
axes[0].set_title(f"patch and the 17x17 windows of\nthe {(p2[0] > 0).sum()} maxima that passed the ReLU")
axes[1].imshow(support[0], cmap="viridis")
axes[1].set_title(f"where dL/dz1 != 0 ({support[0].sum()} of {136 * 136})")
axes[2].imshow(np.abs(dz1[0]).sum(axis=0), cmap="magma")
axes[2].set_title("|dL/dz1| summed over the 6 maps:\nwhat this (random) network's answer depends on")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Takeaways
#
# * Backpropagation through a layer is the forward pass read backwards: every output sends its
#   gradient to exactly the inputs and weights it was computed from.
# * For a convolution, $dW$ is a cross-correlation of the input with `dout`, and $dx$ a full
#   convolution of `dout` with the filters (a correlation with the filters rotated 180 degrees).
# * ReLU's backward is a mask; global max pooling's is one-hot: one non-zero per map.
# * So conv2's backward touches $N \cdot 16$ windows instead of $N \cdot 16 \cdot 128^2$, and the
#   gradient reaches the patch only inside the $17 \times 17$ fields of view of the maxima.
#
# ## More exercises
#
# 1. Derive $dx$ of the convolution as a *full* cross-correlation of the zero-padded `dout`
#    with the filters rotated by 180 degrees, implement it with `conv2d_shifts` from notebook
#    2, and check it against `conv2d_backward_loops`.
# 2. In `conv2d_backward_loops`, why must `dx[...] +=` accumulate while `Conv2D.backward`
#    must *overwrite* `grads`? What goes wrong in training if a layer accumulated its `grads`
#    across batches?
# 3. Global *average* pooling would pass $g/(H_oW_o)$ to every position. What does that do to
#    the cost of the backward pass, and to which pixels the network can learn from?
# 4. When two positions tie for the maximum, the gradient goes to the first. Construct a
#    tie and show that a centred difference disagrees with the analytic gradient there.
# 5. Count the multiply-adds of the dense and sparse conv2 backward for a batch of 64 and
#    compare them with the forward pass (notebook 2). What fraction of a training step is the
#    backward pass once it is sparse?
#
# Next: [4. Dense, sigmoid and binary cross-entropy](04_dense_sigmoid_bce.ipynb).
