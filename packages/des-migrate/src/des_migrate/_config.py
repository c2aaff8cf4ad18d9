"""Migration configuration: parse and validate a JSON/YAML document into frozen values.

Every key has a default (see the README's table); unknown keys are errors so that a typo never
silently falls back to a default. ``${NAME}`` in ``database.url`` is replaced by the environment
variable ``NAME`` so passwords stay out of the file.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ._errors import ConfigError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
CHECKSUM_ALGORITHMS = ("sha256", "md5", "crc32")
CODECS = ("none", "zstd", "lz4")
CLAIM_MODES = ("auto", "skip_locked", "none")
#: Same values as ``des_format.MAX_BLOCK_SIZE`` and ``des_format.DEFAULT_BLOCK_MEMBER_MAX``
#: (a test keeps them equal; this module does not import des-format).
MAX_BLOCK_SIZE = 4 * 1024 * 1024
DEFAULT_BLOCK_MEMBER_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where the source table lives and what its columns are called."""

    url: str = "sqlite+pysqlite:///./example.db"
    table_name: str = "files"
    schema: str | None = None
    uid_column: str = "uid"
    created_at_column: str = "created_at"
    file_location_column: str = "file_location"
    size_bytes_column: str = "size_bytes"
    archived_column: str = "archived"
    content_type_column: str | None = None
    checksum_column: str | None = None
    checksum_algorithm: str = "sha256"
    error_column: str | None = None


@dataclass(frozen=True, slots=True)
class MigrationSettings:
    """Which rows move, how many at a time, and what happens to the sources afterwards."""

    archive_age_days: float = 7
    cutoff: datetime | None = None
    batch_size: int = 20_000
    delete_source_files: bool = False
    report_file: str | None = None
    retry_failed: bool = False
    claim_mode: str = "auto"
    max_batches_per_cycle: int | None = None
    align_batches_to_days: bool = True
    state_dir: str | None = None  # None: $XDG_STATE_HOME/des-migrate/<hash of db, table, output>

    def effective_cutoff(self, now: datetime | None = None) -> datetime:
        """Rows created strictly before this instant are eligible."""
        if self.cutoff is not None:
            return self.cutoff
        now = now or datetime.now(UTC)
        return now - timedelta(days=self.archive_age_days)


@dataclass(frozen=True, slots=True)
class S3SourceConfig:
    """Reading ``s3://`` source locations."""

    enabled: bool = False
    region_name: str = "us-east-1"
    endpoint_url: str | None = None
    max_retries: int = 3
    retry_delay_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class PackerConfig:
    """Where shards go and how they are written (passed to des_packer.pack)."""

    output_dir: str = "./des_output"
    max_shard_size: int = 1_000_000_000
    n_bits: int = 8
    codec: str = "zstd"
    level: int | None = 3
    workers: int | None = None
    #: packing processes, each writing whole shards (des-packer ``processes``; None: one
    #: per CPU for a local output_dir, 1 for S3)
    processes: int | None = None
    big_file_threshold_bytes: int = 10 * 1024 * 1024
    s3_region_name: str | None = None
    s3_endpoint_url: str | None = None
    s3_source: S3SourceConfig = field(default_factory=S3SourceConfig)
    #: solid blocks (des-packer ``block_size``): 0 is off, else the block size in bytes
    block_size: int = 0
    block_member_max: int = DEFAULT_BLOCK_MEMBER_MAX


@dataclass(frozen=True, slots=True)
class MigrationConfig:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    packer: PackerConfig = field(default_factory=PackerConfig)


# ----------------------------------------------------------------------------- parsing helpers


