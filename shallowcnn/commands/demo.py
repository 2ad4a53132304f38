"""``shallowcnn demo``: the whole job on the built-in phantom, in one folder (:mod:`shallowcnn.demo`)."""
from __future__ import annotations

from ..data.phantom import parse_size
from ..demo import DEMO_EPOCHS, run_demo
from ..kernels import BackendUnavailable
from ..mining import DEFAULT_ROUNDS
from ..train import TrainingDiverged
from .common import CommandError, add_backend_option, non_negative_int, positive_int, refusing


def add_command(subparsers):
    p = subparsers.add_parser(
        "demo", help="the whole job on the built-in phantom: phantom, patches, train, evaluate, scan",
        description="Generate synthetic mammograms, cut and split patches, train the network, "
                    "evaluate it on the test patients and scan a whole mammogram, all into one "
                    "folder with a report.md that links every figure.")
    p.add_argument("-o", "--output", default="shallowcnn_demo", help="output folder (default ./shallowcnn_demo)")
    p.add_argument("--cases", type=positive_int, default=None, help="phantom patients (default: the phantom's default)")
    p.add_argument("--epochs", type=positive_int, default=DEMO_EPOCHS, help=f"training epochs (default {DEMO_EPOCHS})")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for everything, >= 0 (default 0)")
    add_backend_option(p)
    p.add_argument("--size", type=refusing(parse_size), default="demo",
                   help="phantom image size: WIDTHxHEIGHT, demo or full (default demo)")
    p.add_argument("--mine-rounds", type=non_negative_int, default=DEFAULT_ROUNDS,
                   help=f"hard-negative mining rounds, 0 for none (default {DEFAULT_ROUNDS})")
    p.add_argument("--no-scan", action="store_true", help="skip the whole-mammogram scan")
    p.add_argument("--quiet", action="store_true", help="less output")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    try:
        run_demo(args.output, args.cases, args.epochs, args.seed, args.backend, not args.no_scan, not args.quiet,
                 args.size, args.mine_rounds)
    except TrainingDiverged as e:
        raise CommandError(f"training diverged: {e}", status=1) from None
    except (ValueError, FileExistsError, OSError, BackendUnavailable) as e:
        raise CommandError(e) from None
    return 0
