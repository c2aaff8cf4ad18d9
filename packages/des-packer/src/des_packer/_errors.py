"""The error hierarchy of des-packer, split by who has to act.

``ManifestError``: the manifest (an entry's fields) is wrong; ``PackConfigError``: the options
or the output location are wrong; ``EntryFailed``: one file could not be packed (its source is
missing, unreadable, or not the size the manifest says); ``PackAborted``: packing stopped on a
failure (``on_error="fail"``) and carries the report of what was done before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._report import PackReport


class PackerError(Exception):
    """Base class of every error raised by des-packer."""


class ManifestError(PackerError, ValueError):
    """An entry of the manifest is invalid; the message names the entry and the fix."""

    def __init__(self, message: str, *, where: str = "", uid: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.uid = uid
        self.reason = message


class PackConfigError(PackerError, ValueError):
    """An option or the output location is invalid; the message names the option."""


class EntryFailed(PackerError):
    """One file could not be packed (missing or unreadable source, wrong size)."""

    def __init__(self, uid: str, reason: str) -> None:
        super().__init__(f"uid {uid!r}: {reason}")
        self.uid = uid
        self.reason = reason


class PackAborted(PackerError):
    """Packing stopped at the first failure; ``report`` says what was done before it."""

    def __init__(self, message: str, report: PackReport) -> None:
        super().__init__(message)
        self.report = report
