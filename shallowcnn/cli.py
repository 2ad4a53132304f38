"""The ``shallowcnn`` command line: one sub-command per module of :mod:`shallowcnn.commands`.

Each module listed in :data:`COMMAND_MODULES` defines ``add_command(subparsers)``,
which adds its parser and sets ``func`` (its ``run_command``, called with the parsed
arguments; its return value is the exit status). Options are checked when the line is
parsed (:mod:`shallowcnn.commands.common`); a command that cannot go on raises
:class:`~shallowcnn.commands.common.CommandError`, printed here in argparse's format,
``shallowcnn COMMAND: error: ...``. Nothing below ``commands/`` knows of argparse.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from . import __version__
from .commands.common import CommandError
from .data.problems import ReaderWarning

COMMAND_MODULES = [
    "shallowcnn.commands.gradcheck",
    "shallowcnn.commands.phantom",
    "shallowcnn.commands.patches",
    "shallowcnn.commands.train",
    "shallowcnn.commands.mine",
    "shallowcnn.commands.evaluate",
    "shallowcnn.commands.scan",
    "shallowcnn.commands.demo",
    "shallowcnn.commands.export",
    "shallowcnn.commands.import_keras",
    "shallowcnn.commands.serve",
    "shallowcnn.commands.tune",
    "shallowcnn.commands.search",
    "shallowcnn.commands.bundle",
    "shallowcnn.commands.grade",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shallowcnn",
        description="A hand-written shallow CNN for microcalcification clusters in mammograms.",
    )
    parser.add_argument("--version", action="version", version=f"shallowcnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_command(subparsers)
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
    parser = build_parser()
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
