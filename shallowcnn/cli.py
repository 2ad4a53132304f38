"""The ``shallowcnn`` command line: one sub-command per module.

Each module listed in :data:`COMMAND_MODULES` defines ``add_command(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed arguments; its
return value is the exit status). Keeping the options beside the code they drive
means one file per concept here too.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

COMMAND_MODULES = [
    "shallowcnn.gradcheck",
    "shallowcnn.data.phantom",
    "shallowcnn.patches_command",
    "shallowcnn.train",
    "shallowcnn.evaluate",
    "shallowcnn.scan_command",
    "shallowcnn.demo",
    "shallowcnn.interop.onnx_export",
    "shallowcnn.interop.keras_import",
    "shallowcnn.web.serve",
    "shallowcnn.kernels.autotune",
    "shallowcnn.search.command",
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
    try:
        status = args.func(args)
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
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
