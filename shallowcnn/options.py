"""Checked command-line values: a bad option is refused when the command line is read.

argparse calls ``type=`` on every value and, on ``ArgumentTypeError``, prints the usage
and ``argument --eps: must be a positive finite number, got 0`` and exits with status 2,
before any file is touched. So ``--eps 0`` (a model full of NaN), ``--fractions nan`` or
``--nms -5`` never reach the code that would misuse them::

    parser.add_argument("--eps", type=positive_float, ...)
    parser.add_argument("--beta1", type=fraction_below_one, ...)
"""
from __future__ import annotations

import argparse
import math


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
    from .dask_cluster import split_scheduler_address

    try:
        split_scheduler_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
