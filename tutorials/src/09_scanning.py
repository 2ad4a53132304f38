# %% [markdown]
# # 9. Scanning a whole mammogram
#
# The network answers for one 1 cm² patch. A radiologist wants a whole mammogram checked: a
# probability for every 144 x 144 window, at a small stride, and the places where a cluster is
# likely. Cutting out every window and running the network on each would repeat almost all
# the work, since neighbouring windows at stride 16 share 89% of their pixels. This notebook
# shows why the network can instead run *once* over the whole image, checks that this gives
# exactly the same numbers as cutting patches, and scans a phantom mammogram.
#
# | | |
# |---|---|
# | **You will learn** | why a network of valid convolutions and a global max pool can run once over a whole image; how window maxima are assembled from block maxima; to scan a mammogram and compare the detections with the annotations; how the global max pool points at the place the network saw the finding |
# | **You need** | notebooks [2](02_convolution_forward.ipynb) (field of view) and [7](07_training.ipynb) (a trained network) |
# | **Time** | about 45 minutes of reading and running (full mode trains a small network for a few minutes) |
# | **Previous / next** | [8. Making it fast](08_speed.ipynb) / -- (the end of the course) |

# %%
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt

warnings.filterwarnings("ignore", message="IProgress not found")
from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.patches import make_patches
from shallowcnn.data.phantom import generate_phantom
from shallowcnn.kernels import reference
from shallowcnn.model import ShallowCNN
from shallowcnn.data.images import load_image
from shallowcnn.scan import scan_image, scan_patchwise, window_starts
from shallowcnn.train import TrainConfig, Trainer

QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"   # the tests set it: coarser strides, untrained model
plt.rcParams.update({"figure.dpi": 80, "image.cmap": "gray"})
WORK = Path(tempfile.mkdtemp(prefix="shallowcnn-tutorial-9-"))
rng = np.random.default_rng(0)

# %% [markdown]
# ## 9.1 The network is convolutional up to its last two layers
#
# Everything before the global max pool is a valid convolution or a ReLU, so it accepts an image
# of any size: conv2's output at position $(i, j)$ depends only on the $17\times17$ pixels
# $\mathrm{image}[i:i+17,\ j:j+17]$ (notebook 2). A window with top-left corner $(r, c)$ holds exactly
# the conv2 positions $i \in [r, r+128)$, $j \in [c, c+128)$, so its 16 pooled features are
#
# $$\mathrm{feature}[r, c, f] = \max_{0 \le p, q < 128} \mathrm{relu}\bigl(\mathrm{conv2}(\mathrm{image})[f,\ r+p,\ c+q]\bigr),$$
#
# the maxima of *one* pair of feature maps computed over the whole image. Check it by hand on a
# small image, in float64, with the reference kernels:

# %%
model64 = ShallowCNN(dtype=np.float64, seed=0)
P = model64.params
img = rng.random((200, 232))
z1 = np.maximum(reference.conv2d_forward(img[None, None], P["conv1.W"], P["conv1.b"]), 0)
z2 = np.maximum(reference.conv2d_forward(z1, P["conv2.W"], P["conv2.b"]), 0)[0]   # (16, 184, 216)
r, c = 40, 72
from_maps = z2[:, r:r + 128, c:c + 128].max(axis=(1, 2))
from_patch = model64.features_forward(img[None, None, r:r + 144, c:c + 144])[0]
print(z2.shape, np.abs(from_maps - from_patch).max())

# %% check
assert z2.shape == (16, 200 - 16, 232 - 16)
assert np.allclose(from_maps, from_patch, rtol=1e-12, atol=1e-12)

# %% [markdown]
# ## 9.2 How much that saves
#
# For an $H \times W$ image and stride $s$ there are $n_R = \lfloor (H - 144)/s \rfloor + 1$ by
# $n_C = \lfloor (W - 144)/s\rfloor + 1$ windows. Patch by patch, each costs 272.8 MFLOP (notebook 2).
# Over the whole image, conv1 and conv2 cost
# $2\,(6 \cdot 81\,(H-8)(W-8) + 16 \cdot 486\,(H-16)(W-16))$ FLOP once. For a full INbreast image
# ($4084 \times 3328$) at stride 16: $247 \times 200 = 49{,}400$ windows, 13.5 TFLOP patch by patch
# against 0.22 TFLOP for the whole image -- about 60 times less.

