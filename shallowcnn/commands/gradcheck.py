"""``shallowcnn gradcheck``: every backward pass against centred differences (:mod:`shallowcnn.gradcheck`)."""
from __future__ import annotations

from ..gradcheck import format_report, run_all
from ..kernels import BackendUnavailable
from ..constants import MIN_INPUT_SIDE
from .common import CommandError, add_backend_option, non_negative_int, whole_number_in


def add_command(subparsers):
    p = subparsers.add_parser(
        "gradcheck", help="check every backward pass against centred differences (float64)",
        description="Gradient check of every layer, both losses and every parameter of the "
                    "model, in float64 with centred differences. Exits with status 1 if any "
                    "relative error exceeds its bound (1e-7 smooth, 1e-5 with ReLU or max).")
    add_backend_option(p, default="numpy", what="kernels to check")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for inputs and weights, >= 0 (default 0)")
    p.add_argument("--entries", type=non_negative_int, default=40,
                   help="entries checked per array, chosen at random (default 40; 0 = all)")
    p.add_argument("--size", type=whole_number_in(MIN_INPUT_SIDE, 256, "input side"), default=21,
                   help=f"input height and width, {MIN_INPUT_SIDE}..256 (default 21)")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    try:
        rows = run_all(args.backend, args.seed, args.entries or None, args.size)
    except BackendUnavailable as e:
        raise CommandError(e) from None
    print(format_report(rows))
    failed = [r for r in rows if not r[2] <= r[3]]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
