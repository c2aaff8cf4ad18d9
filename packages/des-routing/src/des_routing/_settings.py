"""``DesSettings``: the ``DES_*`` environment variables, parsed and validated once."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from des_routing._errors import SettingsError, ZoneConfigError
from des_routing._routing import MAX_N_BITS, MIN_N_BITS
from des_routing._zones import ZoneMap, load_zones

__all__ = [
    "BACKENDS",
    "DEFAULT_BASE_DIR",
    "DEFAULT_BIGFILES_PREFIX",
    "DEFAULT_BIG_FILE_THRESHOLD_BYTES",
    "DEFAULT_INDEX_CACHE_BYTES",
    "DEFAULT_N_BITS",
    "DEFAULT_TAIL_READ_BYTES",
    "Backend",
    "DesSettings",
]

Backend = Literal["local", "s3", "multi_s3"]
BACKENDS: tuple[Backend, ...] = ("local", "s3", "multi_s3")

DEFAULT_BASE_DIR = Path("des_output")
DEFAULT_N_BITS = 8
DEFAULT_BIG_FILE_THRESHOLD_BYTES = 10 * 1024 * 1024
DEFAULT_BIGFILES_PREFIX = "_bigFiles"
DEFAULT_INDEX_CACHE_BYTES = 256 * 1024 * 1024
DEFAULT_TAIL_READ_BYTES = 65536

_SIZE_RE = re.compile(r"([0-9][0-9_]*)\s*(KiB|MiB|GiB|TiB)?")
_UNITS = {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


@dataclass(frozen=True, slots=True)
class DesSettings:
    """Validated DES configuration (see :meth:`from_env` for the variables)."""

    backend: Backend = "local"
    base_dir: Path = DEFAULT_BASE_DIR
    n_bits: int = DEFAULT_N_BITS
    s3_bucket: str | None = None
    s3_region: str | None = None
    s3_endpoint_url: str | None = None
    s3_prefix: str = ""
    zones_config: Path | None = None  # the DES_ZONES_CONFIG path
    zones: ZoneMap | None = None  # the validated zone map (multi_s3)
    big_file_threshold_bytes: int = DEFAULT_BIG_FILE_THRESHOLD_BYTES
    bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX
    index_cache_bytes: int = DEFAULT_INDEX_CACHE_BYTES
    tail_read_bytes: int = DEFAULT_TAIL_READ_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DesSettings:
        """Read the ``DES_*`` variables from ``env`` (default: ``os.environ``).

        ============================  ==========================================================
        DES_BACKEND                   ``local`` (default), ``s3`` or ``multi_s3``
        DES_BASE_DIR                  directory of the shards for ``local`` (default des_output)
        DES_N_BITS                    routing bits, 4..16 (default 8)
        DES_S3_BUCKET                 bucket, required for ``s3``
        DES_S3_REGION                 optional region name
        DES_S3_ENDPOINT_URL           optional http(s) URL of an S3-compatible endpoint
        DES_S3_PREFIX                 optional key prefix (used as given, e.g. ``des/``)
        DES_ZONES_CONFIG              zones file (JSON/YAML), required for ``multi_s3``
        DES_BIG_FILE_THRESHOLD_BYTES  default 10 MiB
        DES_BIGFILES_PREFIX           default ``_bigFiles``
        DES_INDEX_CACHE_BYTES         default 256 MiB (0 disables the cache)
        DES_TAIL_READ_BYTES           default 65536
        ============================  ==========================================================

        Sizes are whole numbers of bytes, optionally with a KiB/MiB/GiB/TiB suffix. An empty
        value counts as unset. Any bad value raises :class:`SettingsError` naming the variable,
        the value and what is expected.
        """
        source: Mapping[str, str] = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name)
            if value is None or not value.strip():
                return None
            return value.strip()

        backend_text = (get("DES_BACKEND") or "local").lower()
        if backend_text not in BACKENDS:
            raise SettingsError(
                f"DES_BACKEND={source.get('DES_BACKEND')!r} is not a backend: expected one of "
                "local, s3, multi_s3"
            )
        backend: Backend = backend_text

        n_bits_text = get("DES_N_BITS")
        n_bits = DEFAULT_N_BITS
        if n_bits_text is not None:
            n_bits = _parse_int("DES_N_BITS", n_bits_text, f"an integer within {MIN_N_BITS}..16")
            if not MIN_N_BITS <= n_bits <= MAX_N_BITS:
                raise SettingsError(
                    f"DES_N_BITS={n_bits_text!r} is out of range: expected an integer within "
                    f"{MIN_N_BITS}..{MAX_N_BITS} (it must match how the shards were written)"
                )

        base_dir_text = get("DES_BASE_DIR")
        base_dir = Path(base_dir_text) if base_dir_text is not None else DEFAULT_BASE_DIR

        bucket = get("DES_S3_BUCKET")
        if backend == "s3" and bucket is None:
            raise SettingsError(
                "DES_S3_BUCKET is not set: DES_BACKEND=s3 needs the bucket that holds the shards"
            )
        if bucket is not None and ("/" in bucket or any(c.isspace() for c in bucket)):
            raise SettingsError(
                f"DES_S3_BUCKET={bucket!r} is not a bucket name: expected a bare name such as "
                "'des-shards' (put key prefixes in DES_S3_PREFIX)"
            )
        endpoint = get("DES_S3_ENDPOINT_URL")
        if endpoint is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint):
            raise SettingsError(
                f"DES_S3_ENDPOINT_URL={endpoint!r} is not a URL: expected http(s)://host[:port]"
            )
        prefix = get("DES_S3_PREFIX") or ""
        if prefix.startswith("/"):
            raise SettingsError(
                f"DES_S3_PREFIX={prefix!r} must not start with '/': expected e.g. 'des/'"
            )

        zones_text = get("DES_ZONES_CONFIG")
        zones_path = Path(zones_text) if zones_text is not None else None
        zones: ZoneMap | None = None
        if backend == "multi_s3":
            if zones_path is None:
                raise SettingsError(
                    "DES_ZONES_CONFIG is not set: DES_BACKEND=multi_s3 needs a zones file "
                    "(JSON or YAML) mapping shard index ranges to S3 locations"
                )
            try:
                zones = load_zones(
                    zones_path, n_bits=n_bits if n_bits_text is not None else None, env=source
                )
            except ZoneConfigError as exc:
                raise SettingsError(f"DES_ZONES_CONFIG={zones_text!r}: {exc}") from exc
            n_bits = zones.n_bits

        threshold = _size(get, "DES_BIG_FILE_THRESHOLD_BYTES", DEFAULT_BIG_FILE_THRESHOLD_BYTES, 1)
        cache_bytes = _size(get, "DES_INDEX_CACHE_BYTES", DEFAULT_INDEX_CACHE_BYTES, 0)
        tail_bytes = _size(get, "DES_TAIL_READ_BYTES", DEFAULT_TAIL_READ_BYTES, 1)

        bigfiles_prefix = get("DES_BIGFILES_PREFIX") or DEFAULT_BIGFILES_PREFIX
        if "/" in bigfiles_prefix or bigfiles_prefix in {".", ".."}:
            raise SettingsError(
                f"DES_BIGFILES_PREFIX={bigfiles_prefix!r} is not a directory name: expected one "
                "path segment without '/', such as '_bigFiles'"
            )

        return cls(
            backend=backend,
            base_dir=base_dir,
            n_bits=n_bits,
            s3_bucket=bucket,
            s3_region=get("DES_S3_REGION"),
            s3_endpoint_url=endpoint,
            s3_prefix=prefix,
            zones_config=zones_path,
            zones=zones,
            big_file_threshold_bytes=threshold,
            bigfiles_prefix=bigfiles_prefix,
            index_cache_bytes=cache_bytes,
            tail_read_bytes=tail_bytes,
        )


def _parse_int(name: str, text: str, expected: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise SettingsError(f"{name}={text!r} is not an integer: expected {expected}")
    return int(text)


def _size(get: Callable[[str], str | None], name: str, default: int, minimum: int) -> int:
    text = get(name)
    if text is None:
        return default
    match = _SIZE_RE.fullmatch(text)
    expected = (
        f"a whole number of bytes >= {minimum}, optionally with a KiB/MiB/GiB/TiB suffix "
        f"(default {default})"
    )
    if match is None:
        raise SettingsError(f"{name}={text!r} is not a size: expected {expected}")
    value = int(match[1].replace("_", "")) * _UNITS[match[2]]
    if value < minimum:
        raise SettingsError(f"{name}={text!r} is too small: expected {expected}")
    return value