class _Section:
    """Reads typed values out of one mapping, remembering which keys were used."""

    def __init__(self, name: str, raw: object) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(name, "a mapping of keys to values", raw)
        self.name = name
        self.raw: Mapping[str, Any] = raw
        self.used: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.name}.{k}" if self.name else k

    def _get(self, k: str) -> tuple[bool, Any]:
        self.used.add(k)
        if k in self.raw:
            return True, self.raw[k]
        return False, None

    def string(self, k: str, default: str) -> str:
        present, v = self._get(k)
        if not present:
            return default
        if not isinstance(v, str) or not v:
            raise ConfigError(self.key(k), "a non-empty string", v)
        return v

    def opt_string(self, k: str) -> str | None:
        present, v = self._get(k)
        if not present or v is None:
            return None
        if not isinstance(v, str) or not v:
            raise ConfigError(self.key(k), "a non-empty string or null", v)
        return v

    def identifier(self, k: str, default: str | None, *, optional: bool = False) -> str | None:
        present, v = self._get(k)
        if not present or (optional and v is None):
            return default
        if not isinstance(v, str) or not _IDENTIFIER.match(v):
            expected = "an SQL identifier (letters, digits, underscore; not starting with a digit)"
            raise ConfigError(self.key(k), expected + (" or null" if optional else ""), v)
        return v

    def boolean(self, k: str, default: bool) -> bool:
        present, v = self._get(k)
        if not present:
            return default
        if not isinstance(v, bool):
            raise ConfigError(self.key(k), "true or false", v)
        return v

    def integer(self, k: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        present, v = self._get(k)
        if not present:
            return default
        return self._check_int(k, v, minimum, maximum)

    def opt_integer(self, k: str, *, minimum: int, maximum: int | None = None) -> int | None:
        present, v = self._get(k)
        if not present or v is None:
            return None
        return self._check_int(k, v, minimum, maximum, nullable=True)

    def _check_int(
        self, k: str, v: Any, minimum: int, maximum: int | None, nullable: bool = False
    ) -> int:
        ok = isinstance(v, int) and not isinstance(v, bool)
        if not ok or v < minimum or (maximum is not None and v > maximum):
            rng = (
                f"an integer >= {minimum}"
                if maximum is None
                else (f"an integer from {minimum} to {maximum}")
            )
            raise ConfigError(self.key(k), rng + (" or null" if nullable else ""), v)
        return int(v)

    def number(self, k: str, default: float, *, minimum: float) -> float:
        present, v = self._get(k)
        if not present:
            return default
        if not isinstance(v, int | float) or isinstance(v, bool) or v < minimum:
            raise ConfigError(self.key(k), f"a number >= {minimum:g}", v)
        return float(v)

    def choice(self, k: str, default: str, choices: tuple[str, ...]) -> str:
        present, v = self._get(k)
        if not present:
            return default
        if v not in choices:
            raise ConfigError(self.key(k), "one of " + ", ".join(repr(c) for c in choices), v)
        return str(v)

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.used, key=str)
        if unknown:
            name = str(unknown[0])
            known = sorted(self.used)
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {self.key(close[0])!r}? " if close else ""
            where = f"in the {self.name} section" if self.name else "at the top level"
            raise ConfigError(
                self.key(name),
                f"one of the known keys ({', '.join(known)})",
                name,
                message=(
                    f"unknown config key {self.key(name)!r}: {hint}(known keys {where}: "
                    f"{', '.join(known)})"
                ),
            )


def expand_env(value: str, key: str, env: Mapping[str, str] | None = None) -> str:
    """Replace each ``${NAME}`` with the environment variable ``NAME`` (an error if unset)."""
    env = os.environ if env is None else env

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            raise ConfigError(
                key, f"environment variable {name} to be set (used as ${{{name}}})", missing=True
            )
        return env[name]

    return _ENV_REF.sub(repl, value)


