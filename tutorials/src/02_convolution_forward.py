# %% [markdown]
# # 2. Convolution, forward: by loops, then vectorised
#
# The network of Luna-Lozoya et al. is two convolutions, a max and a dot product. This
# notebook is about the convolution: what it computes, how to compute it with seven
# nested loops (slow but obviously right), how to compute it fast without changing a
# single number, and what real filters see in a patch.
#
# Every section follows the same rhythm: the maths, one small cell, and a check against a
# number worked out in advance.
#
# | | |
# |---|---|
# | **You will learn** | what a convolutional layer computes; to write it as seven loops, as one matrix product per kernel offset, and as im2col; what each costs in arithmetic and memory; the network's 17 x 17 field of view |
# | **You need** | NumPy indexing and slicing, `np.einsum` (or matrix products); [notebook 1](01_data.ipynb) for what a patch is |
# | **Time** | about 90 minutes with the three exercises (2.1 easy, 2.2 medium, 2.3 hard) |
# | **Previous / next** | [1. The data](01_data.ipynb) / [3. Backward](03_backward.ipynb) |
#
# In the student version (`tutorials/exercises/`) the bodies of the exercise functions raise
# `NotImplementedError`; the **check** cell after each one grades your answer with
# `shallowcnn.grading` and says what is wrong.

# %%
import os
import time

import numpy as np
import matplotlib.pyplot as plt

from shallowcnn import grading

QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"   # the tests set it: smaller sizes
plt.rcParams.update({"figure.dpi": 80, "image.cmap": "gray"})
rng = np.random.default_rng(0)

# %% [markdown]
# ## 2.1 What a convolutional layer computes
#
# A batch of $N$ images with $C$ channels, $x \in \mathbb{R}^{N\times C\times H\times W}$
# (NCHW, as in PyTorch), goes through $F$ filters $W \in \mathbb{R}^{F\times C\times K\times K}$
# with biases $b \in \mathbb{R}^F$:
#
# $$\mathrm{out}[n,f,i,j] \;=\; b[f] + \sum_{c=0}^{C-1}\sum_{p=0}^{K-1}\sum_{q=0}^{K-1}
#   W[f,c,p,q]\; x[n,c,i+p,j+q].$$
#
# Each output pixel is the dot product of one filter with the $K\times K$ window whose top-left
# corner is $(i,j)$. Strictly speaking this is a *cross-correlation* (a mathematician's
# convolution flips the kernel, $x[i-p, j-q]$); every deep-learning framework calls it
# convolution, and since the filters are learned the flip does not matter.
#
# The paper does not state its padding or stride. We read them as *valid* convolutions (no
# padding, stride 1 -- Keras' defaults, and the paper's parameter counts hold either way): the
# window must fit inside the image, so $i$ runs over $H-K+1$ positions. For the paper's
# $144\times144$ patches and $9\times9$ filters: conv1 gives $136\times136$ maps, conv2 gives
# $128\times128$.
#
# **Exercise 2.1** (easy, 15 min) -- the seven-loop convolution. Write it with all seven loops:
# $n, f, i, j$ pick the output, $c, p, q$ run the sum. Slow, but obviously right: it is the
# definition above, line by line.

# %%
def conv2d_loops(x, W, b):
    """x (N, C, H, W), W (F, C, K, K), b (F,) -> out (N, F, H-K+1, W-K+1), by loops."""
    N, C, H, Wd = x.shape
    F, _, K, _ = W.shape
    out = np.zeros((N, F, H - K + 1, Wd - K + 1), dtype=np.result_type(x, W))
    # BEGIN SOLUTION 2.1 | easy | 15 min | four loops pick the output (n, f, i, j) and three more (c, p, q) run the sum of the formula above, starting from b[f]
    for n in range(N):
        for f in range(F):
            for i in range(H - K + 1):
                for j in range(Wd - K + 1):
                    s = b[f]
                    for c in range(C):
                        for p in range(K):
                            for q in range(K):
                                s += W[f, c, p, q] * x[n, c, i + p, j + q]
                    out[n, f, i, j] = s
    # END SOLUTION
    return out

