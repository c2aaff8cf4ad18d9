"""The public API is a decision: pin it."""

from __future__ import annotations

import des_migrate


def test_public_names() -> None:
    assert sorted(des_migrate.__all__) == sorted(
        [
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
            "advisory_key",
            "compute_stats",
            "expand_env",
            "format_stats",
            "make_engine",
            "parse_config",
            "parse_cutoff",
            "read_config",
            "redact_url",
            "plan_n_bits",
            "plan_day_aligned_cut",
            "__version__",
        ]
    )
    for name in des_migrate.__all__:
        assert hasattr(des_migrate, name), name
    assert des_migrate.STEPS == ("fetch", "validate", "pack", "verify", "mark", "cleanup")


def test_errors_split_by_fault() -> None:
    assert issubclass(des_migrate.ConfigError, des_migrate.MigrateError)
    assert issubclass(des_migrate.ConfigError, ValueError)
    assert issubclass(des_migrate.SchemaMismatch, des_migrate.SourceDatabaseError)
    assert issubclass(des_migrate.StepFailed, des_migrate.MigrateError)
