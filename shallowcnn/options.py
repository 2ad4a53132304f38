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


def finite_float(text: str) -> float:
    """Any finite number (NaN and infinities refused)."""
    return _float(text)


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rate, Adam epsilon, pixel size)."""
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text[:40]}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (distances in pixels)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text[:40]}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (thresholds, fractions of a window)."""
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text[:40]}")
    return value


def fraction_below_one(text: str) -> float:
    """A number in [0, 1) (Adam's betas, dropout)."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text[:40]}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (epochs, batch size, stride, counts)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text[:40]}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (seeds, counts that may be zero)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text[:40]}")
    return value
