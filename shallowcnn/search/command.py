"""``shallowcnn search``: the command line of the random search (see driver.py)."""
from __future__ import annotations

import argparse
import sys
import textwrap

from ..options import non_negative_int, positive_int, scheduler_address, whole_number_in
from ..storage import StoreError
from .space import SearchSpace, SpaceError, load_space

MAX_TRIALS = 100_000     # a search of the paper's kind runs tens to hundreds


_DESCRIPTION = "\n\n".join(textwrap.fill(paragraph, 79) for paragraph in (
    "Random search (Bergstra and Bengio) over the network's sizes and training settings, as the paper "
    "chose its network. Each trial trains with the same trainer as 'shallowcnn train' on the train "
    "split, keeps its best validation-accuracy epoch, and is ranked by that accuracy. Trials run on "
    "Dask: a local cluster (one worker process per core) by default, or an existing cluster with "
    "--scheduler.",
    "Writes OUT/trials.csv and trials.json (one row per trial), models/NNNN.npz, best/model.npz, "
    "search.png and report.md. Running the same command again resumes: finished trials are skipped; "
    "a larger --trials adds trials.",
    "Default search space; change it with --space FILE.json or FILE.toml, e.g. "
    '{{"kernel_size": 9, "lr": {{"log_uniform": [1e-3, 1e-2]}}}}:',
)) + "\n{space}\n\nNeeds Dask: pip install \"shallowcnn[dask]\"."


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="random hyperparameter search (the paper's Table 1) on a Dask cluster",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_DESCRIPTION.format(space=SearchSpace().describe()))
    p.add_argument("patches", help="patch store (.npz) made by 'shallowcnn patches'")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the search's files")
    p.add_argument("--trials", type=whole_number_in(1, MAX_TRIALS, "trials"), required=True,
                   help=f"number of trials (sampled networks), at most {MAX_TRIALS:,}")
    p.add_argument("--epochs", type=positive_int, default=5, help="epochs per trial (default 5; the paper used 100)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed: the same seed samples the same trials (default 0)")
    p.add_argument("--space", default=None, metavar="FILE", help="search space file (.json or .toml); "
                   "parameters it does not name keep the defaults above")
    p.add_argument("--scheduler", type=scheduler_address, default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler (tcp://host:8786); default: a local cluster")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="local cluster: worker processes (default: one per core)")
    p.add_argument("--numba-threads", type=positive_int, default=None,
                   help="Numba threads per trial (default: cores // workers locally, 1 on --scheduler)")
    p.add_argument("--backend", default="numba", choices=("numba", "numpy", "cuda"),
                   help="kernels each trial trains with (default numba: trials are spread over CPU cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    from ..dask_cluster import DaskUnavailable
    from .driver import run_search

    try:
        space = load_space(args.space) if args.space else SearchSpace()
        outcome = run_search(args.patches, args.output, args.trials, args.epochs, args.seed, space,
                             args.scheduler, args.workers, args.numba_threads, args.backend,
                             verbose=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished trials are recorded in {args.output}; run the same command "
              f"again to resume", file=sys.stderr)
        return 130
    except DaskUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (SpaceError, StoreError, ValueError, ConnectionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)   # an OSError names its path (storage.atomic_open)
        return 2
    best = outcome.best
    print(f"{len(outcome.ran)} trials run in {outcome.wall_seconds:.0f} s; "
          f"{len(outcome.records)} recorded in {args.output}")
    if best is None:
        print("no trial finished with status ok; see report.md")
        return 1
    print(f"best: trial {best['trial']}: conv {best['conv1_filters']}/{best['conv2_filters']} of "
          f"{best['kernel_size']}x{best['kernel_size']}, lr {best['lr']:.2e}, batch {best['batch_size']}, "
          f"keep {best['keep']:.2f}, {best['n_params']:,} parameters: validation accuracy "
          f"{best['val_accuracy']:.4f} at epoch {best['best_epoch']}; model {args.output}/best/model.npz")
    return 0
