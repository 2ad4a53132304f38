"""Errors and the problem list of the INbreast readers.

Bad input never ends in a bare traceback: every failure of a reader is an
:class:`InbreastError` whose message starts with the file name. Callers that walk a whole
folder catch it, skip the case and record it in a :class:`Problems` list, which prints a
summary at the end (capped in length, so 100,000 odd names cannot flood it).
A warning of a third-party reader (pydicom, Pillow) about a file is issued again by
:func:`warnings_named` as a :class:`ReaderWarning` that names the file.
"""
from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..messages import cap, listed


class ReaderWarning(UserWarning):
    """Something odd but usable in a file; ``str(warning)`` starts with the file's path."""


@contextmanager
def warnings_named(path):
    """Issue the warnings raised inside again, each once, as :class:`ReaderWarning` naming ``path``.

    pydicom and Pillow warn about a file (a value too long for its VR, a damaged chunk) by
    naming a line of their own source, which tells the user nothing about which of their
    files it is. Warnings of an error that ends the read are dropped with it: the error
    names the file. (``catch_warnings`` is process-wide: a warning from another thread
    during a read is re-issued with this file's name too; the server reads one at a time.)
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        text = " ".join(str(w.message).split())
        if text not in seen:
            seen.add(text)
            warnings.warn(f"{Path(path)}: {cap(text)}", ReaderWarning, stacklevel=3)

class InbreastError(ValueError):
    """A file that cannot be used; ``str(error)`` starts with the file's path.

    Attributes: ``path`` (the file) and ``reason`` (what is wrong with it).
    """

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Problems:
    """Everything that went wrong while walking a folder, kept for the final summary.

    ``skipped`` holds ``(path, reason)`` for each case that was left out; ``notes``
    holds counted facts that are not errors (images without XML, unknown ROI names).
    """

    skipped: list = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)

    def skip(self, error_or_path, reason: str | None = None) -> None:
        """Record a skipped case (from an :class:`InbreastError` or a path and reason)."""
        if isinstance(error_or_path, InbreastError):
            self.skipped.append((str(error_or_path.path), error_or_path.reason))
        else:
            self.skipped.append((str(error_or_path), str(reason)))

    def note(self, what: str, count: int = 1) -> None:
        self.notes[what] += count

    def merge(self, other: "Problems") -> None:
        self.skipped.extend(other.skipped)
        self.notes.update(other.notes)

    def summary(self) -> str:
        """Several lines: one per skipped file (path: reason), then the counted notes; each
        list stops after :data:`~shallowcnn.messages.MAX_LISTED` lines with a count of the rest."""
        lines = [f"skipped {len(self.skipped)} case(s)" + (":" if self.skipped else "")]
        lines += listed((f"  {path}: {reason}" for path, reason in self.skipped), what="more skipped")
        lines += listed((f"  {what}: {count}" for what, count in sorted(self.notes.items())),
                        what="more kinds of note")
        return "\n".join(lines)


