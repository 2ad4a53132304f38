"""A training run's checkpoint: what it holds, and the checks on reading it back.

    checkpoint.npz   model.* (the weights now), best.* (the best epoch's), adam.* (the
                     optimiser's moments and step); metadata: config, architecture,
                     history, best, both random generators' states, the store's fingerprint
                     and its pixels' CRC-32
    history.csv      one row per finished epoch (HISTORY_COLUMNS)

:class:`shallowcnn.train.Trainer` writes them after every epoch and resumes from them;
:func:`read_checkpoint` refuses a damaged or foreign checkpoint before anything changes.
"""
from __future__ import annotations

import csv
import hashlib
import io
import zlib

import numpy as np

from .model import check_weights
from .storage import StoreError, load_npz

CHECKPOINT_KIND = "shallowcnn.checkpoint"
CHECKPOINT_MAX_BYTES = 256 << 20   # per array of a checkpoint; the paper's holds ~130 KB
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def store_fingerprint(store) -> str:
    """A short hash of what identifies a patch store (labels, splits, sources, shapes), so
    that a resumed run can tell that the store under a run changed."""
    digest = hashlib.sha256(str(store.patches.shape).encode())
    for name in ("labels", "split", "image", "position"):
        digest.update(np.ascontiguousarray(getattr(store, name)).tobytes())
    return digest.hexdigest()[:16]


def pixels_checksum(store) -> str:
    """CRC-32 of every pixel of the store (tens of milliseconds for thousands of patches):
    with :func:`store_fingerprint` it tells a resumed run that the images changed while the
    labels, split and positions did not (a store re-made with inverted or noisy pixels)."""
    return f"{zlib.crc32(np.ascontiguousarray(store.patches)):08x}"


def history_to_csv(history) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in zip(*(history[k] for k in HISTORY_COLUMNS)):
        writer.writerow([row[0]] + [f"{v:.6f}" for v in row[1:]])
    return buf.getvalue()


def read_checkpoint(path, model, train_config, fingerprint=None, pixels_crc32=None) -> tuple:
    """``(arrays, meta, shuffle_rng, dropout_rng)`` of the checkpoint at ``path``, every
    part checked against ``model`` (a ShallowCNN), ``train_config`` (a TrainConfig), the
    store's ``fingerprint`` and its ``pixels_crc32`` (:func:`pixels_checksum`; None: not
    checked). Raises StoreError naming the file and what is wrong; changes nothing.
    """
    arrays, meta = load_npz(path, kind=CHECKPOINT_KIND, max_bytes=CHECKPOINT_MAX_BYTES)
    missing = [k for k in ("architecture", "config", "history", "best", "shuffle_rng", "dropout_rng")
               if k not in meta]
    if missing:
        raise StoreError(f"{path}: checkpoint metadata lacks {', '.join(missing)}")
    if meta["architecture"] != model.architecture():
        raise StoreError(f"{path}: was made for another architecture {str(meta['architecture'])[:200]}")
    config = meta["config"] if isinstance(meta["config"], dict) else {}
    for key in ("batch_size", "lr", "beta1", "beta2", "eps", "p_drop", "seed"):
        if config.get(key) != getattr(train_config, key):
            raise StoreError(f"{path}: was made with {key}={str(config.get(key))[:40]}, "
                             f"not {getattr(train_config, key)}; resume with the same settings")
    for key, what, now in (("store_fingerprint", "another patch store", fingerprint),
                           ("pixels_crc32", "a patch store with other pixels", pixels_crc32)):
        saved = meta.get(key)                  # absent in older checkpoints
        if saved is not None and now is not None and saved != now:
            raise StoreError(f"{path}: was trained on {what} ({str(meta.get('patches'))[:200]}); "
                             f"resume with that store, or start a new run in another folder")
    history, best = meta["history"], meta["best"]
    if (not isinstance(history, dict) or any(not isinstance(history.get(k), list) for k in HISTORY_COLUMNS)
            or len({len(history[k]) for k in HISTORY_COLUMNS}) != 1):
        raise StoreError(f"{path}: history lacks columns or their lengths differ "
                         f"(expected {', '.join(HISTORY_COLUMNS)})")
    if not isinstance(best, dict) or not isinstance(best.get("epoch"), int) \
            or not isinstance(best.get("val_accuracy"), (int, float)):
        raise StoreError(f"{path}: 'best' is not {{epoch, val_accuracy}}")
    check_weights(path, arrays, model, prefix="model.")
    check_weights(path, arrays, model, prefix="best.")
    adam_keys = ["adam.t"] + [f"adam.{m}.{name}" for m in ("m", "v") for name in model.params]
    absent = [k for k in adam_keys if k not in arrays]
    if absent:
        raise StoreError(f"{path}: optimiser state lacks {', '.join(absent[:4])}")
    t = arrays["adam.t"]
    if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
        raise StoreError(f"{path}: adam.t is not a step count")
    for name, value in model.params.items():
        for m in ("m", "v"):
            moment = arrays[f"adam.{m}.{name}"]
            if moment.shape != value.shape or moment.dtype.kind != "f" or not np.all(np.isfinite(moment)):
                raise StoreError(f"{path}: adam.{m}.{name} is not a finite array of shape {value.shape}")
    shuffle_rng, dropout_rng = np.random.default_rng(), np.random.default_rng()
    try:
        shuffle_rng.bit_generator.state = meta["shuffle_rng"]
        dropout_rng.bit_generator.state = meta["dropout_rng"]
    except (TypeError, ValueError, KeyError) as e:
        raise StoreError(f"{path}: random generator state is damaged ({type(e).__name__}: {str(e)[:80]})") from None
    return arrays, meta, shuffle_rng, dropout_rng