# %% [markdown]
# **A number worked out in advance.** Take the $4\times4$ image $x[i,j] = 4i + j$ (that is,
# `np.arange(16)`) and a $3\times3$ filter of ones. The output is $2\times2$, and each output is the
# sum of a $3\times3$ window. Because $x$ is linear in $i$ and $j$, a window's sum is 9 times its
# centre value: $\mathrm{out}[i,j] = 9\,(4(i+1) + (j+1)) = 9(5 + 4i + j)$, i.e.
#
# $$\mathrm{out} = \begin{pmatrix} 45 & 54 \\ 81 & 90 \end{pmatrix}.$$
#
# A second one: the $2\times2$ filter $\begin{pmatrix}1 & 0\\0 & -1\end{pmatrix}$ computes
# $x[i,j] - x[i+1,j+1] = -(4 + 1) = -5$ everywhere, a $3\times3$ map of $-5$.

# %%
x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
ones3 = np.ones((1, 1, 3, 3))
diag = np.array([[1.0, 0.0], [0.0, -1.0]]).reshape(1, 1, 2, 2)
print(conv2d_loops(x, ones3, np.zeros(1))[0, 0])
print(conv2d_loops(x, diag, np.zeros(1))[0, 0])

# %% check
grading.check_conv2d_forward(conv2d_loops, "2.1")         # random sizes against an independent oracle
assert np.array_equal(conv2d_loops(x, ones3, np.zeros(1))[0, 0], [[45, 54], [81, 90]])
assert np.array_equal(conv2d_loops(x, diag, np.zeros(1))[0, 0], np.full((3, 3), -5.0))
assert np.array_equal(conv2d_loops(x, ones3, np.array([0.5]))[0, 0], [[45.5, 54.5], [81.5, 90.5]])

# %% [markdown]
# A classic filter gives another worked number. The Sobel filter
# $S_x = \begin{pmatrix}-1&0&1\\-2&0&2\\-1&0&1\end{pmatrix}$ measures the horizontal slope.
# On the ramp $x[i,j] = j$ each of its rows sees $x[\cdot, j+2] - x[\cdot, j] = 2$, weighted
# $1 + 2 + 1$: the output is $8$ everywhere. Its transpose $S_y$ measures the vertical slope,
# which is $0$ on this ramp.

# %%
sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
ramp = np.tile(np.arange(7.0), (7, 1)).reshape(1, 1, 7, 7)
W_sobel = np.stack([sobel_x, sobel_x.T])[:, None]          # (2 filters, 1 channel, 3, 3)
maps = conv2d_loops(ramp, W_sobel, np.zeros(2))
print(maps.shape, maps[0, 0, 0], maps[0, 1, 0])

# %% check
assert maps.shape == (1, 2, 5, 5)
assert np.all(maps[0, 0] == 8) and np.all(maps[0, 1] == 0)

# %% [markdown]
# ## 2.2 Three properties every convolution has
#
# Worked numbers check a few outputs; three properties check all of them, on random numbers
# with several channels, filters and images, so that no index can be swapped unnoticed:
#
# * a **one-hot filter** -- a single 1 at channel $c$, row $p$, column $q$ -- copies channel $c$
#   shifted by $(p, q)$: $\mathrm{out}[n, 0] = x[n, c, p:p+H_o, q:q+W_o]$;
# * **shifting** the image by one column shifts the output by one column (away from the border);
# * without the bias, the output is **linear** in $x$: $\mathrm{conv}(2x + 3x') = 2\,\mathrm{conv}(x) + 3\,\mathrm{conv}(x')$.

# %%
xr = rng.standard_normal((2, 3, 10, 11))
Wr, br = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
ours = conv2d_loops(xr, Wr, br)
one_hot = np.zeros((1, 3, 3, 3))
one_hot[0, 2, 1, 2] = 1.0                                       # channel 2, row 1, column 2
copied = conv2d_loops(xr, one_hot, np.zeros(1))[:, 0]
shifted = conv2d_loops(xr[..., 1:], Wr, br)
x2 = rng.standard_normal(xr.shape)
no_b = np.zeros(4)
linear = conv2d_loops(2 * xr + 3 * x2, Wr, no_b) - 2 * conv2d_loops(xr, Wr, no_b) - 3 * conv2d_loops(x2, Wr, no_b)
print(ours.shape, np.abs(copied - xr[:, 2, 1:9, 2:11]).max(), np.abs(shifted - ours[..., 1:]).max(), np.abs(linear).max())

# %% check
assert ours.shape == (2, 4, 8, 9)
assert np.array_equal(copied, xr[:, 2, 1:9, 2:11])
assert np.allclose(shifted, ours[..., 1:], rtol=1e-12, atol=1e-12)
assert np.abs(linear).max() < 1e-12

