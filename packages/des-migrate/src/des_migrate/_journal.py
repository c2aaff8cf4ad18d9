"""The cleanup journal: which sources a batch will delete once its marks commit.

Deleting sources happens after the transaction that marked their rows has committed. A
migrator killed between that commit and the last deletion would leave sources behind forever
(their rows are archived, so no later batch fetches them). So before the commit the batch
writes the list to a journal file (fsynced, and locked with ``flock`` while its migrator is
alive); after the deletions the file is removed. A later cycle finds journals no live process
holds, asks the database which of their rows are archived (marked means verified), deletes
those sources and removes the journal. Rows that are not archived (the crash came before the
commit) keep their sources.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "cleanup-"
SUFFIX = ".jsonl"


@dataclass
class Journal:
    """An open journal file; the flock is held as long as ``fd`` is open."""

    path: Path
    fd: int
    entries: list[tuple[str, str]]  # (uid, source location)

    def close(self, *, remove: bool) -> None:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_journal(state_dir: Path, entries: Sequence[tuple[str, str]], seq: int) -> Journal:
    """Write and fsync a journal (and its directory entry); keep it locked."""
    state_dir.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{socket.gethostname()}-{os.getpid()}-{seq}{SUFFIX}"
    path = state_dir / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = "".join(json.dumps({"uid": u, "source": s}) + "\n" for u, s in entries)
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
        _fsync_dir(state_dir)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return Journal(path, fd, list(entries))


def iter_orphan_journals(state_dir: Path) -> Iterator[Journal]:
    """Journals whose migrator is gone (their lock can be taken), each locked while yielded."""
    if not state_dir.is_dir():
        return
    for path in sorted(state_dir.glob(f"{PREFIX}*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a live migrator holds it
            continue
        entries: list[tuple[str, str]] = []
        with os.fdopen(os.dup(fd), "r", encoding="utf-8") as fh:
            for raw in fh:
                text = raw.strip()
                if not text:
                    continue
                try:
                    rec = json.loads(text)
                    entries.append((str(rec["uid"]), str(rec["source"])))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line: that batch never committed its marks
        yield Journal(path, fd, entries)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
