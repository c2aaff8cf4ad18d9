"""The error hierarchy of des-migrate, split by who is at fault."""

from __future__ import annotations


class MigrateError(Exception):
    """Base class of every error raised by des-migrate."""


class ConfigError(MigrateError, ValueError):
    """A configuration value is missing or wrong; the message names the key and what it expects."""

    def __init__(
        self,
        key: str,
        expected: str,
        got: object = None,
        *,
        missing: bool = False,
        message: str | None = None,
    ):
        if message is not None:  # a whole message of its own (an unknown key, a bad file)
            pass
        elif missing:
            message = f"config key {key!r} is required: expected {expected}"
        else:
            message = f"config key {key!r}: expected {expected}, got {got!r}"
        super().__init__(message)
        self.key = key
        self.expected = expected
        self.got = got


class SourceDatabaseError(MigrateError):
    """The source database cannot be reached or does not have the configured table/columns."""


class SchemaMismatch(SourceDatabaseError):
    """The configured table or a configured column does not exist (a configuration error)."""


class StepFailed(MigrateError):
    """A migration step (validate, pack, verify, mark, cleanup) failed for a whole batch."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step} failed: {reason}")
        self.step = step
        self.reason = reason


class MissingDatabase(SourceDatabaseError):
    """The database URL names a SQLite file that does not exist (a configuration error: no
    empty database is created in its place)."""