# %% [markdown]
# ## 2.3 Vectorising: one matrix product per kernel offset
#
# Seven Python loops cost a few tenths of a microsecond per multiply-add on an idle machine
# (the timing below prints it); one $144\times144$ patch needs 136 million of them: half a minute
# or more per patch. Swap the loop order: put the kernel offset $(p,q)$ outside,
#
# $$\mathrm{out}[n,f,:,:] \;{+}{=}\; \sum_c W[f,c,p,q]\; x[n,c,\,p:p+H_o,\,q:q+W_o],$$
#
# and for each of the $K^2$ offsets the remaining sum over $c$ is one matrix product of the
# $(F, C)$ matrix $W[:,:,p,q]$ with a shifted view of the whole batch. That is exactly what
# the package's reference kernel, `shallowcnn.kernels.reference.conv2d_forward`, does (with `np.einsum`): $K^2 = 81$ big products instead of
# $10^8$ tiny ones, and no copy of the input.
#
# **Exercise 2.2** (medium, 15 min) -- one matrix product per kernel offset. Fill in the two
# loops over $(p, q)$; `np.einsum("fc,nchw->nfhw", ...)` does the product over $c$ for the whole
# batch at once.

# %%
def conv2d_shifts(x, W, b):
    """Same as conv2d_loops, with K*K matrix products over shifted views of x."""
    N, C, H, Wd = x.shape
    F, _, K, _ = W.shape
    Ho, Wo = H - K + 1, Wd - K + 1
    out = np.zeros((N, F, Ho, Wo), dtype=np.result_type(x, W))
    # BEGIN SOLUTION 2.2 | medium | 15 min | for each offset (p, q), the shifted (Ho, Wo) view of x meets W[:, :, p, q] in one einsum over c
    for p in range(K):
        for q in range(K):
            out += np.einsum("fc,nchw->nfhw", W[:, :, p, q], x[:, :, p:p + Ho, q:q + Wo])
    # END SOLUTION
    return out + b[None, :, None, None]

# %% check
grading.check_conv2d_forward(conv2d_shifts, "2.2")
assert np.allclose(conv2d_shifts(xr, Wr, br), ours, rtol=1e-12, atol=1e-12)        # your loops agree

# %% [markdown]
# ## 2.4 The other classic: im2col
#
# Frameworks often copy every $K\times K$ window of every channel into one row of a matrix
# ("image to columns"): a matrix of shape $(H_o W_o,\; C K^2)$ per image. The whole convolution
# is then a single matrix product with the $(C K^2, F)$ matrix of filters. NumPy's
# `sliding_window_view` builds the windows as a view; the `reshape` makes the copy.
#
# **Exercise 2.3** (hard, 20 min) -- im2col. The windows are given; order their axes so that
# one row holds one window's $C K^2$ values in the same $(c, p, q)$ order as
# `W.reshape(F, C * K * K)`, multiply, and bring the result back to $(N, F, H_o, W_o)$.

# %%
def conv2d_im2col(x, W, b):
    """Same as conv2d_loops, as one matrix product of an (N, Ho*Wo, C*K*K) copy of the windows."""
    N, C, H, Wd = x.shape
    F, _, K, _ = W.shape
    Ho, Wo = H - K + 1, Wd - K + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (K, K), axis=(2, 3))   # (N, C, Ho, Wo, K, K)
    # BEGIN SOLUTION 2.3 | hard | 20 min | one row per output position holding its window in (c, p, q) order, one product with W reshaped to (F, C*K*K), then back to (N, F, Ho, Wo)
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N, Ho * Wo, C * K * K)   # the copy
    out = cols @ W.reshape(F, C * K * K).T                                  # (N, Ho*Wo, F)
    return out.transpose(0, 2, 1).reshape(N, F, Ho, Wo) + b[None, :, None, None]
    # END SOLUTION

# %% check
grading.check_conv2d_forward(conv2d_im2col, "2.3")
assert np.allclose(conv2d_im2col(xr, Wr, br), ours, rtol=1e-12, atol=1e-12)

# %% [markdown]
# The copy is the catch. For conv2 of the paper ($C = 6$, $K = 9$, so $CK^2 = 486$ values per
# window, $128^2$ windows per patch) at the paper's batch of 64, in float32:
#
# $$64 \times 128^2 \times 486 \times 4\ \text{bytes} = 2{,}038{,}431{,}744\ \text{bytes} \approx 2.04\ \text{GB},$$
#
# for a layer whose input is only $64 \times 6 \times 136^2 \times 4 \approx 28$ MB. The shifted
# products above need no copy at all, which is why the reference (and the fast kernels of
# notebook 8) avoid im2col.

