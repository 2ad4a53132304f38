"""Short messages about bad input: a damaged file must not flood the terminal.

A 309-digit coordinate or a megabyte-long "name" read from a hostile file would otherwise
be printed in full; so would 100,000 identical notes. Every error and summary that quotes
what it read goes through these helpers.
"""
from __future__ import annotations

MAX_QUOTED = 40        # characters of a quoted value
MAX_LISTED = 20        # lines of a list before "... and N more"


def short(value, limit: int = MAX_QUOTED) -> str:
    """``repr(value)``, cut to ``limit`` characters with "..." when longer."""
    return cap(repr(value), limit)


def cap(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters with "..." when longer."""
    text = str(text)
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


def number(value) -> str:
    """A number as at most 6 significant digits (``1e+308``, not 309 digits)."""
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError, OverflowError):
        return short(value)


def listed(lines, limit: int = MAX_LISTED, what: str = "more") -> list:
    """The first ``limit`` of ``lines``, then one line saying how many were left out."""
    lines = list(lines)
    if len(lines) <= limit:
        return lines
    return lines[:limit] + [f"  ... and {len(lines) - limit:,} {what}"]
