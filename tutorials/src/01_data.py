# %% [markdown]
# # 1. The data: from a mammogram to 1 cm² patches
#
# The paper trains on the INbreast database: full-field digital mammograms, 0.07 mm per pixel,
# stored as DICOM, with every lesion outlined by radiologists in an XML file beside the image.
# INbreast is released only on request, so the package ships a **phantom**: synthetic
# mammograms written in exactly the INbreast layout and formats. Everything below runs on the
# phantom and, unchanged, on the real folder.
#
# This notebook follows one image from its DICOM file to training patches: what a
# microcalcification cluster is, how 144 x 144 patches are cut, the paper's four geometric
# augmentations, and why the split into training, validation and test sets must be made by
# patient.
#
# | | |
# |---|---|
# | **You will learn** | the INbreast layout (DICOM images, XML annotations, the patient in the file name); what a microcalcification cluster is; how 1 cm² patches are cut and augmented; why the split must be by patient |
# | **You need** | Python and NumPy; nothing about mammography |
# | **Time** | about 45 minutes (no graded exercises here; they start in notebook 2) |
# | **Previous / next** | -- / [2. Convolution, forward](02_convolution_forward.ipynb) |
#
# A word on sources. Where the paper states something, we say so; where it is silent (how it
# windowed 14 bits to 8, how it balanced the classes, how it split), the package has to choose,
# and the text says **our reading** -- a guess about the paper, not a fact from it.

# %%
import os
import plistlib
import tempfile
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
import pydicom

from shallowcnn.data.augment import TRANSFORMS, apply_transform
from shallowcnn.data.breast import apply_window, breast_mask
from shallowcnn.data.intensity import to_network_input
from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.inbreast import list_cases, load_case, make_roi, parse_dicom_name, read_dicom, read_rois
from shallowcnn.data.patches import describe, load_patches, make_patches
from shallowcnn.data.phantom import generate_phantom
from shallowcnn.data.split import format_audit

QUICK = os.environ.get("SHALLOWCNN_TUTORIAL_QUICK") == "1"   # the tests set it: fewer patients
plt.rcParams.update({"figure.dpi": 80, "image.cmap": "gray"})
WORK = Path(tempfile.mkdtemp(prefix="shallowcnn-tutorial-1-"))   # everything this notebook writes

# %% [markdown]
# ## 1.1 Microcalcifications, clusters, and 1 cm²
#
# Microcalcifications are tiny deposits of calcium, **0.1 to 1 mm** across: bright specks on a
# mammogram, 1.5 to 15 pixels at 0.07 mm. A single one is usually harmless. A **cluster** -- in
# the paper's words "at least three MCs per cm²", a definition it cites to three sources (the
# BI-RADS atlas among them; the atlas itself describes the *distribution* of calcifications, as
# "grouped", "regional" and so on, rather than stating this count) -- is one of the earliest
# signs of breast cancer, present in up to half of the mammograms with a confirmed cancer. The
# package uses the paper's rule.
#
# The paper therefore classifies squares of 1 cm²: at 0.07 mm per pixel, 1 cm is
# $10/0.07 = 142.9$ pixels, rounded up to **144**, so a patch is $144 \times 144$ pixels,
# $10.08 \times 10.08$ mm.

# %%
print(10 / 0.07, 144 * 0.07, (144 * 0.07) ** 2 / 100, "cm^2")

# %% check
assert round(10 / 0.07, 1) == 142.9 and abs(144 * 0.07 - 10.08) < 1e-12

# %% [markdown]
# ## 1.2 A folder in the INbreast layout
#
# `generate_phantom` writes `AllDICOMs/`, `AllXML/` and `INbreast.csv` just like the release:
# file names `<FileName>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm`, and an XML file only for
# images with findings. Each phantom patient has two or four images (two views of one or two
# breasts).

# %%
cases = 3 if QUICK else 6
images = generate_phantom(WORK / "phantom", cases=cases, seed=0, verbose=False)
for p in sorted((WORK / "phantom").iterdir()):
    print(p.name, f"({len(list(p.iterdir()))} files)" if p.is_dir() else "")
print(sorted((WORK / "phantom" / "AllDICOMs").iterdir())[0].name)

# %% [markdown]
# The file name carries the patient: the 16-hex-digit hash groups the images of one woman.
# That is the key for splitting later.

