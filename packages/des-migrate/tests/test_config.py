"""Config loading: defaults, validation messages naming the key, ${ENV} expansion, redaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from des_migrate import ConfigError, MigrationConfig, parse_config, read_config, redact_url

EXAMPLE = Path(__file__).resolve().parents[3] / "example_data" / "migration-config.yaml"


def test_defaults_match_the_documented_shape() -> None:
    cfg = parse_config({})
    assert cfg == MigrationConfig()
    db = cfg.database
    assert (db.url, db.table_name, db.uid_column, db.created_at_column) == (
        "sqlite+pysqlite:///./example.db",
        "files",
        "uid",
        "created_at",
    )
    assert (db.file_location_column, db.size_bytes_column, db.archived_column) == (
        "file_location",
        "size_bytes",
        "archived",
    )
    assert db.content_type_column is None
    assert db.checksum_column is None
    assert db.error_column is None
    m = cfg.migration
    assert (m.archive_age_days, m.batch_size, m.delete_source_files) == (7, 20_000, False)
    p = cfg.packer
    assert (p.output_dir, p.max_shard_size, p.n_bits) == ("./des_output", 1_000_000_000, 8)
    s3 = p.s3_source
    assert (s3.enabled, s3.region_name, s3.endpoint_url, s3.max_retries) == (
        False,
        "us-east-1",
        None,
        3,
    )
    assert s3.retry_delay_seconds == 2.0
    assert (p.block_size, p.block_member_max) == (0, 65536)  # solid blocks off


def test_example_config_file_parses() -> None:
    cfg = read_config(EXAMPLE, env={"DB_PASSWORD": "pw"})
    assert cfg.database.table_name == "files"
    assert cfg.migration.batch_size == 20_000
    assert cfg.packer.s3_source.enabled is False


def test_yaml_and_json_give_the_same_config(tmp_path: Path) -> None:
    doc = {
        "database": {"url": "sqlite+pysqlite:///x.db", "table_name": "source_files"},
        "migration": {"archive_age_days": 30, "batch_size": 500, "delete_source_files": True},
        "packer": {"output_dir": "/data/out", "n_bits": 10, "s3_source": {"enabled": True}},
    }
    j = tmp_path / "c.json"
    j.write_text(json.dumps(doc))
    y = tmp_path / "c.yaml"
    y.write_text(
        "database: {url: 'sqlite+pysqlite:///x.db', table_name: source_files}\n"
        "migration: {archive_age_days: 30, batch_size: 500, delete_source_files: true}\n"
        "packer:\n  output_dir: /data/out\n  n_bits: 10\n  s3_source: {enabled: true}\n"
    )
    a, b = read_config(j), read_config(y)
    assert a == b
    assert a.packer.n_bits == 10
    assert a.packer.s3_source.enabled is True
    assert a.migration.batch_size == 500
    assert a.migration.delete_source_files is True


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"migration": {"batch_size": 0}},
            "config key 'migration.batch_size': expected an integer from 1 to 1000000, got 0",
        ),
        (
            {"migration": {"batch_size": "100"}},
            "config key 'migration.batch_size': expected an integer from 1 to 1000000, got '100'",
        ),
        (
            {"migration": {"delete_source_files": "yes"}},
            "config key 'migration.delete_source_files': expected true or false, got 'yes'",
        ),
        (
            {"packer": {"n_bits": 3}},
            "config key 'packer.n_bits': expected an integer from 4 to 16, got 3",
        ),
        (
            {"database": {"table_name": "files; drop table x"}},
            "config key 'database.table_name': expected an SQL identifier (letters, digits, "
            "underscore; not starting with a digit), got 'files; drop table x'",
        ),
        (
            {"database": {"url": ""}},
            "config key 'database.url': expected a non-empty string, got ''",
        ),
        (
            {"packer": {"codec": "brotli"}},
            "config key 'packer.codec': expected one of 'none', 'zstd', 'lz4', got 'brotli'",
        ),
        (
            {"migration": {"archive_age_days": -1}},
            "config key 'migration.archive_age_days': expected a number >= 0, got -1",
        ),
        (
            {"migration": {"cutoff": "yesterday"}},
            "config key 'migration.cutoff': expected an ISO-8601 date or time such as "
            "2024-01-01T00:00:00Z, got 'yesterday'",
        ),
        (
            {"packer": {"s3_source": {"max_retries": -2}}},
            "config key 'packer.s3_source.max_retries': expected an integer from 0 to 100, got -2",
        ),
        (
            {"database": "sqlite:///x.db"},
            "config key 'database': expected a mapping of keys to values, got 'sqlite:///x.db'",
        ),
    ],
)
def test_config_errors_name_key_and_expected_value(doc: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert str(info.value) == message


def test_solid_block_keys_parse() -> None:
    p = parse_config({"packer": {"block_size": 131072}}).packer
    assert (p.block_size, p.block_member_max) == (131072, 65536)
    p = parse_config({"packer": {"block_size": 4194304, "block_member_max": 4194304}}).packer
    assert (p.block_size, p.block_member_max) == (4194304, 4194304)
    p = parse_config({"packer": {"block_size": 8192, "block_member_max": 4096}}).packer
    assert (p.block_size, p.block_member_max) == (8192, 4096)
    # off: the member maximum is not held against a block size, and any codec goes
    p = parse_config({"packer": {"block_size": 0, "block_member_max": 1 << 30}}).packer
    assert (p.block_size, p.block_member_max) == (0, 1 << 30)
    assert parse_config({"packer": {"codec": "lz4", "block_size": 0}}).packer.codec == "lz4"


def test_solid_block_limits_are_des_formats() -> None:
    import des_format
    from des_migrate import _config

    assert _config.MAX_BLOCK_SIZE == des_format.MAX_BLOCK_SIZE
    assert _config.DEFAULT_BLOCK_MEMBER_MAX == des_format.DEFAULT_BLOCK_MEMBER_MAX


_BLOCK_SIZE_RANGE = (
    "config key 'packer.block_size': expected an integer from 0 (off) to 4194304 (4 MiB, the "
    "largest solid block), got "
)


@pytest.mark.parametrize(
    ("packer", "message"),
    [
        ({"block_size": -1}, _BLOCK_SIZE_RANGE + "-1"),
        ({"block_size": 4194305}, _BLOCK_SIZE_RANGE + "4194305"),
        ({"block_size": "128KiB"}, _BLOCK_SIZE_RANGE + "'128KiB'"),
        ({"block_size": 131072.0}, _BLOCK_SIZE_RANGE + "131072.0"),
        ({"block_size": True}, _BLOCK_SIZE_RANGE + "True"),
        ({"block_size": None}, _BLOCK_SIZE_RANGE + "None"),
        (
            {"block_member_max": 0},
            "config key 'packer.block_member_max': expected an integer >= 1, got 0",
        ),
        (
            {"block_member_max": "64KiB"},
            "config key 'packer.block_member_max': expected an integer >= 1, got '64KiB'",
        ),
        (
            {"block_size": 131072, "codec": "lz4"},
            "config key 'packer.block_size': expected 0 (off) when packer.codec is 'lz4' (solid "
            "blocks are zstd frames: set packer.codec to zstd, or packer.block_size to 0), "
            "got 131072",
        ),
        (
            {"block_size": 131072, "codec": "none"},
            "config key 'packer.block_size': expected 0 (off) when packer.codec is 'none' (solid "
            "blocks are zstd frames: set packer.codec to zstd, or packer.block_size to 0), "
            "got 131072",
        ),
        (
            {"block_size": 32768},
            "config key 'packer.block_member_max': expected at most packer.block_size (32768): "
            "a larger file cannot go into a block (block_member_max defaults to 65536; lower it "
            "or raise packer.block_size), got 65536",
        ),
        (
            {"block_size": 131072, "block_member_max": 131073},
            "config key 'packer.block_member_max': expected at most packer.block_size (131072): "
            "a larger file cannot go into a block (block_member_max defaults to 65536; lower it "
            "or raise packer.block_size), got 131073",
        ),
    ],
)
def test_solid_block_errors_name_the_key_and_the_fix(
    packer: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"packer": packer})
    assert str(info.value) == message


def test_solid_block_config_is_what_des_packer_accepts() -> None:
    """Every combination the config accepts passes PackOptions.validate (so a pack never
    fails on them), and every one it refuses is refused by des-packer too."""
    from des_packer import PackConfigError, PackOptions

    for codec in ("zstd", "lz4", "none"):
        for size in (0, 1, 4096, 65536, 131072, 4194304, 4194305, -1):
            for member in (1, 4096, 65536, 131072, 4194305):
                doc = {"codec": codec, "block_size": size, "block_member_max": member}
                opts = PackOptions(codec=codec, block_size=size, block_member_max=member)
                try:
                    parse_config({"packer": doc})
                except ConfigError:
                    with pytest.raises(PackConfigError):
                        opts.validate()
                else:
                    opts.validate()


def test_unknown_key_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"migration": {"bach_size": 10}})
    assert info.value.key == "migration.bach_size"
    assert "known keys in the migration section" in str(info.value)
    assert "batch_size" in str(info.value)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config([1, 2])
    assert info.value.key == "(top level)"


def test_env_expansion_in_database_url() -> None:
    cfg = parse_config(
        {"database": {"url": "postgresql+psycopg://des:${DB_PASSWORD}@db:5432/app"}},
        env={"DB_PASSWORD": "s3cr3t"},
    )
    assert cfg.database.url == "postgresql+psycopg://des:s3cr3t@db:5432/app"
    assert redact_url(cfg.database.url) == "postgresql+psycopg://des:***@db:5432/app"


def test_missing_env_variable_names_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"database": {"url": "postgresql://u:${NOPE_PW}@h/db"}}, env={})
    assert str(info.value) == (
        "config key 'database.url' is required: expected environment variable NOPE_PW to be "
        "set (used as ${NOPE_PW})"
    )


def test_cutoff_overrides_archive_age() -> None:
    cfg = parse_config({"migration": {"cutoff": "2024-03-01", "archive_age_days": 1}})
    assert cfg.migration.effective_cutoff() == datetime(2024, 3, 1, tzinfo=UTC)
    aged = parse_config({"migration": {"archive_age_days": 2}}).migration
    now = datetime(2024, 3, 10, 12, tzinfo=UTC)
    assert aged.effective_cutoff(now) == datetime(2024, 3, 8, 12, tzinfo=UTC)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_config(tmp_path / "missing.yaml")
    assert info.value.key == "--config"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError) as info:
        read_config(bad)
    assert str(info.value) == (
        f"config file {bad}: not valid JSON: Expecting property name enclosed in double quotes "
        "at line 1, column 2"
    )
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("database:\n  url: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        read_config(bad_yaml)
    assert str(info.value) == (
        f"config file {bad_yaml}: not valid YAML: expected ',' or ']', but got '<stream end>' "
        "at line 3, column 1"
    )
    assert "config key" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        read_config(tmp_path / "missing.yaml")
    assert str(info.value).startswith(
        f"config file {tmp_path / 'missing.yaml'}: no such file; check the --config path"
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"migration": {"bach_size": 10}},
            "unknown config key 'migration.bach_size': did you mean 'migration.batch_size'? "
            "(known keys in the migration section: align_batches_to_days, archive_age_days, "
            "batch_size, claim_mode, cutoff, delete_source_files, max_batches_per_cycle, "
            "report_file, retry_failed, state_dir)",
        ),
        (
            {"databse": {}},
            "unknown config key 'databse': did you mean 'database'? (known keys at the top "
            "level: database, migration, packer)",
        ),
        (
            {"packer": {"zzz": 1}},
            "unknown config key 'packer.zzz': (known keys in the packer section: "
            "big_file_threshold_bytes, block_member_max, block_size, codec, level, "
            "max_shard_size, n_bits, output_dir, processes, s3_endpoint_url, s3_region_name, "
            "s3_source, workers)",
        ),
    ],
)
def test_a_misspelt_key_gets_did_you_mean(doc: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert str(info.value) == message
