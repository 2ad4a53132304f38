"""What every command shares: checked option values, the shared options, and CommandError.

Checked values: a bad option is refused when the command line is read.

argparse calls ``type=`` on every value and, on ``ArgumentTypeError``, prints the usage
and ``argument --eps: must be a positive finite number, got 0`` and exits with status 2,
before any file is touched. So ``--eps 0`` (a model full of NaN), ``--fractions nan`` or
``--nms -5`` never reach the code that would misuse them::

    parser.add_argument("--eps", type=positive_float, ...)
    parser.add_argument("--beta1", type=fraction_below_one, ...)

Options several commands take (``--backend``, the Dask options) are added by one function
each, so they are spelled and checked the same everywhere. A command that cannot go on
raises :class:`CommandError`; ``cli.main`` prints it as ``shallowcnn COMMAND: error: ...``
(argparse's own format) and exits with its status.
"""
from __future__ import annotations

import argparse
import math

from ..kernels import BACKENDS


class CommandError(Exception):
    """A command stops: ``message`` goes to stderr as ``shallowcnn COMMAND: error: message``
    and the process exits with ``status`` (2: bad input or options; 1: the work failed;
    3: an optional package is missing)."""

    def __init__(self, message, status: int = 2):
        super().__init__(str(message))
        self.status = status


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text[:40]}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None


def _checked(convert, accept, requirement: str, doc: str):
    """An argparse ``type``: ``convert`` the text, then refuse it unless ``accept(value)``."""
    def parse(text: str):
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text[:40]}")
        return value
    parse.__doc__ = doc
    return parse


positive_float = _checked(_float, lambda v: v > 0, "a positive number",
                          "A finite number > 0 (learning rate, Adam epsilon, pixel size).")
non_negative_float = _checked(_float, lambda v: v >= 0, "zero or more", "A finite number >= 0 (distances in pixels).")
probability = _checked(_float, lambda v: 0 <= v <= 1, "in [0, 1]", "A number in [0, 1] (thresholds, fractions).")
fraction_below_one = _checked(_float, lambda v: 0 <= v < 1, "in [0, 1)", "A number in [0, 1) (Adam's betas, dropout).")
positive_int = _checked(_int, lambda v: v >= 1, "a whole number of at least 1",
                        "A whole number >= 1 (epochs, batch size, stride, counts).")
non_negative_int = _checked(_int, lambda v: v >= 0, "a whole number of at least 0",
                            "A whole number >= 0 (seeds, counts that may be zero).")
upload_mib = _checked(_float, lambda v: 0 < v < 2**20, f"in (0, {2**20}) MiB",
                     "An upload size limit in MiB, above 0 and below 1 TiB.")
tcp_port = _checked(_int, lambda v: 0 < v < 65536, "a TCP port in 1..65535", "A TCP port, 1 to 65535.")


def whole_number_in(low: int, high: int, doc: str):
    """An argparse ``type`` for a whole number in ``low..high`` (a bound given before any
    memory or time is spent on the value: trial counts, image sizes)."""
    return _checked(_int, lambda v: low <= v <= high, f"a whole number in {low}..{high:,}", doc)


def refusing(parse):
    """An argparse ``type`` from a function that raises ValueError with its own message
    (argparse would otherwise print only "invalid parse value")."""
    def checked(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    checked.__doc__ = parse.__doc__
    return checked


def scheduler_address(text: str) -> str:
    """A Dask scheduler address that parses: tcp://HOST:PORT, HOST:PORT or HOST."""
    from ..dask_cluster import split_scheduler_address

    try:
        split_scheduler_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_backend_option(parser, default: str = "auto", choices=BACKENDS + ("auto",), what: str = "") -> None:
    """``--backend``: which kernels run (:data:`shallowcnn.kernels.BACKENDS`, or auto)."""
    parser.add_argument("--backend", default=default, choices=choices,
                        help=f"{what or 'kernels'}: {', '.join(choices[:-1])} or {choices[-1]} (default {default})")


def add_dask_options(parser, title: str, scheduler_note: str = "", workers_default: str = "",
                     threads_per: str = "task") -> None:
    """``--scheduler``, ``--workers``, ``--numba-threads``: spread the work over Dask workers."""
    group = parser.add_argument_group(title)
    group.add_argument("--scheduler", type=scheduler_address, default=None, metavar="ADDRESS",
                       help=f"address of a running Dask scheduler (tcp://host:8786){scheduler_note}")
    group.add_argument("--workers", type=positive_int, default=None,
                       help=f"local Dask cluster of this many worker processes (default: {workers_default})")
    group.add_argument("--numba-threads", type=positive_int, default=None,
                       help=f"Numba threads per {threads_per} (default: cores // workers locally, 1 on --scheduler)")
