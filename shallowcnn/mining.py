"""Hard-negative mining: train on the windows a scan gets wrong.

A store's negatives are random breast windows, but a scan shows the network *every*
window of the breast: the skin line, the pectoral muscle, vessel crossings, isolated
calcifications, noise in dense tissue. Most of these it has never seen, and its false
positives per image come from them. Mining shows it those windows (the network stays the
paper's; only its training data changes)::

    model_0 = the trained model
    repeat for round k = 1, 2, ...:
        scan every mammogram of the TRAINING patients with model_{k-1}   (scan.py)
        keep the windows that hold no cluster: no calcification of a cluster inside and
            the window's centre hits no cluster by the FROC hit rule (froc.py)
        take the highest-scoring of them, at least MIN_SEPARATION px apart, per image
        add them (x5, the paper's augmentation) as negatives of the train split, in place
            of random negatives (the split stays balanced as the store balanced it)
        model_k = retrain (continued from model_{k-1}, or from scratch)
        score model_k by the FROC of the VALIDATION patients' mammograms
    until the validation sensitivity at 1 false positive per image stops improving;
    keep the best model, and its operating point (operating_point.py).

The windows are the scan's own: its grid (stride 16), its 8-bit pixels, its scale. The
validation and test patients' images are never mined (``mined_patients`` is checked to be
inside the train split's patients), so their FROC stays an honest estimate.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .constants import PATCH_SIZE, pixels_to_input
from .data.augment import TRANSFORMS, augment
from .data.clusters import find_clusters
from .data.inbreast import is_inbreast_folder, list_cases
from .froc import DEFAULT_HIT_RADIUS, DEFAULT_HULL_MARGIN, froc_curve, image_truth, match_detections
from .model import ShallowCNN
from .operating_point import FALLBACK_NMS_PX, NMS_CHOICES, TARGET_FP_PER_IMAGE, choose_operating_point
from .scan import scan_image, with_nms
from .storage import atomic_write_text
from .train import TrainConfig, Trainer

MINED_PER_IMAGE = 12          # hardest cluster-free windows taken from each training image per round
MIN_SEPARATION = PATCH_SIZE // 2   # px between two mined windows of one image (no near copies)
MAX_MINED_SHARE = 0.5         # at most this share of the train split's negatives are mined ones
DEFAULT_ROUNDS = 3
ROUND_EPOCHS = 4              # epochs per round when continuing from the previous model
FP_RATES = (0.5, 1, 2, 4)


@dataclass
class MiningConfig:
    """How to mine (see the module docstring)."""

    rounds: int = DEFAULT_ROUNDS
    per_image: int = MINED_PER_IMAGE
    round_epochs: int = ROUND_EPOCHS
    from_scratch: bool = False        # retrain from new weights each round (else continue)
    max_mined_share: float = MAX_MINED_SHARE
    target_fp_per_image: float = TARGET_FP_PER_IMAGE


# ---------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------


def cluster_free_windows(result, clusters, hit_radius: float = DEFAULT_HIT_RADIUS,
                         hull_margin: float = DEFAULT_HULL_MARGIN) -> np.ndarray:
    """(nR, nC) bool: scanned windows that hold no cluster.

    result    :class:`~shallowcnn.scan.ScanResult`; clusters in original pixels (its image's)
    A window is cluster-free when no calcification of any cluster lies inside it, no
    cluster's outline centre lies inside it, and its centre hits no cluster by the FROC
    rule (:func:`~shallowcnn.froc.match_detections`, distances in 0.07 mm pixels).
    """
    scale = result.image.scale
    rows, cols = result.window_rows, result.window_cols
    tops = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2) * scale   # original px
    side = PATCH_SIZE * scale
    free = np.isfinite(result.prob_map).reshape(-1)
    for cluster in clusters:
        points = np.concatenate([cluster.members, np.asarray(cluster.centre, float)[None]])
        inside = ((points[None, :, 0] >= tops[:, None, 0]) & (points[None, :, 0] < tops[:, None, 0] + side)
                  & (points[None, :, 1] >= tops[:, None, 1]) & (points[None, :, 1] < tops[:, None, 1] + side))
        free &= ~inside.any(axis=1)
    centres = tops + (side - scale) / 2.0
    if clusters:
        free &= ~match_detections(centres, clusters, hit_radius * scale, hull_margin * scale).any(axis=1)
    return free.reshape(result.prob_map.shape)


def hardest_windows(prob_map: np.ndarray, allowed: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    count: int, min_separation: float = MIN_SEPARATION) -> np.ndarray:
    """(n, 2) int window indices (k, l) of the ``count`` highest-probability allowed windows,
    greedily, each at least ``min_separation`` px (Euclidean, between top-left corners)
    from every window taken before it. Ties: the lower index first."""
    k_idx, l_idx = np.nonzero(allowed & np.isfinite(prob_map))
    order = np.lexsort((l_idx, k_idx, -prob_map[k_idx, l_idx]))     # highest first, then by position
    taken = []
    for i in order:
        if len(taken) == count:
            break
        r, c = rows[k_idx[i]], cols[l_idx[i]]
        if all(np.hypot(r - rows[a], c - cols[b]) >= min_separation for a, b in taken):
            taken.append((k_idx[i], l_idx[i]))
    return np.array(taken, dtype=np.int64).reshape(-1, 2)


def mine_image(model, path, count: int = MINED_PER_IMAGE) -> dict:
    """Scan one annotated image and return its ``count`` hardest cluster-free windows.

    returns  dict: patches (n, 144, 144) uint8 (the scan's own 8-bit pixels), position
             (n, 2) int top-left (row, col) in scanned pixels, probability (n,)
    """
    result = scan_image(model, path)
    img = result.image
    if img.rois is None:
        raise ValueError(f"{path}: no annotations known, cannot tell which windows are cluster-free")
    clusters = find_clusters(img.rois, size=int(round(PATCH_SIZE * img.scale)))
    free = cluster_free_windows(result, clusters)
    picked = hardest_windows(result.prob_map, free, result.window_rows, result.window_cols, count)
    tops = np.stack([result.window_rows[picked[:, 0]], result.window_cols[picked[:, 1]]], axis=1)
    patches = np.stack([img.pixels[r:r + PATCH_SIZE, c:c + PATCH_SIZE] for r, c in tops]) \
        if len(tops) else np.zeros((0, PATCH_SIZE, PATCH_SIZE), np.uint8)
    return {"patches": patches, "position": tops.astype(np.int32),
            "probability": result.prob_map[picked[:, 0], picked[:, 1]].astype(np.float64)}


# ---------------------------------------------------------------------------------------
# Patients, splits and training data
# ---------------------------------------------------------------------------------------


def cases_of_split(store, source, split: str) -> list:
    """The cases of ``source`` (INbreast layout) whose patients are in ``split`` of the store
    (:class:`~shallowcnn.data.patches.PatchStore`). Images without XML are kept: in that
    layout they have no findings, so every window of theirs is cluster-free and every
    detection on them a false positive."""
    patients = set(np.unique(store.patient[store.indices(split)]).tolist())
    return [case for case in list_cases(source).cases if case.patient in patients]


def mine_cases(model, cases, count: int = MINED_PER_IMAGE, verbose: bool = False) -> dict:
    """:func:`mine_image` over ``cases``; returns the arrays with ``patient`` and ``image`` added."""
    parts = {"patches": [], "position": [], "probability": [], "patient": [], "image": []}
    for case in cases:
        found = mine_image(model, case.dicom_path, count)
        for key in ("patches", "position", "probability"):
            parts[key].append(found[key])
        parts["patient"] += [case.patient] * len(found["position"])
        parts["image"] += [case.file_name] * len(found["position"])
    if not parts["patches"]:
        return {"patches": np.zeros((0, PATCH_SIZE, PATCH_SIZE), np.uint8), "position": np.zeros((0, 2), np.int32),
                "probability": np.zeros(0), "patient": np.zeros(0, str), "image": np.zeros(0, str)}
    out = {key: np.concatenate(parts[key]) for key in ("patches", "position", "probability")}
    out["patient"], out["image"] = np.array(parts["patient"], str), np.array(parts["image"], str)
    if verbose:
        print(f"  mined {len(out['patches'])} windows from {len(cases)} training images "
              f"(probability median {np.median(out['probability']) if len(out['probability']) else 0:.3f})",
              flush=True)
    return out


def merge_mined(old: dict | None, new: dict) -> dict:
    """The union of two mined sets, each (image, position) once (the newer probability kept)."""
    if old is None or len(old["image"]) == 0:
        return new
    both = {key: np.concatenate([new[key], old[key]]) for key in new}
    keys = [f"{im}:{r}:{c}" for im, (r, c) in zip(both["image"], both["position"])]
    _, first = np.unique(keys, return_index=True)
    first = np.sort(first)
    return {key: value[first] for key, value in both.items()}


def training_arrays(store, mined: dict, rng, max_mined_share: float = MAX_MINED_SHARE) -> tuple:
    """The train split with mined negatives in place of random ones: ``(x, y)``.

    The store's train split is balanced (as many negatives as positives). The mined
    windows, augmented x5 with the paper's transforms, replace random negatives, up to
    ``max_mined_share`` of them (the highest-probability mined windows first), so the
    split stays balanced and keeps ordinary tissue too.
    x (n, 1, 144, 144) float32 = uint8 / 255, y (n,) float32
    """
    idx = store.indices("train")
    labels = store.labels[idx]
    pos, neg = idx[labels == 1], idx[labels == 0]
    budget = int(max_mined_share * len(neg)) // len(TRANSFORMS)        # mined windows before augmentation
    order = np.argsort(-mined["probability"], kind="stable")[:budget]
    mined_patches, _, _ = augment(mined["patches"][order], TRANSFORMS)
    keep_neg = rng.choice(neg, len(neg) - len(mined_patches), replace=False) if len(mined_patches) else neg
    patches = np.concatenate([store.patches[np.sort(np.concatenate([pos, keep_neg]))], mined_patches])
    y = np.concatenate([store.labels[np.sort(np.concatenate([pos, keep_neg]))], np.zeros(len(mined_patches), np.uint8)])
    return pixels_to_input(patches[:, None], np.float32), y.astype(np.float32)


def validation_frocs(model, cases, nms_choices=NMS_CHOICES) -> dict:
    """{nms_px: :class:`~shallowcnn.froc.FrocCurve`} of ``model`` on the whole mammograms of
    ``cases``, one curve per NMS distance (each image scanned once, its candidates found
    again at every distance: :func:`~shallowcnn.scan.with_nms`)."""
    truths = {float(nms): [] for nms in nms_choices}
    for case in cases:
        result = scan_image(model, case.dicom_path, nms_px=FALLBACK_NMS_PX)
        if result.image.rois is None:
            continue
        for nms in truths:
            truths[nms].append(image_truth(result if nms == FALLBACK_NMS_PX else with_nms(result, model, nms)))
    return {nms: froc_curve(found) for nms, found in truths.items()}


def _froc_score(curve) -> tuple:
    """(sensitivity at 1 FP/image, mean sensitivity at 0.5/1/2/4): higher is better, in that order."""
    return (curve.sensitivity_at_fpi(1.0), float(np.mean([curve.sensitivity_at_fpi(f) for f in FP_RATES])))


# ---------------------------------------------------------------------------------------
# The rounds
# ---------------------------------------------------------------------------------------


def _retrain(model, x, y, x_val, y_val, config: TrainConfig, mining: MiningConfig, round_no: int, verbose):
    """One round's training; returns the model with the best validation-accuracy epoch."""
    if mining.from_scratch:
        start = ShallowCNN(backend=config.backend, seed=config.seed + round_no, p_drop=config.p_drop)
        cfg = replace(config, seed=config.seed + round_no)
    else:
        start = ShallowCNN(backend=config.backend, seed=config.seed + round_no, p_drop=config.p_drop)
        start.set_params({k: v.copy() for k, v in model.params.items()})
        cfg = replace(config, epochs=mining.round_epochs, seed=config.seed + round_no)
    trainer = Trainer(start, cfg, run_dir=None, verbose=verbose)
    trainer.fit(x, y, x_val, y_val)
    start.set_params(trainer.best_params)
    return start, trainer.best


def mine(store, source, model, out_dir, config: TrainConfig | None = None,
         mining: MiningConfig | None = None, verbose: bool = True) -> dict:
    """Mining rounds from ``model`` (a trained :class:`ShallowCNN`) into ``out_dir``.

    store   the :class:`~shallowcnn.data.patches.PatchStore` the model was trained on
    source  its INbreast-layout folder (the store's ``metadata['source']``)
    config  the training settings (:class:`TrainConfig`; epochs used when from scratch)
    Writes ``out_dir/model.npz`` (the best round's model, with ``mining`` and
    ``operating_point`` in its metadata) and ``out_dir/mining.json``; returns the record.
    """
    config = config or TrainConfig(epochs=12)
    mining = mining or MiningConfig()
    if source is None or not is_inbreast_folder(source):
        raise ValueError(f"{source}: mining needs the store's INbreast-layout folder of whole mammograms "
                         f"(AllDICOMs/ inside)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_cases, val_cases = cases_of_split(store, source, "train"), cases_of_split(store, source, "val")
    train_patients = set(np.unique(store.patient[store.indices("train")]).tolist())
    if not train_cases or not val_cases:
        raise ValueError(f"{source}: mining needs images of training and validation patients "
                         f"(found {len(train_cases)} and {len(val_cases)})")
    x_val, y_val = store.arrays("val")
    rng = np.random.default_rng([config.seed, 23])

    def say(text):
        if verbose:
            print(text, flush=True)

    # rounds are compared at the one-window NMS distance; the distance itself is chosen
    # once, for the kept model, with its operating point
    curves = validation_frocs(model, val_cases)
    curve = curves[FALLBACK_NMS_PX]
    best = {"round": 0, "score": _froc_score(curve), "model": model, "curves": curves}
    record = {"config": asdict(mining), "train_images": len(train_cases), "val_images": len(val_cases),
              "rounds": [{"round": 0, "mined": 0, **_curve_summary(curve)}]}
    say(f"round 0 (the trained model): validation FROC {_format(curve)}")
    mined, current = None, model
    for round_no in range(1, mining.rounds + 1):
        t0 = time.perf_counter()
        new = mine_cases(current, train_cases, mining.per_image, verbose)
        if not set(new["patient"].tolist()) <= train_patients:     # never happens: cases_of_split chose them
            raise AssertionError("mined windows from patients outside the train split")
        mined = merge_mined(mined, new)
        x, y = training_arrays(store, mined, rng, mining.max_mined_share)
        current, kept = _retrain(current, x, y, x_val, y_val, config, mining, round_no, verbose)
        curves = validation_frocs(current, val_cases)
        curve = curves[FALLBACK_NMS_PX]
        score = _froc_score(curve)
        record["rounds"].append({"round": round_no, "mined": len(mined["image"]),
                                 "train_patches": len(y), "kept_epoch": kept["epoch"],
                                 "seconds": round(time.perf_counter() - t0, 1), **_curve_summary(curve)})
        say(f"round {round_no}: {len(mined['image'])} mined windows, validation FROC {_format(curve)}")
        if score > best["score"]:
            best = {"round": round_no, "score": score, "model": current, "curves": curves}
        else:
            say("  no improvement on the validation patients: stopping")
            break
    point = choose_operating_point(best["curves"], mining.target_fp_per_image)
    point["chosen_on"] = "validation patients' whole mammograms"
    record["best_round"] = best["round"]
    record["operating_point"] = point
    say(f"kept round {best['round']}; operating point: p >= {point['threshold']:.4f} with NMS at "
        f"{point['nms_px']:g} px gives {point['sensitivity']:.3f} sensitivity at {point['fp_per_image']:.2f} "
        f"false positives per image on the validation patients")
    meta = {k: v for k, v in (getattr(model, "metadata", None) or {}).items()
            if k not in ("kind", "version", "architecture", "seed")}      # save() writes these afresh
    best["model"].save(out_dir / "model.npz", metadata={**meta, "mining": record, "operating_point": point})
    atomic_write_text(out_dir / "mining.json", json.dumps(record, indent=2) + "\n")
    return record


def _curve_summary(curve) -> dict:
    return {"val_sensitivity_at_fp_per_image": {str(f): curve.sensitivity_at_fpi(f) for f in FP_RATES}}


def _format(curve) -> str:
    return ", ".join(f"{curve.sensitivity_at_fpi(f):.2f} at {f} FP/image" for f in FP_RATES)