# %%
first = images[0]
parts = parse_dicom_name(first.dicom_path.name)
case_list = list_cases(WORK / "phantom")
print(parts)
print(len(case_list), "images of", len(case_list.patients()), "patients")

# %% check
assert parts["patient"] == first.patient and len(parts["patient"]) == 16
assert first.dicom_path.name.startswith(f"{parts['file_name']}_{parts['patient']}_MG_{parts['laterality']}_")
assert len(case_list.patients()) == cases and len(case_list) == len(images)

# %% [markdown]
# ## 1.3 The DICOM image
#
# A DICOM file is a header of tagged attributes followed by the pixels. The attributes that
# matter here: the image size, `BitsStored` (14: values 0 to 16,383), `PixelSpacing` (0.07 mm),
# and `PhotometricInterpretation` (`MONOCHROME2`: bright means dense; `MONOCHROME1` would be
# inverted). Read it with pydicom directly first:

# %%
with_xml = [c for c in case_list if c.xml_path is not None]        # images with findings
case = max(with_xml, key=lambda c: len(find_clusters(read_rois(c.xml_path))))   # the one with most clusters
ds = pydicom.dcmread(case.dicom_path)
print(ds.Rows, ds.Columns, ds.BitsStored, [float(s) for s in ds.PixelSpacing], ds.PhotometricInterpretation)
raw = ds.pixel_array
print(raw.dtype, raw.min(), raw.max())

# %% [markdown]
# `read_dicom` does the same and more: masks the value to `BitsStored`, inverts `MONOCHROME1`,
# applies any rescale slope and intercept, and refuses a damaged file with a message naming it.
# On this image it must return exactly the stored pixels.

# %%
dicom = read_dicom(case.dicom_path)
print(dicom.shape, dicom.spacing_mm, dicom.bits_stored, dicom.photometric)

# %% check
assert dicom.spacing_mm == (0.07, 0.07) and dicom.bits_stored == 14
assert np.array_equal(dicom.pixels, raw.astype(dicom.pixels.dtype))
assert 0 <= dicom.pixels.min() and dicom.pixels.max() < 2 ** 14

# %% [markdown]
# ## 1.4 The XML annotations
#
# Each `AllXML/<FileName>.xml` is an Apple property list (as OsiriX writes it): `Images[0].ROIs`
# is a list of regions, each with a `Name` (`Calcification`, `Cluster`, `Mass`, ...), a `Type`
# (19 a single point, 15 a small contour, 9 a smooth outline) and its points as strings
# `"(x, y)"` in pixels -- $x$ the column, $y$ the row. Python's `plistlib` reads it:

# %%
with open(case.xml_path, "rb") as f:
    plist = plistlib.load(f)
roi_dicts = plist["Images"][0]["ROIs"]
print(plist["Images"][0]["NumberOfROIs"], "ROIs; the first:")
print({k: roi_dicts[0][k] for k in ("Name", "Type", "NumberOfPoints")}, roi_dicts[0]["Point_px"][:2])

# %% [markdown]
# `read_rois` turns them into `ROI` objects with the points as a float array and a `kind`
# (`calcification`, `cluster` or `other`). Parse the first ROI's points by hand and compare.

# %%
rois = read_rois(case.xml_path, dicom.shape)
by_hand = np.array([[float(v) for v in s.strip("()").split(",")[:2]] for s in roi_dicts[0]["Point_px"]])
print(len(rois), rois[0].name, rois[0].kind, rois[0].points[:2])
print({k: sum(r.kind == k for r in rois) for k in ("calcification", "cluster", "other")})

# %% check
assert len(rois) == plist["Images"][0]["NumberOfROIs"] == len(roi_dicts)
assert np.allclose(rois[0].points, by_hand)
assert all(r.type in (9, 15, 19) for r in rois)

# %% [markdown]
# ## 1.5 Finding clusters
#
# INbreast marks every calcification on its own and draws a `Cluster` outline only on some
# images, so clusters must also be found from the points. `find_clusters` applies the definition:
# a calcification is clustered if some $144 \times 144$ window holds it and at least two others;
# calcifications that share such windows form one cluster.
#
# **Worked in advance:** three calcifications 2 mm apart (about 29 px) form one cluster; the same
# three spread 2 cm apart (286 px) form none; two close ones form none either.