def parse_cutoff(value: object, key: str = "migration.cutoff") -> datetime:
    """An ISO-8601 instant (naive means UTC) -> aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                key, "an ISO-8601 date or time such as 2024-01-01T00:00:00Z", value
            ) from None
    else:
        raise ConfigError(key, "an ISO-8601 date or time such as 2024-01-01T00:00:00Z", value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_config(obj: object, *, env: Mapping[str, str] | None = None) -> MigrationConfig:
    """Validate a decoded JSON/YAML document and return the configuration."""
    if not isinstance(obj, Mapping):
        raise ConfigError("(top level)", "a mapping with database, migration and packer", obj)
    root = _Section("", obj)

    db = _Section("database", root._get("database")[1])
    url = expand_env(db.string("url", "sqlite+pysqlite:///./example.db"), "database.url", env)
    database = DatabaseConfig(
        url=url,
        table_name=_req(db.identifier("table_name", "files")),
        schema=db.identifier("schema", None, optional=True),
        uid_column=_req(db.identifier("uid_column", "uid")),
        created_at_column=_req(db.identifier("created_at_column", "created_at")),
        file_location_column=_req(db.identifier("file_location_column", "file_location")),
        size_bytes_column=_req(db.identifier("size_bytes_column", "size_bytes")),
        archived_column=_req(db.identifier("archived_column", "archived")),
        content_type_column=db.identifier("content_type_column", None, optional=True),
        checksum_column=db.identifier("checksum_column", None, optional=True),
        checksum_algorithm=db.choice("checksum_algorithm", "sha256", CHECKSUM_ALGORITHMS),
        error_column=db.identifier("error_column", None, optional=True),
    )
    db.finish()

    mg = _Section("migration", root._get("migration")[1])
    present, raw_cutoff = mg._get("cutoff")
    cutoff = parse_cutoff(raw_cutoff) if present and raw_cutoff is not None else None
    migration = MigrationSettings(
        archive_age_days=mg.number("archive_age_days", 7, minimum=0),
        cutoff=cutoff,
        batch_size=mg.integer("batch_size", 20_000, minimum=1, maximum=1_000_000),
        delete_source_files=mg.boolean("delete_source_files", False),
        report_file=mg.opt_string("report_file"),
        retry_failed=mg.boolean("retry_failed", False),
        claim_mode=mg.choice("claim_mode", "auto", CLAIM_MODES),
        max_batches_per_cycle=mg.opt_integer("max_batches_per_cycle", minimum=1),
        align_batches_to_days=mg.boolean("align_batches_to_days", True),
        state_dir=mg.opt_string("state_dir"),
    )
    mg.finish()

    pk = _Section("packer", root._get("packer")[1])
    s3 = _Section("packer.s3_source", pk._get("s3_source")[1])
    s3_source = S3SourceConfig(
        enabled=s3.boolean("enabled", False),
        region_name=s3.string("region_name", "us-east-1"),
        endpoint_url=s3.opt_string("endpoint_url"),
        max_retries=s3.integer("max_retries", 3, minimum=0, maximum=100),
        retry_delay_seconds=s3.number("retry_delay_seconds", 2.0, minimum=0),
    )
    s3.finish()
    present, raw_level = pk._get("level")
    level: int | None = 3
    if present:
        if raw_level is not None and (
            not isinstance(raw_level, int) or isinstance(raw_level, bool)
        ):
            raise ConfigError("packer.level", "an integer compression level or null", raw_level)
        level = raw_level
    packer = PackerConfig(
        output_dir=pk.string("output_dir", "./des_output"),
        max_shard_size=pk.integer("max_shard_size", 1_000_000_000, minimum=4096),
        n_bits=pk.integer("n_bits", 8, minimum=4, maximum=16),
        codec=pk.choice("codec", "zstd", CODECS),
        level=level,
        workers=pk.opt_integer("workers", minimum=1, maximum=256),
        processes=pk.opt_integer("processes", minimum=1, maximum=256),
        big_file_threshold_bytes=pk.integer(
            "big_file_threshold_bytes", 10 * 1024 * 1024, minimum=1
        ),
        s3_region_name=pk.opt_string("s3_region_name"),
        s3_endpoint_url=pk.opt_string("s3_endpoint_url"),
        s3_source=s3_source,
    )
    block_size, block_member_max = _blocks(pk, packer.codec)
    packer = replace(packer, block_size=block_size, block_member_max=block_member_max)
    pk.finish()
    root.finish()
    return MigrationConfig(database=database, migration=migration, packer=packer)


def _blocks(pk: _Section, codec: str) -> tuple[int, int]:
    """``packer.block_size`` and ``packer.block_member_max``, with des-packer's rules for
    them (``PackOptions.validate``) as config errors naming the key and the fix."""
    present, size = pk._get("block_size")
    if not present:
        size = 0
    elif not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOCK_SIZE:
        raise ConfigError(
            pk.key("block_size"),
            f"an integer from 0 (off) to {MAX_BLOCK_SIZE} (4 MiB, the largest solid block)",
            size,
        )
    member = pk.integer("block_member_max", DEFAULT_BLOCK_MEMBER_MAX, minimum=1)
    if size > 0 and codec != "zstd":
        raise ConfigError(
            pk.key("block_size"),
            f"0 (off) when packer.codec is {codec!r} (solid blocks are zstd frames: set "
            "packer.codec to zstd, or packer.block_size to 0)",
            size,
        )
    if size > 0 and member > size:
        raise ConfigError(
            pk.key("block_member_max"),
            f"at most packer.block_size ({size}): a larger file cannot go into a block "
            f"(block_member_max defaults to {DEFAULT_BLOCK_MEMBER_MAX}; lower it or raise "
            "packer.block_size)",
            member,
        )
    return size, member


def _req(v: str | None) -> str:
    assert v is not None
    return v


def read_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> MigrationConfig:
    """Read a ``.json``, ``.yaml`` or ``.yml`` file and parse it (ConfigError on any problem)."""
    p = Path(path)

    def bad_file(problem: str, expected: str) -> ConfigError:
        return ConfigError("--config", expected, str(p), message=f"config file {p}: {problem}")

    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise bad_file(
            "no such file; check the --config path (a JSON or YAML file; "
            "example_data/migration-config.yaml documents every key)",
            "an existing file",
        ) from None
    except OSError as exc:
        raise bad_file(
            f"cannot read it ({exc.strerror}); check the --config path and its permissions",
            "a readable JSON or YAML file",
        ) from None
    except UnicodeDecodeError as exc:
        raise bad_file(f"byte {exc.start} is not UTF-8; save it as UTF-8 text", "UTF-8") from None
    if p.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise bad_file(
                f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", "JSON"
            ) from None
    else:
        import yaml

        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            what, at = str(exc).splitlines()[0], ""
            if isinstance(exc, yaml.MarkedYAMLError):
                mark = exc.problem_mark
                at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                what = exc.problem or what
            raise bad_file(f"not valid YAML: {what}{at}", "YAML") from None
    return parse_config(obj, env=env)


def redact_url(url: str) -> str:
    """The database URL with its password replaced by ``***`` (safe to log)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"
