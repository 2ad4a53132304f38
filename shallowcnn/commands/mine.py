"""``shallowcnn mine``: hard-negative mining after ``train`` (:func:`shallowcnn.mining.mine`)."""
from __future__ import annotations

from ..data.patches import PatchError, open_patches
from ..kernels import BackendUnavailable
from ..mining import DEFAULT_ROUNDS, ROUND_EPOCHS, MiningConfig, mine
from ..model import ShallowCNN
from ..storage import OutputError, StoreError, check_writable_dir
from ..train import TrainConfig, TrainingDiverged
from .common import CommandError, add_backend_option, positive_float, positive_int


def add_command(subparsers):
    p = subparsers.add_parser(
        "mine", help="hard-negative mining: retrain on the cluster-free windows a scan scores highest",
        description="Scan the training patients' mammograms with MODEL, add the highest-scoring windows that "
                    "hold no cluster as negatives, retrain, and repeat while the validation patients' "
                    "sensitivity at 1 false positive per image improves. Writes OUT/model.npz (with the "
                    "operating point chosen on the validation patients) and OUT/mining.json.")
    p.add_argument("patches", help="the patch store MODEL was trained on (.npz from an INbreast-layout folder)")
    p.add_argument("model", help="the trained model (RUN_DIR/model.npz)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for model.npz and mining.json")
    p.add_argument("--source", default=None, help="the store's INbreast-layout folder (default: where it was made)")
    p.add_argument("--rounds", type=positive_int, default=DEFAULT_ROUNDS, help=f"at most (default {DEFAULT_ROUNDS})")
    p.add_argument("--round-epochs", type=positive_int, default=ROUND_EPOCHS,
                   help=f"epochs per round, continuing from the model (default {ROUND_EPOCHS})")
    p.add_argument("--from-scratch", type=positive_int, default=None, metavar="EPOCHS",
                   help="retrain from new weights for EPOCHS each round instead of continuing")
    p.add_argument("--fp-per-image", type=positive_float, default=1.0,
                   help="false positives per image of the operating point (default 1)")
    add_backend_option(p)
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    try:
        store = open_patches(args.patches)
        model = ShallowCNN.load(args.model, backend=args.backend)
        out = check_writable_dir(args.output)
        config = TrainConfig(epochs=args.from_scratch or args.round_epochs, backend=args.backend)
        mining = MiningConfig(rounds=args.rounds, round_epochs=args.round_epochs,
                              from_scratch=args.from_scratch is not None, target_fp_per_image=args.fp_per_image)
        record = mine(store, args.source or store.metadata.get("source"), model, out, config, mining,
                      verbose=not args.quiet)
    except TrainingDiverged as e:
        raise CommandError(f"training diverged: {e}", status=1) from None
    except (StoreError, PatchError, OutputError, BackendUnavailable, ValueError, OSError) as e:
        raise CommandError(e) from None
    print(f"kept round {record['best_round']}: {out / 'model.npz'}")
    return 0