# %%
im2col_bytes = 64 * 128 * 128 * (6 * 9 * 9) * 4
input_bytes = 64 * 6 * 136 * 136 * 4
print(f"im2col matrix {im2col_bytes / 1e9:.2f} GB for an input of {input_bytes / 1e6:.1f} MB "
      f"({im2col_bytes / input_bytes:.0f} times larger)")

# %% check
assert im2col_bytes == 2_038_431_744
assert round(im2col_bytes / input_bytes) == 72        # about K^2 = 81 times, less the border

# %% [markdown]
# ## 2.5 How much arithmetic, and how fast
#
# One output value costs $CK^2$ multiply-adds, i.e. $2CK^2$ floating-point operations. Per
# $144\times144$ patch:
#
# | layer | outputs | $2CK^2$ | FLOP |
# |---|---|---|---|
# | conv1 | $6 \times 136^2 = 110{,}976$ | $2 \cdot 1 \cdot 81 = 162$ | $17{,}978{,}112$ |
# | conv2 | $16 \times 128^2 = 262{,}144$ | $2 \cdot 6 \cdot 81 = 972$ | $254{,}803{,}968$ |
#
# about 273 MFLOP per patch, 93% of it in conv2. (The dense layer's 32 FLOP do not count.)

# %%
def conv_flop(C, F, K, H):
    Ho = H - K + 1
    return 2 * C * K * K * F * Ho * Ho

flop1, flop2 = conv_flop(1, 6, 9, 144), conv_flop(6, 16, 9, 136)
print(f"conv1 {flop1:,}  conv2 {flop2:,}  total {(flop1 + flop2) / 1e6:.1f} MFLOP, conv2 share {flop2 / (flop1 + flop2):.1%}")

# %% check
assert (flop1, flop2) == (17_978_112, 254_803_968)
assert abs(flop2 / (flop1 + flop2) - 0.934) < 0.001

# %% [markdown]
# Now the stopwatch. The loops get a small problem; the vectorised versions get the same
# problem and then a real batch of patches.

# %%
def best_time(f, *args, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - t0)
    return min(times)

xs = rng.standard_normal((1, 1, 24 if QUICK else 40, 40)).astype(np.float32)
Ws = rng.standard_normal((6, 1, 9, 9)).astype(np.float32)
bs = np.zeros(6, np.float32)
t_loops = best_time(conv2d_loops, xs, Ws, bs, repeat=1)
t_shift = best_time(conv2d_shifts, xs, Ws, bs)
t_im2col = best_time(conv2d_im2col, xs, Ws, bs)
macs = Ws.size * (xs.shape[2] - 8) * (xs.shape[3] - 8)        # multiply-adds of this problem
print(f"loops {t_loops * 1e3:.0f} ms ({t_loops / macs * 1e6:.2f} us per multiply-add), shifted products "
      f"{t_shift * 1e3:.2f} ms, im2col {t_im2col * 1e3:.2f} ms -> {t_loops / t_shift:.0f}x faster without Python loops")

# %% [markdown]
# Do not be surprised if im2col wins here. On one small single-channel image each of the 81
# `einsum` calls of the shifted products costs a few microseconds of Python and NumPy overhead
# for very little arithmetic, while im2col pays its copy (tiny here) once and makes a single
# matrix-multiply call. The case against im2col is memory at the paper's sizes (below), not
# speed on a toy problem (take-home exercise 6 times both on real batches).

# %%
batch = rng.random((4 if QUICK else 16, 6, 136, 136), dtype=np.float32)
W2 = rng.standard_normal((16, 6, 9, 9)).astype(np.float32) * 0.05
t = best_time(conv2d_shifts, batch, W2, np.zeros(16, np.float32), repeat=2)
print(f"conv2d_shifts on conv2: {len(batch) * flop2 / t / 1e9:.1f} GFLOP/s "
      f"({len(batch) / t:.1f} patches/s on this machine)")

# %% [markdown]
# A few GFLOP/s: a small fraction of what the CPU's vector units can do (notebook 8 measures
# NumPy's matrix-multiply rate on the same machine). Notebook 8 closes that gap with Numba.
#
# ## 2.6 The network's shapes, and its field of view
#
# Your `conv2d_shifts` with the paper's two layers, on a batch of two paper-sized patches:

