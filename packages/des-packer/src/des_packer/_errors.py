"""The error hierarchy of des-packer, split by who has to act.

``ManifestError``: the manifest (an entry's fields) is wrong; ``PackConfigError``: the options
or the output location are wrong; ``EntryFailed``: one file could not be packed (its source is
missing, unreadable, or not the size the manifest says); ``PackAborted``: packing stopped on a
failure (``on_error="fail"``) and carries the report of what was done before it;
``OutputFailed``: the same, when writing the output failed (disk full, read-only, not a
directory, ...), its message naming the path and the fix (``describe_os_error``).
"""

from __future__ import annotations

import errno
import os
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


class OutputFailed(PackAborted):
    """Writing the output failed with an operating-system error (disk full, read-only file
    system, a file where a directory should be, no permission); the message names the path
    and the fix. Shards finished before it stay, and no temporary file is left behind."""


_FIXES = {
    errno.ENOSPC: "free some space there or choose another --output-dir",
    errno.EDQUOT: "free some space, raise the quota or choose another --output-dir",
    errno.EROFS: "remount it read-write or choose another --output-dir",
    errno.EACCES: "give this user write permission there or choose another --output-dir",
    errno.EPERM: "give this user write permission there or choose another --output-dir",
    errno.EISDIR: "move that directory away or choose another --output-dir",
    errno.ENAMETOOLONG: "choose a shorter --output-dir",
}


def describe_os_error(exc: OSError, where: str) -> str:
    """``exc`` as one line naming the path (the error's own file name, else ``where``, the
    output) and the fix, for an error met while writing the output."""
    path = exc.filename if isinstance(exc.filename, str) else where
    if os.path.basename(path).startswith(".des-tmp."):  # _dest.TEMP_PREFIX: removed by now
        path = os.path.dirname(path)
    what = exc.strerror or str(exc)
    name = errno.errorcode.get(exc.errno or 0)
    cause = f"{what} ({name})" if name else what
    if exc.errno == errno.ENOTDIR:
        blocker = _file_in_the_way(path)
        if blocker is not None:
            return (
                f"cannot write {path}: {blocker} is a file, not a directory ({name}); move it "
                "away or choose another --output-dir"
            )
        return f"cannot write {path}: {cause}; give --output-dir a directory path"
    fix = _FIXES.get(exc.errno or 0, "check the output location, then run again")
    return f"cannot write {path}: {cause}; {fix}"


def _file_in_the_way(path: str) -> str | None:
    """The first ancestor of ``path`` that exists and is not a directory, if any."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        here = os.sep.join(parts[:i])
        if os.path.lexists(here) and not os.path.isdir(here):
            return here
        if not os.path.exists(here):
            return None
    return None
