"""``shallowcnn search``: the random search of :mod:`shallowcnn.search` on Dask."""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from ..dask_cluster import DaskSettings, DaskUnavailable
from ..search.driver import SearchSettings, run_search
from ..search.space import SearchSpace, SpaceError, load_space
from ..storage import StoreError
from .common import (CommandError, add_backend_option, add_dask_options, non_negative_int, positive_int,
                     whole_number_in)

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
    add_backend_option(p, default="numba", choices=("numba", "numpy", "cuda"),
                       what="kernels each trial trains with (numba by default: trials are spread over CPU cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dask_options(p, "where the trials run (default: a local Dask cluster)", workers_default="one per core",
                     threads_per="trial")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise CommandError(f"-o {args.output}: exists and is not a folder; the search writes a folder of files")
    try:
        space = load_space(args.space) if args.space else SearchSpace()
        settings = SearchSettings(args.trials, args.epochs, args.seed, space, args.backend)
        cluster = DaskSettings(args.scheduler, args.workers, args.numba_threads)
        outcome = run_search(args.patches, args.output, settings, cluster, verbose=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished trials are recorded in {args.output}; run the same command "
              f"again to resume", file=sys.stderr)
        return 130
    except DaskUnavailable as e:
        raise CommandError(e, status=3) from None
    except ConnectionError as e:
        raise CommandError(f"--scheduler: {e}" if args.scheduler else e) from None
    except (SpaceError, StoreError, ValueError, OSError) as e:
        raise CommandError(e) from None          # an OSError names its path (storage.atomic_open)
    best = outcome.best
    print(f"{len(outcome.ran)} trials run in {outcome.wall_seconds:.0f} s; "
          f"{len(outcome.records)} recorded in {args.output}")
    if best is None:
        print("no trial finished with status ok; see report.md")
        return 1
    print(f"best: trial {best['trial']}: conv {best['conv1_filters']}/{best['conv2_filters']} of "
          f"{best['kernel_size']}x{best['kernel_size']}, lr {best['lr']:.2e}, batch {best['batch_size']}, "
          f"dropout {best['p_drop']:.2f}, {best['n_params']:,} parameters: validation accuracy "
          f"{best['val_accuracy']:.4f} at epoch {best['best_epoch']}; model {args.output}/best/model.npz")
    return 0
