"""Finishing the source deletions of migrators that died after their marks committed (from
the cleanup journals written before each commit)."""

from __future__ import annotations

import logging
from pathlib import Path

from ._journal import iter_orphan_journals
from ._source_access import SourceAccess
from ._source_db import SourceDatabase
from ._verifier import brief

__all__ = ["recover_cleanups"]

log = logging.getLogger("des_migrate")


def recover_cleanups(db: SourceDatabase, state_dir: Path, sources: SourceAccess) -> int:
    """Delete the sources listed in orphaned journals whose rows are archived; how many."""
    deleted = 0
    try:
        journals = list(iter_orphan_journals(state_dir))
    except OSError as exc:
        log.error("cannot read the cleanup journals: %s", exc)
        return 0
    for journal in journals:
        try:
            archived = db.archived_among(u for u, _ in journal.entries)
        except Exception as exc:  # noqa: BLE001  (retried next cycle)
            log.error("cannot check journal %s: %s", journal.path, brief(exc))
            journal.close(remove=False)
            continue
        todo = [(u, s) for u, s in journal.entries if u in archived]
        log.info(
            "finishing cleanup journal %s: %d of %d rows archived",
            journal.path.name,
            len(todo),
            len(journal.entries),
        )
        n, complete = sources.delete(todo)
        deleted += n
        journal.close(remove=complete)
    return deleted