# %%
def calcs(points_xy):
    return [make_roi("Calcification", 19, [p]) for p in points_xy]

close3 = calcs([(500, 500), (529, 500), (514, 525)])
far3 = calcs([(500, 500), (786, 500), (643, 786)])
close2 = calcs([(500, 500), (529, 500)])
found = [len(find_clusters(r)) for r in (close3, far3, close2)]
print(found, find_clusters(close3)[0].centre)

# %% check
assert found == [1, 0, 0]
assert np.allclose(find_clusters(close3)[0].centre, [(500 + 500 + 525) / 3, (500 + 529 + 514) / 3])   # (row, col)

# %% [markdown]
# ## 1.6 From 14 bits to 8
#
# The paper converted the DICOM images to 8-bit PNGs (and divided by 255 for the network) but
# does not say how. The package makes it explicit -- our reading, one reasonable choice -- and
# uses the same mapping for every image the network ever sees (training patches, `scan`, the
# web page), whatever file it came in: find the breast (Otsu's threshold separates it from
# the dark background), take the median $lo$ of the *background* and the 99.9th percentile
# $hi$ of the breast, and map linearly,
#
# $$u_8 = \mathrm{round}\Bigl(255 \cdot \mathrm{clip}\Bigl(\frac{v - lo}{hi - lo}, 0, 1\Bigr)\Bigr),$$
#
# so that only the brightest 0.1% of the breast (calcifications among them) saturate. Why these
# two statistics: a mammogram saved as 12, 14 or 16 bits, stretched into an 8-bit PNG or
# stored MONOCHROME1 differs from the original by an increasing straight-line map $a v + b$ of
# its values, and a median and a percentile move with such a map -- so $(v - lo)/(hi - lo)$
# cancels it and the network sees the same image from every container
# (`shallowcnn/data/intensity.py`). **Checks:** $lo$ is the background's median, $v = lo \mapsto 0$,
# $v = hi \mapsto 255$, the midpoint $\mapsto 128$ (127.5 rounds to even, 128), about 0.1% of breast
# pixels are 255, and the same image stretched to other values gives the same 8 bits.

# %%
mask = breast_mask(dicom.pixels)
u8, mask8, (lo, hi) = to_network_input(dicom.pixels)
probe_u8 = apply_window(np.array([[lo, hi, (lo + hi) / 2]]), lo, hi)
stretched = to_network_input(3 * dicom.pixels.astype(np.int64) + 1000).pixels     # another "container"
print(f"breast covers {mask.mean():.0%} of the image; window [{lo:.0f}, {hi:.0f}] -> [0, 255]")
print(probe_u8, f"saturated: {np.mean(u8[mask8] == 255):.3%}",
      f"pixels that differ after a stretch: {np.mean(stretched != u8):.4%}")

# %% check
assert lo == np.median(dicom.pixels[~mask])
assert probe_u8.tolist() == [[0, 255, 128]]
assert 0.0005 < np.mean(u8[mask] == 255) < 0.003
assert np.abs(stretched.astype(int) - u8).max() <= 1            # the same 8 bits, up to rounding

# %%
clusters = find_clusters(rois)
fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 7))
a1.imshow(dicom.pixels)
a1.set_title(f"14-bit DICOM ({dicom.shape[1]} x {dicom.shape[0]} px)")
a2.imshow(u8)
for r in rois:
    x, y = r.points[:, 0], r.points[:, 1]
    colour = {"calcification": "red", "cluster": "yellow"}.get(r.kind, "cyan")
    a2.plot(np.append(x, x[0]), np.append(y, y[0]), ".-" if len(x) > 1 else "o", color=colour, ms=3, lw=0.8, mfc="none")
for cl in clusters:
    r0, c0 = cl.centre - 72
    a2.add_patch(plt.Rectangle((c0, r0), 144, 144, fill=False, ec="lime", lw=1.2))
a2.set_title(f"8-bit, annotations: calcifications (red), outlines (yellow),\nothers (cyan); "
             f"{len(clusters)} clusters with a 1 cm$^2$ square (green)")
for a in (a1, a2):
    a.axis("off")
plt.show()