# %%
W1, b1 = (rng.standard_normal((6, 1, 9, 9)) * 0.1).astype(np.float32), np.zeros(6, np.float32)
W2, b2 = (rng.standard_normal((16, 6, 9, 9)) * 0.05).astype(np.float32), np.zeros(16, np.float32)
patches = rng.random((2, 1, 144, 144), dtype=np.float32)
h1 = conv2d_shifts(patches, W1, b1)
h2 = conv2d_shifts(h1, W2, b2)
print(h1.shape, h2.shape, W1.size + b1.size, W2.size + b2.size)

# %% check
assert h1.shape == (2, 6, 136, 136) and h2.shape == (2, 16, 128, 128)
assert W1.size + b1.size == 492 and W2.size + b2.size == 7792   # Table 2 of the paper

# %% [markdown]
# Each conv2 output sees a $9\times9$ window of conv1 maps, each of which sees a $9\times9$ window
# of the patch: together a $(9 + 9 - 1) = 17 \times 17$ pixel window, **1.2 mm** at 0.07 mm per
# pixel -- the size of a few microcalcifications, not of a whole cluster. So an input pixel
# influences exactly $17 \times 17 = 289$ outputs of conv2 (away from the borders). Let us
# check that by poking one pixel.

# %%
probe = rng.random((1, 1, 48, 48))
P1, P2 = rng.standard_normal((6, 1, 9, 9)), rng.standard_normal((16, 6, 9, 9))
two_layers = lambda img: conv2d_shifts(conv2d_shifts(img, P1, np.zeros(6)), P2, np.zeros(16))
before = two_layers(probe)
probe[0, 0, 24, 24] += 1.0
after = two_layers(probe)
changed = np.any(np.abs(after - before) > 1e-12, axis=1)[0]      # (32, 32): which outputs moved
rows, cols = np.nonzero(changed)
print(changed.sum(), "outputs changed, rows", rows.min(), "to", rows.max())

# %% check
assert changed.sum() == 289
assert (rows.min(), rows.max(), cols.min(), cols.max()) == (24 - 16, 24, 24 - 16, 24)

# %% [markdown]
# ## 2.7 Feature maps of real filters
#
# Before any learning, what do classic hand-made filters see in a mammogram-like patch? We
# build one: a smooth tissue background, quantum noise, and six microcalcifications -- bright
# spots about 0.2 mm across (a Gaussian of $\sigma = 1.5$ px). Notebook 1 makes real phantom
# patches; this little one keeps the present notebook self-contained.

# %%
def toy_patch(rng, size=144, n_spots=6):
    yy, xx = np.mgrid[:size, :size]
    img = 0.4 + 0.12 * np.sin(xx / 19.0) * np.cos(yy / 27.0) + 0.02 * rng.standard_normal((size, size))
    centres = rng.uniform(16, size - 16, (n_spots, 2))
    for cy, cx in centres:
        img += 0.3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5 ** 2))
    return img.astype(np.float32), centres

patch, centres = toy_patch(np.random.default_rng(7))
print(patch.shape, patch.dtype, centres.round(1).tolist())

# %% [markdown]
# Four $9\times9$ filters, like the paper's first layer:
#
# * **Sobel x** and **Sobel y** (padded to $9\times9$ with zeros): edges;
# * a **box blur**, $1/81$ everywhere: the local mean;
# * a **Mexican hat** (negated Laplacian of Gaussian), $h(r) = (1 - r^2/2s^2)\,e^{-r^2/2s^2}$,
#   $s = 1.5$, shifted to sum to zero: a *spot detector*. Its positive centre matches a bright
#   dot of the same size and its negative ring subtracts the surroundings, so on flat tissue
#   it answers exactly 0.

# %%
def pad9(k):
    out = np.zeros((9, 9))
    o = (9 - k.shape[0]) // 2
    out[o:o + k.shape[0], o:o + k.shape[1]] = k
    return out

yy, xx = np.mgrid[-4:5, -4:5]
r2 = (xx ** 2 + yy ** 2) / (2 * 1.5 ** 2)
hat = (1 - r2) * np.exp(-r2)
hat -= hat.mean()
filters = np.stack([pad9(sobel_x), pad9(sobel_x.T), np.full((9, 9), 1 / 81), hat])[:, None].astype(np.float32)
fmaps = conv2d_shifts(patch[None, None], filters, np.zeros(4, np.float32))[0]
print(fmaps.shape)

