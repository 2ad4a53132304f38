"""The small model that ships with the package, and the script that makes it.

``shallowcnn serve`` without a MODEL serves this model, so that the page works straight
after ``pip install ".[web]"``. It was trained by :func:`train_bundled_model` on the
built-in **phantom** (synthetic mammograms, no patient data): the whole demo pipeline
(phantom -> patches split by patient -> training -> hard-negative mining -> evaluation on
unseen phantom patients) with the demo's settings; its metadata carries the operating
point chosen on the validation patients' mammograms (1 false positive per image). **It
has never seen a real mammogram**, and the page and ``GET /api/model`` say so; its
detections on a real image mean nothing.

Regenerate it (several minutes on 2 cores: training, then three rounds of hard-negative
mining; the file is a plain ``.npz`` of ~35 KB written by
:meth:`shallowcnn.model.ShallowCNN.save`, loaded without pickle)::

    python -m shallowcnn.web.bundled            # rewrites shallowcnn/web/bundled_model.npz
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

BUNDLED_MODEL_PATH = Path(__file__).with_name("bundled_model.npz")
NEVER_SAW_A_MAMMOGRAM = ("This model was trained only on synthetic phantom images made by "
                         "`shallowcnn phantom`. It has never seen a real mammogram: its detections "
                         "on a real image mean nothing.")


def load_bundled_model(backend: str = "auto"):
    """The packaged :class:`~shallowcnn.model.ShallowCNN` (raises StoreError if it is missing)."""
    from ..model import ShallowCNN

    return ShallowCNN.load(BUNDLED_MODEL_PATH, backend=backend)


def train_bundled_model(out=BUNDLED_MODEL_PATH, epochs: int | None = None, seed: int = 0,
                        backend: str = "auto", verbose: bool = True) -> Path:
    """Run the demo pipeline in a temporary folder and keep only its best model.

    The model's metadata gains ``training`` (what it was trained on, epochs, best epoch,
    the test-patient metrics) and ``bundled``/``warning``, which the server shows.
    """
    from ..demo import DEMO_EPOCHS, run_demo
    from ..model import ShallowCNN

    epochs = DEMO_EPOCHS if epochs is None else epochs
    with tempfile.TemporaryDirectory(prefix="shallowcnn-bundled-") as work:
        results = run_demo(Path(work) / "demo", epochs=epochs, seed=seed, backend=backend,
                           scan=False, verbose=verbose)
        model = ShallowCNN.load(Path(work) / "demo" / results["model"])    # after hard-negative mining
    metrics = {k: v for k, v in results["test_metrics"].items() if isinstance(v, (int, float))}
    training = {"data": "shallowcnn phantom (synthetic mammograms, 0.07 mm, INbreast layout), "
                        "demo size, patches split by patient",
                "phantom": results["phantom"], "patches": results["patches"],
                "epochs": epochs, "best_epoch": results["best_epoch"],
                "best_val_accuracy": results["best_val_accuracy"], "seed": seed,
                "test_metrics": metrics,
                "made_by": "python -m shallowcnn.web.bundled"}
    if results.get("mining"):
        training["mining"] = {k: results["mining"][k] for k in ("config", "rounds", "best_round")}
    extra = {"operating_point": model.metadata["operating_point"]} if "operating_point" in model.metadata else {}
    return model.save(out, metadata={"bundled": True, "warning": NEVER_SAW_A_MAMMOGRAM,
                                     "training": training, **extra})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Retrain the model bundled with `shallowcnn serve`.")
    parser.add_argument("-o", "--output", default=str(BUNDLED_MODEL_PATH),
                        help=f"where to write it (default {BUNDLED_MODEL_PATH})")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for everything (default 0)")
    parser.add_argument("--backend", default="auto", help="numpy, numba, cuda or auto (default auto)")
    args = parser.parse_args(argv)
    path = train_bundled_model(args.output, args.epochs, args.seed, args.backend)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
