"""Settings from the environment, and start-up refusing bad ones with a message naming the
variable (no traceback), for both ``uvicorn des_http:app`` and ``des-http``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from des_http import ConfigError, HttpSettings
from des_routing import SettingsError


def test_defaults(tmp_path: Path) -> None:
    s = HttpSettings.from_env({"DES_BASE_DIR": str(tmp_path)})
    assert s.des.backend == "local"
    assert s.des.base_dir == tmp_path
    assert s.des.n_bits == 8
    assert s.cache_control == "public, max-age=31536000, immutable"
    assert s.auth_tokens_file is None
    assert s.max_batch_items == 1000
    assert s.log_level == "INFO"
    assert s.retry_after_seconds == 5
    assert s.stream_threshold_bytes == 1 << 20
    assert s.io_threads == 32
    assert s.nowait_reads is True
    assert s.nowait_max_bytes == 64 * 1024
    assert s.cors_origins == ""
    assert s.link_key is None
    assert s.des_given == frozenset({"DES_BASE_DIR"})
    assert s.max_url_bytes == 8192
    assert s.max_header_bytes == 65536
    assert s.header_timeout_seconds == 10
    assert s.max_in_flight == 256
    assert s.max_batch_body_bytes == 2 << 20


def test_every_http_setting_is_read(tmp_path: Path) -> None:
    s = HttpSettings.from_env(
        {
            "DES_BACKEND": "s3",
            "DES_S3_BUCKET": "shards",
            "DES_N_BITS": "10",
            "DES_CACHE_CONTROL": "no-cache",
            "DES_AUTH_TOKENS_FILE": str(tmp_path / "tokens"),
            "DES_MAX_BATCH_ITEMS": "50",
            "DES_LOG_LEVEL": "debug",
            "DES_RETRY_AFTER_SECONDS": "30",
            "DES_STREAM_THRESHOLD_BYTES": "4096",
            "DES_INDEX_CACHE_BYTES": "1 MiB",
            "DES_IO_THREADS": "8",
            "DES_NOWAIT_READS": "0",
            "DES_NOWAIT_MAX_BYTES": "16384",
            "DES_CORS_ORIGINS": "https://a.example, http://b.example:8080",
            "DES_LINK_KEY": "k" * 40,
        }
    )
    assert s.cors_origins == "https://a.example, http://b.example:8080"
    assert s.link_key == b"k" * 40
    assert "DES_N_BITS" in (s.des_given or ())
    assert (s.des.backend, s.des.s3_bucket, s.des.n_bits) == ("s3", "shards", 10)
    assert s.des.index_cache_bytes == 1 << 20
    assert s.cache_control == "no-cache"
    assert s.auth_tokens_file == tmp_path / "tokens"
    assert (s.max_batch_items, s.log_level, s.retry_after_seconds) == (50, "DEBUG", 30)
    assert s.stream_threshold_bytes == 4096
    assert s.io_threads == 8
    assert s.nowait_reads is False
    assert s.nowait_max_bytes == 16384


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        (" Yes ", True),
        ("on", True),
        ("", True),
        ("0", False),
        ("FALSE", False),
        ("no", False),
        ("off", False),
    ],
)
def test_nowait_reads_switch(raw: str, expected: bool) -> None:
    assert HttpSettings.from_env({"DES_NOWAIT_READS": raw}).nowait_reads is expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DES_MAX_BATCH_ITEMS": "lots"}, "DES_MAX_BATCH_ITEMS"),
        ({"DES_MAX_BATCH_ITEMS": "0"}, "DES_MAX_BATCH_ITEMS"),
        ({"DES_LOG_LEVEL": "chatty"}, "DES_LOG_LEVEL"),
        ({"DES_RETRY_AFTER_SECONDS": "-1"}, "DES_RETRY_AFTER_SECONDS"),
        ({"DES_STREAM_THRESHOLD_BYTES": "1.5"}, "DES_STREAM_THRESHOLD_BYTES"),
        ({"DES_CACHE_CONTROL": "a\nb"}, "DES_CACHE_CONTROL"),
        ({"DES_IO_THREADS": "0"}, "DES_IO_THREADS"),
        ({"DES_NOWAIT_READS": "maybe"}, "DES_NOWAIT_READS"),
        ({"DES_NOWAIT_MAX_BYTES": "0"}, "DES_NOWAIT_MAX_BYTES"),
        ({"DES_NOWAIT_MAX_BYTES": "2000000"}, "DES_NOWAIT_MAX_BYTES"),
    ],
)
def test_bad_http_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        HttpSettings.from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")


def test_bad_des_settings_come_from_des_routing() -> None:
    with pytest.raises(SettingsError, match="DES_S3_BUCKET"):
        HttpSettings.from_env({"DES_BACKEND": "s3"})


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DES_")}
    full.update(env)
    return subprocess.run(args, env=full, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DES_BACKEND": "ftp"}, "DES_BACKEND"),
        ({"DES_N_BITS": "99"}, "DES_N_BITS"),
        ({"DES_BACKEND": "multi_s3"}, "DES_ZONES_CONFIG"),
        ({"DES_MAX_BATCH_ITEMS": "x"}, "DES_MAX_BATCH_ITEMS"),
        ({"DES_AUTH_TOKENS_FILE": "/nonexistent/tokens"}, "DES_AUTH_TOKENS_FILE"),
    ],
)
def test_uvicorn_import_of_app_refuses_bad_settings(
    env: dict[str, str], variable: str, tmp_path: Path
) -> None:
    code = "import uvicorn.importer as i; i.import_from_string('des_http:app')"
    done = _run([sys.executable, "-c", code], {"DES_BASE_DIR": str(tmp_path), **env})
    assert done.returncode == 2
    assert done.stderr.startswith("des-http: invalid configuration: ")
    assert variable in done.stderr
    assert "Traceback" not in done.stderr


def test_des_http_command_refuses_bad_settings() -> None:
    done = _run(["des-http", "--port", "0"], {"DES_BACKEND": "nope"})
    assert done.returncode == 2
    assert "DES_BACKEND" in done.stderr
    assert "Traceback" not in done.stderr


def test_hash_token_prints_a_tokens_file_line() -> None:
    done = subprocess.run(
        ["des-http", "hash-token", "--scope", "admin", "--name", "ops"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == (
        "admin sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0 ops\n"
    )


def test_des_http_command_checks_its_options() -> None:
    done = _run(["des-http", "--workers", "0"], {})
    assert done.returncode == 2
    assert "Invalid value for '--workers': 0 is not in the range x>=1." in done.stderr
    assert "Traceback" not in done.stderr


def test_hash_token_needs_a_token() -> None:
    done = subprocess.run(
        ["des-http", "hash-token"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "des-http hash-token: no token given on standard input\n"


@pytest.mark.parametrize("how", ["uvicorn", "des-http"])
def test_a_missing_base_dir_stops_start_up_naming_variable_and_path(
    how: str, tmp_path: Path
) -> None:
    absent = tmp_path / "no-such-dir"
    env = {"DES_BACKEND": "local", "DES_BASE_DIR": str(absent)}
    if how == "uvicorn":
        code = "import uvicorn.importer as i; i.import_from_string('des_http:app')"
        done = _run([sys.executable, "-c", code], env)
    else:
        done = _run(["des-http", "--port", "0"], env)
    assert done.returncode == 2
    assert done.stderr == (
        f"des-http: invalid configuration: DES_BASE_DIR={absent} does not exist: set "
        "DES_BASE_DIR to the directory des-pack writes the shards to (DES_BACKEND=local)\n"
    )
    file_instead = tmp_path / "a-file"
    file_instead.write_text("x")
    done = _run(["des-http", "--port", "0"], {**env, "DES_BASE_DIR": str(file_instead)})
    assert done.returncode == 2
    assert f"DES_BASE_DIR={file_instead} is not a directory" in done.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DES_HTTP_MAX_URL_BYTES", "100"),
        ("DES_HTTP_MAX_HEADER_BYTES", "4096"),
        ("DES_HTTP_HEADER_TIMEOUT_SECONDS", "61"),
        ("DES_HTTP_MAX_IN_FLIGHT", "0"),
        ("DES_MAX_BATCH_BODY_BYTES", "12"),
    ],
)
def test_edge_limits_out_of_range_name_the_variable(
    variable: str, value: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: expected a number from") as info:
        HttpSettings.from_env({"DES_BASE_DIR": str(tmp_path), variable: value})
    assert info.value.variable == variable
