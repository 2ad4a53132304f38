"""``shallowcnn patches``: cut a patch store from a folder and draw its figures.

The work is :func:`shallowcnn.data.patches.make_patches`; this command adds the
paper's Fig. 2 and Fig. 3 next to the store (:func:`shallowcnn.plots.plot_store_figures`),
so that the data package never draws.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..data.inbreast import InbreastError
from ..data.patches import PatchError, make_patches
from ..data.split import DEFAULT_FRACTIONS
from ..storage import OutputError, StoreError, check_writable_dir
from .common import CommandError, non_negative_int, positive_int, probability

PAPER_SPLIT_WARNING = ("warning: --split-mode paper splits augmented patches at random, as the paper did: "
                       "reflections and overlapping windows of one breast end up in both training and test "
                       "sets, so test scores are optimistic (see the leakage audit below)")


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "patches", help="cut 144 x 144 patches from an INbreast/phantom folder or a PNG folder",
        description="Cut 1 cm^2 patches (144 x 144 at 0.07 mm), augment them as the paper, split "
                    "train/val/test and save one .npz store with figures next to it.")
    parser.add_argument("source", help="INbreast-layout folder (AllDICOMs/, AllXML/) or a folder with 0/ and 1/ "
                                       "subfolders of PNG patches")
    parser.add_argument("-o", "--out", default="patches.npz", help="output store (default patches.npz)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed for offsets, negatives, split, >= 0 (default 0)")
    parser.add_argument("--split-mode", choices=("patient", "paper"), default="patient",
                        help="'patient' (default): split by patient before augmentation; 'paper': random "
                             "split of augmented patches as in the paper (leaks between splits)")
    parser.add_argument("--fractions", type=probability, nargs=3, default=DEFAULT_FRACTIONS,
                        metavar=("TRAIN", "VAL", "TEST"),
                        help="split shares, each in [0, 1], summing to 1 (default 0.64 0.16 0.20)")
    parser.add_argument("--per-cluster", type=positive_int, default=20,
                        help="positive windows (different offsets) per cluster, >= 1 (default 20)")
    parser.add_argument("--negatives-per-image", type=non_negative_int, default=30,
                        help="at most this many negative windows per image, >= 0 (default 30)")
    parser.add_argument("--no-augment", action="store_true", help="keep only the original patches")
    parser.add_argument("--no-balance", action="store_true", help="do not equalise the classes per split")
    parser.add_argument("--no-figures", action="store_true", help="do not write the Fig. 2/3 PNGs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.set_defaults(func=run_command)


def run_command(args) -> int:
    if abs(sum(args.fractions) - 1) > 1e-6:
        raise CommandError(f"argument --fractions: {' + '.join(f'{f:g}' for f in args.fractions)} must sum to 1")
    if args.split_mode == "paper":
        print(PAPER_SPLIT_WARNING, file=sys.stderr)
    try:
        if Path(args.out).is_dir():
            raise OutputError(f"{args.out}: is a folder; -o names the store file to write")
        check_writable_dir(Path(args.out).parent)
        store = make_patches(args.source, args.out, seed=args.seed, split_mode=args.split_mode,
                             fractions=args.fractions, per_cluster=args.per_cluster,
                             negatives_per_image=args.negatives_per_image, augment_patches=not args.no_augment,
                             balance=not args.no_balance, verbose=not args.quiet)
        if not args.no_figures:
            from ..plots import plot_store_figures    # matplotlib loads only when figures are drawn
            plot_store_figures(store, args.out)
    except (PatchError, InbreastError, StoreError, OutputError, OSError) as e:
        raise CommandError(e) from None
    if not args.quiet:
        print(f"wrote {args.out}")
    return 0