# %%
def windows(H, W, s):
    return ((H - 144) // s + 1) * ((W - 144) // s + 1)

def full_image_flop(H, W):
    return 2 * (6 * 81 * (H - 8) * (W - 8) + 16 * 486 * (H - 16) * (W - 16))

patch_flop = 2 * (6 * 81 * 136 ** 2 + 16 * 486 * 128 ** 2)
n_win = windows(4084, 3328, 16)
ratio = n_win * patch_flop / full_image_flop(4084, 3328)
print(f"{n_win:,} windows, {n_win * patch_flop / 1e12:.1f} TFLOP patch by patch, "
      f"{full_image_flop(4084, 3328) / 1e12:.2f} TFLOP once: {ratio:.0f} times less")

# %% check
assert n_win == 247 * 200 == 49_400 and patch_flop == 272_782_080
assert 58 < ratio < 64

# %% [markdown]
# Why about 60: every conv2 position inside the image lies in $(128/16)^2 = 64$ windows, so patch by
# patch it is computed 64 times (fewer near the borders, hence 61). At stride 8 the factor grows
# towards $16^2 = 256$; at stride 144 -- no overlap -- there is almost nothing to gain.
#
# `shallowcnn.scan` adds two practical tricks (see its docstring): the image is processed in tiles
# that overlap by 16 pixels (the receptive field minus one), so the 16-channel map of a whole
# mammogram (860 MB) is never held; and the conv2 map is reduced to block maxima on a grid of
# $g = \gcd(s, 128)$ pixels, from which every window's maximum is a running maximum over
# $128/g$ blocks. Windows less than half inside the breast are skipped (NaN in the map).
#
# ## 9.3 A phantom mammogram
#
# One phantom patient; we scan the image with the most calcification clusters.
#
# The heat map only means something with a trained network. If `SHALLOWCNN_TUTORIAL_MODEL` names
# a trained `model.npz` (`shallowcnn train`, or notebook 7's run folder) we load it. Otherwise,
# since notebooks run independently, we train a small one here with notebook 7's recipe: four
# epochs on the patches of a separate 10-patient phantom (seed 0; the scanned patient, seed 3, is
# not among them) -- about half a minute, enough for a network that finds the obvious clusters
# but not a finished one. In quick mode (the tests) the network keeps its initial, untrained
# weights: every equality checked below holds for any weights.

# %%
images = generate_phantom(WORK / "phantom", cases=2, seed=3, verbose=False)
best = max((im for im in images if im.xml_path is not None), key=lambda im: len(find_clusters(im.rois)))
scan_img = load_image(best.dicom_path)
model_path = os.environ.get("SHALLOWCNN_TUTORIAL_MODEL")
if model_path:
    model, how = ShallowCNN.load(model_path, backend="numba"), f"trained model {model_path}"
elif QUICK:
    model, how = ShallowCNN(backend="numba", seed=0), "untrained model"
else:
    generate_phantom(WORK / "train_phantom", cases=10, seed=0, verbose=False)
    store = make_patches(WORK / "train_phantom", None, seed=0, per_cluster=6, negatives_per_image=9, verbose=False)
    model = ShallowCNN(backend="numba", seed=0)
    config = TrainConfig(epochs=4, batch_size=64, lr=1e-3, p_drop=0.2, seed=0, backend="numba")
    trainer = Trainer(model, config, verbose=False)
    trainer.fit(*store.arrays("train"), *store.arrays("val"))
    model.set_params(trainer.best_params)                # the weights of the best epoch, as notebook 7
    how = (f"model trained here: {len(store.arrays('train')[1])} patches, best epoch {trainer.best['epoch']}, "
           f"validation accuracy {trainer.best['val_accuracy']:.3f}")
truth = find_clusters(scan_img.rois)
print(scan_img.pixels.shape, scan_img.pixels.dtype, f"breast {scan_img.mask.mean():.0%}",
      len(truth), "clusters;", how)

# %% [markdown]
# ## 9.4 Scan, and check against cutting patches
#
# `scan_image` computes the probability map the fast way; `scan_patchwise` cuts out every
# window in the breast and calls `predict_proba` on it -- slow but obviously right. They must
# agree to float32 rounding. (At a coarse stride, to keep the patchwise side quick.)

# %%
stride = 64 if QUICK else 32
t0 = time.perf_counter()
fast = scan_image(model, scan_img, stride=stride)
t_fast = time.perf_counter() - t0
valid = np.isfinite(fast.prob_map)
t0 = time.perf_counter()
slow = scan_patchwise(model, scan_img.pixels, stride=stride, valid=valid)
t_slow = time.perf_counter() - t0
print(f"stride {stride}: {valid.sum()} windows in the breast of {valid.size}; "
      f"scan {t_fast:.2f} s, patch by patch {t_slow:.2f} s; max difference {np.nanmax(np.abs(fast.prob_map - slow)):.1e}")

# %% check
assert fast.prob_map.shape == (len(window_starts(scan_img.pixels.shape[0], stride)),
                               len(window_starts(scan_img.pixels.shape[1], stride)))
assert np.array_equal(np.isfinite(slow), valid) and valid.sum() > 0
assert np.nanmax(np.abs(fast.prob_map - slow)) < 1e-5

# %% [markdown]
# Now the real scan, at the default stride of 16 pixels (1.1 mm), and its detections: peaks of
# the probability map at or above 0.5, at least one window apart (non-maximum suppression).

# %%
result = scan_image(model, scan_img, stride=16)
print(f"{result.n_windows} windows in {result.seconds:.2f} s ({result.n_windows / result.seconds:.0f} windows/s), "
      f"{len(result.detections)} detections")
for d in result.detections[:5]:   # d.to_dict() is what `shallowcnn scan` writes, evidence included (9.5)
    print(f"p = {d.probability:.3f} at (row {d.row:.0f}, col {d.col:.0f}), window top-left {d.window}")

# %% check
assert result.prob_map.shape == (len(result.window_rows), len(result.window_cols))
finite = result.prob_map[np.isfinite(result.prob_map)]
assert finite.size == result.n_windows and np.all((finite >= 0) & (finite <= 1))
assert all(d.probability >= 0.5 for d in result.detections)

# %%
H, W = scan_img.pixels.shape
extent = (result.window_cols[0] + 72 - 8, result.window_cols[-1] + 72 + 8,
          result.window_rows[-1] + 72 + 8, result.window_rows[0] + 72 - 8)   # window centres
fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 7))
a1.imshow(scan_img.pixels)
for cl in truth:
    a1.add_patch(plt.Rectangle((cl.centre[1] - 72, cl.centre[0] - 72), 144, 144, fill=False, ec="lime"))
