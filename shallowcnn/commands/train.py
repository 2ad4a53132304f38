"""``shallowcnn train``: train on a patch store into a run folder (:func:`shallowcnn.train.train_run`)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..data.patches import PatchError, open_patches
from ..kernels import BackendUnavailable
from ..storage import OutputError, StoreError
from ..train import TrainConfig, TrainingDiverged, train_run
from .common import (CommandError, add_backend_option, fraction_below_one, non_negative_int, positive_float,
                     positive_int)

# (option, TrainConfig field) of the options a resume must repeat
CONFIG_OPTIONS = (("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--lr", "lr"), ("--beta1", "beta1"),
                  ("--beta2", "beta2"), ("--eps", "eps"), ("--p-drop", "p_drop"), ("--seed", "seed"),
                  ("--backend", "backend"))
def add_command(subparsers):
    d = TrainConfig()
    p = subparsers.add_parser(
        "train", help="train the network on a patch store (the paper's recipe by default)",
        description="Train ShallowCNN on the train split of a patch store, validating after every "
                    "epoch and keeping the epoch with the best validation accuracy as RUN_DIR/model.npz. "
                    "Also writes config.json, history.csv, curves.png and checkpoint.npz (after every "
                    "epoch, atomically). Ctrl-C stops cleanly; --resume continues from the checkpoint.")
    p.add_argument("patches", help="patch store (.npz) made by 'shallowcnn patches'")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="folder for the run's files")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"epochs (default {d.epochs}, the paper's)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"mini-batch size (default {d.batch_size})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--beta1", type=fraction_below_one, default=d.beta1,
                   help=f"Adam beta1, in [0, 1) (default {d.beta1})")
    p.add_argument("--beta2", type=fraction_below_one, default=d.beta2,
                   help=f"Adam beta2, in [0, 1) (default {d.beta2})")
    p.add_argument("--eps", type=positive_float, default=d.eps, help=f"Adam epsilon, > 0 (default {d.eps}, as Keras)")
    p.add_argument("--p-drop", type=fraction_below_one, default=d.p_drop,
                   help=f"dropout probability, in [0, 1) (default {d.p_drop})")
    p.add_argument("--seed", type=non_negative_int, default=d.seed,
                   help="seed for weights, shuffling and dropout, >= 0 (default 0)")
    add_backend_option(p, default=d.backend)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run_command)


def resume_command(args) -> str:
    """The command that continues this run: the same store, folder and every option the
    user changed from its default (so the settings check of :meth:`Trainer.resume` passes)."""
    defaults = TrainConfig()
    words = ["shallowcnn", "train", args.patches, "-o", args.output]
    for option, name in CONFIG_OPTIONS:
        if getattr(args, name) != getattr(defaults, name):
            words += [option, str(getattr(args, name))]
    if args.quiet:
        words.append("--quiet")
    return shlex.join(words + ["--resume"])


def run_command(args) -> int:
    config = TrainConfig(**{name: getattr(args, name) for _, name in CONFIG_OPTIONS})
    try:
        trainer = train_run(open_patches(args.patches), args.output, config, resume=args.resume,
                            verbose=not args.quiet)
    except KeyboardInterrupt:
        kept = (f"the checkpoint of the last finished epoch is in {args.output}"
                if (Path(args.output) / "checkpoint.npz").exists() else "no epoch had finished")
        print(f"\ninterrupted: {kept}; continue with:\n  {resume_command(args)}", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        raise CommandError(f"training diverged: {e}", status=1) from None
    except FileExistsError as e:
        raise CommandError(f"{e} (--resume continues it)") from None
    except (StoreError, PatchError, OutputError, BackendUnavailable, ValueError, FileNotFoundError) as e:
        raise CommandError(e) from None
    except OSError as e:   # the disk filled up or the folder went away during the run
        raise CommandError(f"cannot write the run's files: {e}", status=1) from None
    best = trainer.best
    print(f"best epoch {best['epoch']} (validation accuracy {best['val_accuracy']:.4f}) saved as "
          f"{Path(args.output) / 'model.npz'}")
    return 0