# %% [markdown]
# Checks worked out in advance: the zero-sum hat gives 0 on a constant image (to float32
# rounding), and on the patch its strongest response near each calcification lies on the
# calcification. Careful with the index: output $(i, j)$ is the window whose **centre** is
# input pixel $(i + 4, j + 4)$.

# %%
flat = conv2d_shifts(np.full((1, 1, 20, 20), 0.7, np.float32), filters[3:], np.zeros(1, np.float32))
peaks = []
for cy, cx in centres:
    i0, j0 = int(round(cy)) - 4, int(round(cx)) - 4              # output index of the spot's centre
    win = fmaps[3, i0 - 4:i0 + 5, j0 - 4:j0 + 5]
    di, dj = np.unravel_index(win.argmax(), win.shape)
    peaks.append((i0 - 4 + di + 4, j0 - 4 + dj + 4))              # back to input coordinates
print(np.abs(flat).max(), np.abs(np.array(peaks) - centres).max())

# %% check
assert np.abs(flat).max() < 1e-6
assert np.abs(np.array(peaks) - centres).max() <= 1.0          # every peak within a pixel of its spot

# %%
titles = ["patch", "Sobel x (edges)", "Sobel y (edges)", "box blur (mean)", "Mexican hat (spots)"]
fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
for ax, img, title in zip(axes, [patch, *fmaps], titles):
    ax.imshow(img, cmap="gray" if title == "patch" else "RdBu_r" if "Sobel" in title else "magma")
    ax.set_title(title)
    ax.axis("off")
axes[0].plot(centres[:, 1], centres[:, 0], "o", mfc="none", mec="tab:red", ms=12)
fig.suptitle("Feature maps of four 9x9 filters (valid convolution: 144 -> 136)")
plt.show()

# %% [markdown]
# The hat turns six faint dots into six sharp peaks and flattens the tissue. The Sobel
# filters answer on either side of each dot (a positive and a negative lobe: the slope goes up,
# then down) and barely see the gentle background; the blur sees only the background. The
# network's first layer
# learns six such filters from data, and the second layer combines their maps; notebook 7
# shows what they become.
#
# ## Takeaways
#
# * A convolutional layer is a dot product of each filter with every $K\times K$ window
#   (a cross-correlation); valid convolutions shrink a map by $K - 1$.
# * The same numbers can be computed by seven loops, by $K^2$ matrix products over shifted views,
#   or by one product over an im2col copy; they differ in speed and memory, not in results.
# * conv2 carries 93% of the network's 273 MFLOP per patch; im2col would need a 2 GB copy for it
#   at batch 64.
# * Two stacked $9\times9$ layers see a $17\times17$ window (1.2 mm): a microcalcification, not a
#   cluster.
#
# ## More exercises
#
# 1. With padding $P$ and stride $s$ the output size is $\lfloor (H + 2P - K)/s \rfloor + 1$.
#    Which $P$ keeps $144\times144$ maps with $9\times9$ filters ("same" padding)? Add `padding` and
#    `stride` arguments to `conv2d_loops` and check it against `conv2d_shifts` on a zero-padded
#    input.
# 2. A true convolution uses $x[i-p, j-q]$. Show that it equals our cross-correlation with the
#    kernel flipped, `W[:, :, ::-1, ::-1]` (test it against `np.convolve` in 1-D first).
# 3. How many bytes would im2col need for conv1 at batch 64? For a whole $3328\times4084$
#    mammogram through conv2?
# 4. Write a fourth version that loops over the output pixels $(i, j)$ and vectorises the
#    sum over $(c, p, q)$ with `np.tensordot`. Where does it land between the loops and the
#    shifted products, and why?
# 5. With $L$ stacked valid $K\times K$ convolutions the field of view is $L(K-1)+1$ pixels.
#    Confirm it by poking one pixel through three layers.
#
# ### Take-home
#
# 6. Time `conv2d_loops`, `conv2d_shifts` and `conv2d_im2col` on batches of 1, 4, 16 and 64
#    paper-sized conv2 inputs ($6 \times 136 \times 136$) and plot time and peak memory
#    (`tracemalloc`) against the batch size. Where does im2col stop fitting in memory? (Several
#    minutes; the loops only on the smallest batch.)
#
# Next: [3. Backward through convolution, ReLU and global max pooling](03_backward.ipynb).
