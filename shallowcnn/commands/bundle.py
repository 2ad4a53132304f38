"""``shallowcnn bundle``: retrain the small phantom model that ``shallowcnn serve`` ships with.

For maintainers: it rewrites ``shallowcnn/web/bundled_model.npz`` by default
(:func:`shallowcnn.demo.train_bundled_model`: the demo's pipeline, then its best model).
"""
from __future__ import annotations

from ..demo import train_bundled_model
from ..web.bundled import BUNDLED_MODEL_PATH
from .common import add_backend_option, non_negative_int, positive_int


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "bundle", help="retrain the phantom model bundled with 'shallowcnn serve' (for maintainers)",
        description="Run the demo's pipeline (phantom, patches split by patient, training) in a temporary "
                    "folder and save its best model, with its training record, as the model that "
                    "'shallowcnn serve' uses without a MODEL.")
    p.add_argument("-o", "--output", default=str(BUNDLED_MODEL_PATH),
                   help=f"where to write it (default {BUNDLED_MODEL_PATH})")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the demo's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for everything (default 0)")
    add_backend_option(p)
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    path = train_bundled_model(args.output, args.epochs, args.seed, args.backend)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0