# %% [markdown]
# ## 1.7 Cutting patches
#
# `make_patches` does the whole job for a folder. For every image:
#
# * **positives**: $144 \times 144$ windows that hold at least three calcifications of one cluster (at
#   least 3 px inside the edge), at several offsets around each cluster;
# * **negatives**: windows at least 98% inside the breast that come within 12 px of *no*
#   annotation at all (not even a single calcification or a mass), overlapping each other by at
#   most 25%.
#
# Then it splits (next section), augments and balances the classes. The paper's radiologist
# picked 1,576 positive and 1,692 negative patches by hand; here the annotations decide. (The
# offsets, the 98% and the 12 px are the package's choices; the paper does not describe its
# extraction program.)

# %%
store = make_patches(WORK / "phantom", WORK / "patches.npz", seed=0, verbose=False)
print(describe(store))

# %% [markdown]
# Every patch remembers where it came from (`image`, `position` = top-left row and column,
# `transform`), so we can cut it again ourselves from the windowed image and compare:

# %%
k = np.flatnonzero((store.transform == "none") & (store.labels == 1))[0]      # the first positive original
its_dicom, its_rois = load_case(next(cs for cs in case_list if cs.file_name == store.image[k]))
its_u8 = to_network_input(its_dicom.pixels).pixels
r, c = store.position[k]
mine = its_u8[r:r + 144, c:c + 144]
inside = [cl for cl in find_clusters(its_rois)
          if sum((r + 3 <= m[0] <= r + 140) and (c + 3 <= m[1] <= c + 140) for m in cl.members) >= 3]
print(store.patches.shape, store.patches.dtype, "patch", k, "at", (int(r), int(c)), "label", store.labels[k],
      "-> clusters inside:", len(inside))

# %% check
assert store.patches.shape[1:] == (144, 144) and store.patches.dtype == np.uint8
assert np.array_equal(store.patches[k], mine)
assert len(inside) >= 1                             # a positive holds >= 3 calcifications of a cluster

# %% [markdown]
# ## 1.8 The four augmentations
#
# The paper multiplies its patches by five with rigid transforms only, which move the
# calcifications but leave their pixels unaltered: the patch itself, a **reflection** (left-right),
# a **180° turn**, a **reflection and 180° turn** (which is an up-down flip), and a **90° turn**.
# **Worked** on $\begin{pmatrix}1&2\\3&4\end{pmatrix}$:
# reflection $\begin{pmatrix}2&1\\4&3\end{pmatrix}$, 180° $\begin{pmatrix}4&3\\2&1\end{pmatrix}$,
# reflection + 180° $\begin{pmatrix}3&4\\1&2\end{pmatrix}$, 90° anticlockwise $\begin{pmatrix}2&4\\1&3\end{pmatrix}$.

# %%
t = np.array([[1, 2], [3, 4]])
print({name: apply_transform(t, name).tolist() for name in TRANSFORMS})

# %% check
assert [apply_transform(t, n).tolist() for n in TRANSFORMS] == [
    [[1, 2], [3, 4]], [[2, 1], [4, 3]], [[4, 3], [2, 1]], [[3, 4], [1, 2]], [[2, 4], [1, 3]]]

# %% [markdown]
# The paper's counts follow: $1{,}576 \times 5 = 7{,}880$ positive and $1{,}692 \times 5 = 8{,}460$ negative patches
# (stated); its data sets then hold $7{,}880 + 7{,}880 = 15{,}760$ (stated), split $10{,}088 + 2{,}520 + 3{,}152$
# (64/16/20%, stated). It does not say how 8,460 negatives became 7,880; **our reading** is that
# negatives were dropped at random to balance the classes, and the package does the same.
# In our store, each original appears under all five transforms:

# %%
def copies_of(i):
    return np.flatnonzero((store.image == store.image[i]) & (store.position == store.position[i]).all(axis=1))

# balancing may have dropped some copies of a patch; show an original that kept all five
k5 = next(i for i in np.flatnonzero(store.transform == "none") if len(copies_of(i)) == 5)
copies = copies_of(k5)
names = [str(n) for n in store.transform[copies]]
print(names)
fig, axes = plt.subplots(1, 5, figsize=(13, 3))
for ax, i in zip(axes, copies):
    ax.imshow(store.patches[i], vmin=0, vmax=255)
    ax.set_title(store.transform[i])
    ax.axis("off")
plt.show()