a1.set_title(f"phantom mammogram, {len(truth)} true clusters (green)")
a2.imshow(scan_img.pixels)
heat = a2.imshow(result.prob_map, extent=extent, cmap="inferno", alpha=0.55, vmin=0, vmax=1)
for d in result.detections:
    a2.plot(d.col, d.row, "c+", ms=12, mew=2)
a2.set(xlim=(-0.5, W - 0.5), ylim=(H - 0.5, -0.5), title="probability per window (at its centre), detections (+)")
fig.colorbar(heat, ax=a2, shrink=0.6)
for a in (a1, a2):
    a.axis("off")
plt.show()

# %% [markdown]
# How the map compares with the truth: for each annotated cluster, the highest window probability
# within 1 cm (144 pixels) of its centre, and for each detection, the distance to the nearest
# true cluster. With the small network trained above, expect the clusters with clearly visible
# calcifications to stand out, a fainter cluster to sit near the threshold (sometimes with two
# peaks, one window apart, on the same cluster), and on other images false detections on bright,
# spot-like tissue -- four epochs on ten patients is a start, not a screening tool. With the untrained network (quick
# mode) the map is nearly flat and there is nothing to detect.

# %%
centres = np.array([[r + 72, c + 72] for r in result.window_rows for c in result.window_cols]).reshape(
    *result.prob_map.shape, 2)
for cl in truth:
    near = np.hypot(*(centres - np.asarray(cl.centre)).transpose(2, 0, 1)) <= 144
    print(f"cluster at {tuple(round(v) for v in cl.centre)}: highest probability within 1 cm "
          f"{np.nanmax(np.where(near, result.prob_map, np.nan)):.2f}")
for d in result.detections:
    dist = min(np.hypot(d.row - cl.centre[0], d.col - cl.centre[1]) for cl in truth) if truth else np.inf
    print(f"detection at ({d.row:.0f}, {d.col:.0f}), p = {d.probability:.2f}: "
          f"{dist:.0f} px from the nearest true cluster ({'hit' if dist <= 144 else 'false positive'})")

