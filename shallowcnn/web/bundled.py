"""The small model that ships with the package.

``shallowcnn serve`` without a MODEL serves this model, so that the page works straight
after ``pip install ".[web]"``. It was trained by :func:`shallowcnn.demo.train_bundled_model` on the
built-in **phantom** (synthetic mammograms, no patient data): the whole demo pipeline
(phantom -> patches split by patient -> training -> hard-negative mining -> evaluation on
unseen phantom patients) on a bigger phantom than the demo's, trained longer; its metadata
carries the operating point chosen on the validation patients' mammograms (1 false positive per image). **It
has never seen a real mammogram**, and the page and ``GET /api/model`` say so; its
detections on a real image mean nothing.

Regenerate it (15-20 minutes on 2 cores: training, then three rounds of hard-negative
mining; the file is a plain ``.npz`` of ~35 KB written by
:meth:`shallowcnn.model.ShallowCNN.save`, loaded without pickle)::

    shallowcnn bundle            # rewrites shallowcnn/web/bundled_model.npz
"""
from __future__ import annotations

from pathlib import Path

from ..model import ShallowCNN

BUNDLED_MODEL_PATH = Path(__file__).with_name("bundled_model.npz")
NEVER_SAW_A_MAMMOGRAM = ("This model was trained only on synthetic phantom images made by "
                         "`shallowcnn phantom`. It has never seen a real mammogram: its detections "
                         "on a real image mean nothing.")


def load_bundled_model(backend: str = "auto"):
    """The packaged :class:`~shallowcnn.model.ShallowCNN` (raises StoreError if it is missing)."""
    return ShallowCNN.load(BUNDLED_MODEL_PATH, backend=backend)