# %% check
assert (1576 * 5, 1692 * 5, 2 * 7880, 10_088 + 2_520 + 3_152) == (7880, 8460, 15760, 15760)
assert sorted(names) == sorted(TRANSFORMS)
assert all(np.array_equal(store.patches[i], apply_transform(store.patches[k5], store.transform[i])) for i in copies)

# %% [markdown]
# ## 1.9 Splitting by patient, and why
#
# The paper gives only the proportions, 64/16/20 of the 15,760 *augmented* patches. It does not
# say that it kept patients, images or the copies of one patch together, so **our reading** is
# that the augmented patches were shuffled and cut at random. Then the reflection of
# a test patch is very likely in the training set (each patch has four copies, and each lands in
# training with probability 0.64), and so are overlapping windows of the same cluster. The test
# accuracy then measures memory as much as generalisation -- a 99% that may not survive a new
# patient.
#
# The package's default assigns whole **patients** to a split *before* augmenting, so that a test
# patch comes from a breast the network has never seen. `leakage_audit` counts what two splits
# share: patients, images, windows overlapping by half or more (augmented copies included), and
# near-duplicate pixels.

# %%
print(format_audit(store.metadata["audit"]))
by_split = {s: set(store.patient[store.split == s]) for s in ("train", "val", "test")}

# %% check
assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
assert all(row["overlapping_windows"] == 0 and row["patients"] == 0 for row in store.metadata["audit"].values())

# %% [markdown]
# Our reading of the paper's split (`split_mode="paper"`), on the same patches, for comparison
# (the package warns that it leaks):

# %%
paper = make_patches(WORK / "phantom", None, seed=0, split_mode="paper", verbose=False)
audit = paper.metadata["audit"]
print(format_audit(audit))
leaked = audit["train/test"]["overlapping_windows"] / np.sum(paper.split == "test")
print(f"{leaked:.0%} of the test patches overlap a training patch by half or more")

# %% check
assert audit["train/test"]["patients"] == cases          # every patient is in both
assert leaked > 0.5                                      # most test patches have a copy in training

# %% [markdown]
# The store is a plain `.npz` (no pickle), with JSON metadata that records how it was made;
# `load_patches` reads it back and `arrays(split)` gives the network's input, `uint8 / 255`.

# %%
again = load_patches(WORK / "patches.npz")
x, y = again.arrays("train")
print(x.shape, x.dtype, y[:8], again.metadata["split_mode"])

# %% check
assert x.shape[1:] == (1, 144, 144) and x.dtype == np.float32
assert np.array_equal(x[:, 0], again.patches[again.split == "train"].astype(np.float32) / np.float32(255))
assert y.mean() == 0.5                                   # balanced

# %% [markdown]
# ## Takeaways
#
# * INbreast is DICOM images plus XML outlines; the patient is in the file name, and the
#   package reads both and refuses damaged files with a clear message.
# * A positive patch is a 144 x 144 window (1 cm²) holding at least three calcifications of a
#   cluster; negatives stay clear of every annotation.
# * The four rigid augmentations multiply the patches by five without changing a pixel value.
# * Split by patient *before* augmenting, or the test set measures memory: the audit shows what
#   a random split of augmented patches leaks.
#
# ## Exercises
#
# (Open questions; the graded exercises start in notebook 2.)
#
# 1. Generate a phantom at full INbreast size (`size="full"`, $3328 \times 4084$) for one patient and
#    time `read_dicom`. How many non-overlapping 1 cm² patches fit in the breast?
# 2. Map an image with the breast's 0th and 100th percentiles instead of the background's median
#    and the 99.9th percentile (`apply_window`). Which patches change the most, and why could that
#    matter for the network?
# 3. A cluster is "at least three within 1 cm²". Build a set of calcification points that forms
#    one cluster by chaining (A near B, B near C) although no single window holds all of them.
#    What does `find_clusters` return, and is that what a radiologist would call it?
# 4. The 90° turn is the only augmentation that is not its own inverse. Which two of the five
#    transforms, combined, give a 270° turn? Are there rigid transforms of a square the paper
#    left out? (There are eight in all.)
# 5. With the paper's random split, estimate the probability that none of the five copies of an
#    original patch lands in the training set. Compare with the audit above.
#
# Next: [2. Convolution, forward](02_convolution_forward.ipynb).