# %% [markdown]
# ## 9.5 The max pool is a pointer
#
# A detection is a *window*: 1 cm². Where in it is the cluster? The network already knows. Its
# global max pool keeps, for each of the 16 conv2 filters, one number -- the largest response in
# the window -- and that number comes from *one* position $(i, j)$ of the $128 \times 128$ map,
# its argmax. That position sees the $17 \times 17$ window pixels $[i, i+17) \times [j, j+17)$
# (9.1), so every filter points at one small patch of the mammogram. And the logit is a sum
# over those 16 maxima,
#
# $$\mathrm{logit} = b + \sum_f w_f \max_f, \qquad \text{contribution}_f = w_f \max_f,$$
#
# so each pointer comes with how much it pushed the decision up (or, with $w_f < 0$, down). Why
# the argmax lands on a calcification: a filter that helps say "cluster" responds most to a small
# bright spot on its background, and the brightest such spot in the window is where its map peaks.
# It is the same position the backward pass sends the whole gradient to (notebook 3: the max
# pool's gradient is one-hot), so training has taught each filter exactly *there*.
#
# `shallowcnn.evidence.window_evidence` computes, for a window, every filter's argmax (through
# the backend's fused conv2 + ReLU + max pool, the kernel training uses), the centre of its
# receptive field and its contribution; a detection is placed on the evidence with the largest
# contribution, always inside its own window. Ties go to the first maximum in row-major order
# (as `np.argmax`), then to the lower filter. Here is the window centred on the largest true
# cluster, with the true calcifications from the phantom's annotations:

# %%
from shallowcnn.evidence import strongest, window_evidence

cluster = max(truth, key=lambda cl: len(cl.members))
top, left = (int(np.clip(round(v) - 72, 0, n - 144)) for v, n in zip(cluster.centre, scan_img.pixels.shape))
evidence, = window_evidence(model, scan_img.pixels, [(top, left)], scan_img.scale)
best_ev = strongest(evidence)
window_px = scan_img.pixels[top:top + 144, left:left + 144]
logit = float(model.forward(window_px[None, None])[0])
total = float(model.params["dense.b"][0]) + sum(e.contribution for e in evidence)
print(f"window at ({top}, {left}): logit {logit:.4f} = dense bias + sum of contributions {total:.4f}")
for e in sorted(evidence, key=lambda e: -abs(e.contribution))[:6]:
    print(f"  filter {e.filter:2d}: max {e.activation:.3f} x weight {e.weight:+.3f} = {e.contribution:+.3f}"
          f" at (row {e.row:.0f}, col {e.col:.0f})")
gap = np.hypot(*(cluster.members - (best_ev.row, best_ev.col)).T).min() if len(cluster.members) else np.nan
print(f"strongest: filter {best_ev.filter} at ({best_ev.row:.0f}, {best_ev.col:.0f}), "
      f"{gap:.1f} px ({gap * 0.07:.2f} mm) from the nearest annotated calcification")

# %% check
# the pointers are the argmax of conv2's maps, computed whole with the reference kernels
P32 = model.params
h1 = np.maximum(reference.conv2d_forward(window_px[None, None] / np.float32(255), P32["conv1.W"], P32["conv1.b"]), 0)
maps = reference.conv2d_forward(h1, P32["conv2.W"], P32["conv2.b"])[0]           # (16, 128, 128)
for e in evidence:
    i, j = np.unravel_index(np.argmax(maps[e.filter]), maps[e.filter].shape)
    assert (e.row, e.col) == (top + i + 8, left + j + 8)                         # scale 1: the phantom is 0.07 mm
assert abs(logit - total) < 1e-4
assert top <= best_ev.row < top + 144 and left <= best_ev.col < left + 144

# %%
fig, ax = plt.subplots(figsize=(6.5, 6.5))
ax.imshow(window_px, extent=(left - 0.5, left + 143.5, top + 143.5, top - 0.5))
largest = max(abs(e.contribution) for e in evidence) or 1.0
for e in evidence:
    if e.contribution != 0:
        ax.scatter(e.col, e.row, s=20 + 180 * abs(e.contribution) / largest,
                   c="cyan" if e.contribution > 0 else "none", edgecolors="red" if e.contribution < 0 else "black")
ax.add_patch(plt.Rectangle((best_ev.col - 8.5, best_ev.row - 8.5), 17, 17, fill=False, ec="cyan", lw=1.5))
if len(cluster.members):
    ax.scatter(cluster.members[:, 1], cluster.members[:, 0], s=90, facecolors="none", edgecolors="lime", lw=1.2)
ax.plot(cluster.centre[1], cluster.centre[0], "x", color="lime", ms=10, mew=2)
ax.set_title("each filter's maximum (cyan, size = contribution; red rings pull the logit down),\n"
             "the strongest one's 17 x 17 field, the true calcifications (green rings) and "
             "the cluster centre (x)", fontsize=8)
ax.axis("off")
plt.show()

