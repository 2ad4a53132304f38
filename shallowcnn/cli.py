"""The ``shallowcnn`` command line: one sub-command per module of :mod:`shallowcnn.commands`.

Each module listed in :data:`COMMANDS` defines ``add_command(subparsers)``,
which adds its parser and sets ``func`` (its ``run_command``, called with the parsed
arguments; its return value is the exit status). Only the module of the command that runs
is imported: the others would cost start-up time (training, search, Keras import, ...).
Options are checked when the line is parsed (:mod:`shallowcnn.commands.common`); a
command that cannot go on raises :class:`~shallowcnn.commands.common.CommandError`,
printed here in argparse's format, ``shallowcnn COMMAND: error: ...``. Nothing below
``commands/`` knows of argparse.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from . import __version__
from .commands.common import CommandError
from .data.problems import ReaderWarning
from .kernels import thread_placement, vector_width

# name -> (module, one-line help). The help is kept here too (tests/test_cli_train_evaluate.py
# checks that it is the module's own) so that `shallowcnn --help` lists every command
# without importing any: a command's module, and everything it imports, loads only when it runs.
COMMANDS = {
    "gradcheck": ("shallowcnn.commands.gradcheck", "check every backward pass against centred differences (float64)"),
    "phantom": ("shallowcnn.commands.phantom", "write synthetic mammograms in the INbreast layout"),
    "patches": ("shallowcnn.commands.patches", "cut 144 x 144 patches from an INbreast/phantom folder or a PNG folder"),
    "train": ("shallowcnn.commands.train", "train the network on a patch store (the paper's recipe by default)"),
    "mine": ("shallowcnn.commands.mine",
             "hard-negative mining: retrain on the cluster-free windows a scan scores highest"),
    "evaluate": ("shallowcnn.commands.evaluate",
                 "accuracy, sensitivity, specificity, ROC AUC... of a model on a patch store"),
    "scan": ("shallowcnn.commands.scan", "scan whole mammograms: probability heatmap, detected clusters, FROC"),
    "demo": ("shallowcnn.commands.demo",
             "the whole job on the built-in phantom: phantom, patches, train, evaluate, scan"),
    "export": ("shallowcnn.commands.export", "write a trained model as ONNX (any runtime) or a PyTorch state_dict"),
    "import-keras": ("shallowcnn.commands.import_keras",
                     "turn the paper's Keras model (.keras/.h5) or a PyTorch twin state_dict into model.npz"),
    "serve": ("shallowcnn.commands.serve",
              "web page and JSON API to scan mammograms in a browser (needs the [web] extra)"),
    "tune": ("shallowcnn.commands.tune", "time the CPU kernel variants on this machine and remember the fastest"),
    "search": ("shallowcnn.commands.search", "random hyperparameter search (the paper's Table 1) on a Dask cluster"),
    "bundle": ("shallowcnn.commands.bundle",
               "retrain the phantom model bundled with 'shallowcnn serve' (for maintainers)"),
    "grade": ("shallowcnn.commands.grade",
              "grade student notebooks (tutorials/exercises/*.ipynb): a table and a CSV"),
}


def chosen_command(argv) -> str | None:
    """The command named on the line (its first word that is not an option), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line (``command`` None), or with only ``command``'s options:
    the others are listed by name and help, and their modules are not imported."""
    parser = argparse.ArgumentParser(
        prog="shallowcnn",
        description="A hand-written shallow CNN for microcalcification clusters in mammograms.",
    )
    parser.add_argument("--version", action="version", version=f"shallowcnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_line) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(module).add_command(subparsers)
        else:
            subparsers.add_parser(name, help=help_line)
    return parser


def _caused_by_ctrl_c(error: BaseException) -> bool:
    """True when a KeyboardInterrupt is anywhere in the chain of causes of ``error``."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(chosen_command(argv))
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    show_library_warning = warnings.showwarning

    def show_warning(message, category, filename, lineno, file=None, line=None):
        # A warning about one of the user's files is a line like an error's, not a
        # library's source line (data.problems.warnings_named puts the file in it).
        if issubclass(category, ReaderWarning):
            print(f"shallowcnn {args.command}: warning: {message}", file=sys.stderr)
        else:
            show_library_warning(message, category, filename, lineno, file, line)

    try:
        vector_width.requested()          # a bad SHALLOWCNN_VECTOR_WIDTH is named before any work starts
        thread_placement.user_choice()    # ... and a bad SHALLOWCNN_PIN_THREADS
    except ValueError as e:
        print(f"shallowcnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    warnings.showwarning = show_warning
    try:
        status = args.func(args)
    except CommandError as e:
        print(f"shallowcnn {args.command}: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemError as e:
        # Ctrl-C inside a compiled (Numba) function surfaces as a SystemError caused by
        # the KeyboardInterrupt, sometimes through another SystemError ("CPUDispatcher(...)
        # returned a result with an exception set", caused by "_numba_unpickle returned
        # ..."). Training and evaluate avoid this (train.StopOnCtrlC); other commands land here.
        if _caused_by_ctrl_c(e):
            print("interrupted", file=sys.stderr)
            return 130
        raise
    finally:
        warnings.showwarning = show_library_warning
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
