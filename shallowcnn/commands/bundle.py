"""``shallowcnn bundle``: retrain the small phantom model that ``shallowcnn serve`` ships with.

For maintainers: it rewrites ``shallowcnn/web/bundled_model.npz`` by default
(:func:`shallowcnn.demo.train_bundled_model`: the demo's pipeline on a bigger phantom, then its best model).
"""
from __future__ import annotations

from ..data.phantom import DEFAULT_CASES
from ..demo import BUNDLE_CASES, BUNDLE_EPOCHS, DEMO_EPOCHS, train_bundled_model
from ..kernels import BackendUnavailable
from ..mining import DEFAULT_ROUNDS
from ..train import TrainingDiverged
from ..web.bundled import BUNDLED_MODEL_PATH
from .common import CommandError, add_backend_option, non_negative_int, positive_int


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "bundle", help="retrain the phantom model bundled with 'shallowcnn serve' (for maintainers)",
        description="Run the demo's pipeline (phantom, patches split by patient, training, hard-negative "
                    "mining, evaluation, scan) in a temporary folder (or --keep DIR) and save its best model, "
                    "with its training record, as the model that "
                    "'shallowcnn serve' uses without a MODEL.")
    p.add_argument("-o", "--output", default=str(BUNDLED_MODEL_PATH),
                   help=f"where to write it (default {BUNDLED_MODEL_PATH})")
    p.add_argument("--cases", type=positive_int, default=BUNDLE_CASES,
                   help=f"phantom patients (default {BUNDLE_CASES}; the demo uses {DEFAULT_CASES})")
    p.add_argument("--epochs", type=positive_int, default=BUNDLE_EPOCHS,
                   help=f"training epochs (default {BUNDLE_EPOCHS}; the demo trains {DEMO_EPOCHS})")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for everything (default 0)")
    p.add_argument("--mine-rounds", type=non_negative_int, default=DEFAULT_ROUNDS,
                   help=f"hard-negative mining rounds, 0 for none (default {DEFAULT_ROUNDS})")
    p.add_argument("--keep", metavar="DIR", default=None,
                   help="run the demo in DIR (new or empty) and keep it: its report.md, figures and models")
    add_backend_option(p)
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    try:
        path = train_bundled_model(args.output, args.epochs, args.seed, args.backend,
                                   mine_rounds=args.mine_rounds, keep=args.keep, cases=args.cases)
    except TrainingDiverged as e:
        raise CommandError(f"training diverged: {e}", status=1) from None
    except (ValueError, FileExistsError, OSError, BackendUnavailable) as e:
        raise CommandError(e) from None
    kept = f"; the demo it came from: {args.keep}" if args.keep else ""
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB){kept}")
    return 0
