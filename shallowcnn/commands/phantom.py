"""``shallowcnn phantom``: write synthetic mammograms in the INbreast layout (:mod:`shallowcnn.data.phantom`)."""
from __future__ import annotations

import time

from ..data.phantom import DEFAULT_CASES, DEFAULT_SIZE, FULL_SIZE, generate_phantom, parse_size, summarise
from .common import CommandError, non_negative_int, positive_int, refusing


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "phantom", help="write synthetic mammograms in the INbreast layout",
        description="Write AllDICOMs/, AllXML/ and INbreast.csv with synthetic mammograms, "
                    "annotated like INbreast (microcalcification clusters, masses, ...).")
    parser.add_argument("out", help="folder to create (AllDICOMs/, AllXML/, INbreast.csv inside)")
    parser.add_argument("--cases", type=positive_int, default=DEFAULT_CASES,
                        help=f"number of patients, each with 2 or 4 images (default {DEFAULT_CASES})")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed, >= 0; same seed, same files (default 0)")
    parser.add_argument("--size", type=refusing(parse_size), default="demo",
                        help=f"image size WIDTHxHEIGHT in pixels of 0.07 mm, 'demo' "
                             f"({DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}, default) or 'full' "
                             f"({FULL_SIZE[0]}x{FULL_SIZE[1]}, as INbreast); at most 16384 a side")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the images of an existing phantom folder (never a real one)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_command)


def run_command(args) -> int:
    start = time.perf_counter()
    try:
        images = generate_phantom(args.out, cases=args.cases, seed=args.seed, size=args.size,
                                  overwrite=args.overwrite, verbose=not args.quiet)
    except FileExistsError as e:
        hint = "" if args.overwrite else " (--overwrite does that)"
        raise CommandError(f"{e}{hint}") from None
    except (ValueError, OSError) as e:
        raise CommandError(e) from None
    print(f"wrote {args.out}: {summarise(images)} in {time.perf_counter() - start:.1f} s")
    return 0
