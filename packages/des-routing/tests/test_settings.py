"""DesSettings.from_env: defaults, every variable, every error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from des_routing import DesSettings, SettingsError, ZoneConfigError, parse_zones


def test_defaults() -> None:
    assert DesSettings.from_env({}) == DesSettings(
        backend="local",
        base_dir=Path("des_output"),
        n_bits=8,
        s3_bucket=None,
        s3_region=None,
        s3_endpoint_url=None,
        s3_prefix="",
        zones_config=None,
        zones=None,
        big_file_threshold_bytes=10 * 1024 * 1024,
        bigfiles_prefix="_bigFiles",
        index_cache_bytes=256 * 1024 * 1024,
        tail_read_bytes=65536,
    )
    assert DesSettings.from_env({}) == DesSettings()


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DES_BACKEND", "local")
    monkeypatch.setenv("DES_BASE_DIR", "/srv/des")
    monkeypatch.setenv("DES_N_BITS", "12")
    settings = DesSettings.from_env()
    assert (settings.base_dir, settings.n_bits) == (Path("/srv/des"), 12)


def test_s3_backend_all_variables() -> None:
    env = {
        "DES_BACKEND": "S3",
        "DES_N_BITS": "10",
        "DES_S3_BUCKET": "des-shards",
        "DES_S3_REGION": "eu-west-1",
        "DES_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "DES_S3_PREFIX": "archive/",
        "DES_BIG_FILE_THRESHOLD_BYTES": "1048576",
        "DES_BIGFILES_PREFIX": "_big",
        "DES_INDEX_CACHE_BYTES": "64MiB",
        "DES_TAIL_READ_BYTES": "16_384",
    }
    assert DesSettings.from_env(env) == DesSettings(
        backend="s3",
        n_bits=10,
        s3_bucket="des-shards",
        s3_region="eu-west-1",
        s3_endpoint_url="http://127.0.0.1:9000",
        s3_prefix="archive/",
        big_file_threshold_bytes=1 << 20,
        bigfiles_prefix="_big",
        index_cache_bytes=64 << 20,
        tail_read_bytes=16384,
    )


def test_empty_values_count_as_unset() -> None:
    env = {"DES_BACKEND": "", "DES_S3_REGION": " ", "DES_N_BITS": "", "DES_S3_PREFIX": ""}
    assert DesSettings.from_env(env) == DesSettings()


def test_index_cache_can_be_disabled() -> None:
    assert DesSettings.from_env({"DES_INDEX_CACHE_BYTES": "0"}).index_cache_bytes == 0
    assert DesSettings.from_env({"DES_INDEX_CACHE_BYTES": "1 GiB"}).index_cache_bytes == 1 << 30


def test_multi_s3_loads_the_zone_map(tmp_path: Path, zones_obj: dict[str, Any]) -> None:
    path = tmp_path / "zones.json"
    path.write_text(json.dumps(zones_obj))
    settings = DesSettings.from_env({"DES_BACKEND": "multi_s3", "DES_ZONES_CONFIG": str(path)})
    assert settings.backend == "multi_s3"
    assert settings.zones_config == path
    assert settings.zones == parse_zones(zones_obj)
    assert settings.n_bits == 8


def test_multi_s3_zones_expand_from_the_given_env(tmp_path: Path, zones_yaml: str) -> None:
    path = tmp_path / "zones.yaml"
    path.write_text(zones_yaml.replace("bucket: des-zone-a", "bucket: ${ZONE_A_BUCKET}"))
    env = {"DES_BACKEND": "multi_s3", "DES_ZONES_CONFIG": str(path), "ZONE_A_BUCKET": "za"}
    settings = DesSettings.from_env(env)
    assert settings.zones is not None
    assert settings.zones.zone_for(0).s3.bucket == "za"


def test_zones_n_bits_is_used_when_des_n_bits_is_unset(
    tmp_path: Path, zones_obj: dict[str, Any]
) -> None:
    zones_obj["n_bits"] = 4
    zones_obj["zones"] = [{"name": "all", "range": {"start": 0, "end": 15}, "s3": {"bucket": "b"}}]
    path = tmp_path / "zones.json"
    path.write_text(json.dumps(zones_obj))
    env = {"DES_BACKEND": "multi_s3", "DES_ZONES_CONFIG": str(path)}
    assert DesSettings.from_env(env).n_bits == 4
    with pytest.raises(SettingsError) as info:
        DesSettings.from_env({**env, "DES_N_BITS": "8"})
    assert str(info.value) == (
        f"DES_ZONES_CONFIG={str(path)!r}: zones file {str(path)!r}: zones config: n_bits is 4 "
        "but the shards are routed with n_bits=8; the two must match"
    )
    assert isinstance(info.value.__cause__, ZoneConfigError)


SIZE_HELP = "a whole number of bytes >= {m}, optionally with a KiB/MiB/GiB/TiB suffix (default {d})"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DES_BACKEND": "gcs"},
            "DES_BACKEND='gcs' is not a backend: expected one of local, s3, multi_s3",
        ),
        (
            {"DES_N_BITS": "eight"},
            "DES_N_BITS='eight' is not an integer: expected an integer within 4..16",
        ),
        (
            {"DES_N_BITS": "8.0"},
            "DES_N_BITS='8.0' is not an integer: expected an integer within 4..16",
        ),
        (
            {"DES_N_BITS": "17"},
            "DES_N_BITS='17' is out of range: expected an integer within 4..16 (it must match "
            "how the shards were written)",
        ),
        (
            {"DES_N_BITS": "3"},
            "DES_N_BITS='3' is out of range: expected an integer within 4..16 (it must match "
            "how the shards were written)",
        ),
        (
            {"DES_BACKEND": "s3"},
            "DES_S3_BUCKET is not set: DES_BACKEND=s3 needs the bucket that holds the shards",
        ),
        (
            {"DES_BACKEND": "s3", "DES_S3_BUCKET": "bucket/prefix"},
            "DES_S3_BUCKET='bucket/prefix' is not a bucket name: expected a bare name such as "
            "'des-shards' (put key prefixes in DES_S3_PREFIX)",
        ),
        (
            {"DES_S3_ENDPOINT_URL": "localhost:9000"},
            "DES_S3_ENDPOINT_URL='localhost:9000' is not a URL: expected http(s)://host[:port]",
        ),
        (
            {"DES_S3_PREFIX": "/archive"},
            "DES_S3_PREFIX='/archive' must not start with '/': expected e.g. 'des/'",
        ),
        (
            {"DES_BACKEND": "multi_s3"},
            "DES_ZONES_CONFIG is not set: DES_BACKEND=multi_s3 needs a zones file (JSON or "
            "YAML) mapping shard index ranges to S3 locations",
        ),
        (
            {"DES_BIG_FILE_THRESHOLD_BYTES": "10MB"},
            "DES_BIG_FILE_THRESHOLD_BYTES='10MB' is not a size: expected "
            + SIZE_HELP.format(m=1, d=10485760),
        ),
        (
            {"DES_BIG_FILE_THRESHOLD_BYTES": "0"},
            "DES_BIG_FILE_THRESHOLD_BYTES='0' is too small: expected "
            + SIZE_HELP.format(m=1, d=10485760),
        ),
        (
            {"DES_INDEX_CACHE_BYTES": "-1"},
            "DES_INDEX_CACHE_BYTES='-1' is not a size: expected "
            + SIZE_HELP.format(m=0, d=268435456),
        ),
        (
            {"DES_TAIL_READ_BYTES": "64k"},
            "DES_TAIL_READ_BYTES='64k' is not a size: expected " + SIZE_HELP.format(m=1, d=65536),
        ),
        (
            {"DES_BIGFILES_PREFIX": "a/b"},
            "DES_BIGFILES_PREFIX='a/b' is not a directory name: expected one path segment "
            "without '/', such as '_bigFiles'",
        ),
        (
            {"DES_BIGFILES_PREFIX": ".."},
            "DES_BIGFILES_PREFIX='..' is not a directory name: expected one path segment "
            "without '/', such as '_bigFiles'",
        ),
    ],
)
def test_settings_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        DesSettings.from_env(env)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_bad_zones_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "zones.yaml"
    with pytest.raises(SettingsError) as info:
        DesSettings.from_env({"DES_BACKEND": "multi_s3", "DES_ZONES_CONFIG": str(missing)})
    assert str(info.value) == (
        f"DES_ZONES_CONFIG={str(missing)!r}: zones file {str(missing)!r} does not exist"
    )


def test_zones_config_is_ignored_for_other_backends(tmp_path: Path) -> None:
    settings = DesSettings.from_env({"DES_ZONES_CONFIG": str(tmp_path / "absent.yaml")})
    assert settings.zones_config == tmp_path / "absent.yaml"
    assert settings.zones is None