# %% [markdown]
# With the trained network the filters that add most to the logit mostly point at the same bright
# calcification -- the network fires on the clearest finding in the window, not on the
# cluster's centre (the mean of all its calcifications, up to half a centimetre away). So a
# detection's position is a calcification of the cluster; how far that lies from the cluster's
# centre is the **localization error** that `shallowcnn scan` reports (median and 90th
# percentile, in mm, in `froc.json`). With the untrained network of quick mode the pointers
# land wherever random filters respond most: the bookkeeping above holds for any weights, the
# meaning only for a trained network.
#
# From the command line, `shallowcnn scan model.npz mammogram.dcm -o out/` does the same and
# writes the map (`.npy`), an overlay PNG and the detections as JSON; with an INbreast folder it
# also scores the detections against the annotated clusters (FROC: sensitivity against false
# positives per image).
#
# ## Takeaways
#
# * Up to the global max pool the network is convolutional: one pass over the whole image gives
#   every window's 16 features, identical to cutting the windows out.
# * A window's maximum is the maximum of a few block maxima, so the scanner keeps only those.
# * A probability map and its local maxima are detections; scoring them against the annotated
#   clusters (hits within 5 mm or inside the outline, false positives per image) is what FROC measures.
# * The global max pool is a pointer: each filter's argmax is where it saw its pattern, and its
#   contribution to the logit says how much that mattered. A detection sits on the strongest one.
#
# ## Exercises
#
# 1. Show that $\max(\mathrm{relu}(z)) = \mathrm{relu}(\max z)$, and explain why that lets the scanner apply the
#    ReLU to block maxima only.
# 2. Redo 9.2 for strides 8, 32 and 144. At which stride does the whole-image computation stop
#    paying off, and why is the answer not exactly 144?
# 3. A window's maximum over 128 x 128 positions is the maximum of $(128/g)^2$ block maxima. For
#    $s = 16$, how many numbers does the scanner keep per channel for a full image, and how many
#    would a $(16, H-16, W-16)$ conv2 map need?
# 4. Scan an image whose pixel size is 0.05 mm (resample it to 0.07 mm first: `load_image` does).
#    Why must a 1 cm² window stay 144 pixels?
# 5. With a trained model (notebook 7 or `shallowcnn train`), count how many true clusters get a
#    detection within 1 cm of their centre, and how many detections are false, at thresholds
#    0.5, 0.7 and 0.9.
# 6. Move the window of 9.5 by 16 pixels to the right. Which evidence points move, and why do
#    those whose 17 x 17 fields stay inside both windows not move (unless a stronger response
#    entered the window)?

# %% [markdown]
# ## 9.6 Taking the model elsewhere: ONNX
#
# Everything above is two convolutions, two ReLUs, a max over windows and a dot product: operators
# that every deep-learning framework has. `shallowcnn export model.npz -o model.onnx` writes the
# network as a standard ONNX graph (Conv, Relu, Conv, Relu, GlobalMaxPool, Gemm, Sigmoid), which
# onnxruntime, OpenCV or a browser can run without shallowcnn; `--heatmap --stride 16` writes the
# whole-image variant, whose global max pool becomes the two max pools of the scanner (blocks of
# $g \times g$, then $128/g$ blocks per window: `scan.window_blocks`). Its output is the probability of every window -- the
# map above, except that it does not skip the background. Export the model we scanned with and run
# it in onnxruntime (if installed: `pip install ".[interop]"`):

# %%
import importlib.util

from shallowcnn.constants import pixels_to_input
from shallowcnn.interop.onnx_export import export_onnx

have_onnx = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
if have_onnx:
    import onnxruntime

    onnx_path = export_onnx(model, WORK / "model_heatmap.onnx", heatmap_stride=16)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = pixels_to_input(scan_img.pixels[None, None])                  # (1, 1, H, W) float32, pixels / 255
    onnx_map = session.run(None, {"x": x})[0][0, 0]                   # (1, 1, nR, nC) -> (nR, nC)
    in_breast = np.isfinite(result.prob_map)
    onnx_diff = np.abs(onnx_map[in_breast] - result.prob_map[in_breast]).max()
    print(f"{onnx_path.name}: {onnx_path.stat().st_size:,} bytes, map {onnx_map.shape}, "
          f"max difference from scan_image in the breast {onnx_diff:.1e}")
else:
    print('skipped: onnx and onnxruntime are not installed (pip install ".[interop]")')

# %% check
assert not have_onnx or (onnx_map.shape == result.prob_map.shape and onnx_diff < 1e-5)
