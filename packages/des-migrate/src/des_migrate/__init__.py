"""DES migration: move files out of a business database into DES shards, safely."""

from ._config import (
    DatabaseConfig,
    MigrationConfig,
    MigrationSettings,
    PackerConfig,
    S3SourceConfig,
    expand_env,
    parse_config,
    parse_cutoff,
    read_config,
    redact_url,
)
from ._cycle_report import STEPS, CycleReport, FileFailure
from ._errors import (
    ConfigError,
    MigrateError,
    MissingDatabase,
    SchemaMismatch,
    SourceDatabaseError,
    StepFailed,
)
from ._metrics import MigrationMetrics
from ._orchestrator import MigrationOrchestrator
from ._shard_plan import plan_day_aligned_cut
from ._source_db import Cursor, FileRow, SourceDatabase, Totals, advisory_key, make_engine
from ._stats import (
    DayStats,
    MigrationStats,
    ShardIndexStats,
    compute_stats,
    format_stats,
    plan_n_bits,
)
from ._tuning import MigrationTuning

#: The installed distribution's version (read from its metadata on first use, so that
#: importing the package does not load ``importlib.metadata``).
__version__: str


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value = version("des-migrate")
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "STEPS",
    "ConfigError",
    "Cursor",
    "CycleReport",
    "DatabaseConfig",
    "DayStats",
    "FileFailure",
    "FileRow",
    "MigrateError",
    "MigrationConfig",
    "MigrationMetrics",
    "MigrationOrchestrator",
    "MigrationSettings",
    "MigrationStats",
    "MigrationTuning",
    "MissingDatabase",
    "PackerConfig",
    "S3SourceConfig",
    "SchemaMismatch",
    "ShardIndexStats",
    "SourceDatabase",
    "SourceDatabaseError",
    "StepFailed",
    "Totals",
    "__version__",
    "advisory_key",
    "compute_stats",
    "expand_env",
    "format_stats",
    "make_engine",
    "parse_config",
    "parse_cutoff",
    "plan_day_aligned_cut",
    "plan_n_bits",
    "read_config",
    "redact_url",
]
