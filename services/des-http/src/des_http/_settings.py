"""Settings of the service: the shared DES settings (``des_routing.DesSettings``) plus the
HTTP edge's own, all read from the environment."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from des_routing import DesSettings, SettingsError, link_key_from_env

from ._cors import CorsPolicy
from ._problems import ConfigError

DEFAULT_CACHE_CONTROL = "public, max-age=31536000, immutable"
DEFAULT_MAX_BATCH_ITEMS = 1000
DEFAULT_RETRY_AFTER_SECONDS = 5
DEFAULT_STREAM_THRESHOLD_BYTES = 1 << 20
DEFAULT_IO_THREADS = 32
DEFAULT_NOWAIT_MAX_BYTES = 64 << 10
DEFAULT_MAX_URL_BYTES = 8 << 10
DEFAULT_MAX_HEADER_BYTES = 64 << 10
DEFAULT_HEADER_TIMEOUT_SECONDS = 10
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_MAX_BATCH_BODY_BYTES = 2 << 20
DEFAULT_LAYOUT_CHECK_SECONDS = 60
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Everything :func:`des_http.create_app` needs.

    ``des`` carries the storage settings shared with the packer (backend, base directory,
    n_bits, S3, zones, big files, index cache size); the rest is the HTTP edge's.
    """

    des: DesSettings
    cache_control: str = DEFAULT_CACHE_CONTROL
    auth_tokens_file: Path | None = None
    max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS
    log_level: str = "INFO"
    retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
    stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES
    io_threads: int = DEFAULT_IO_THREADS
    nowait_reads: bool = True
    nowait_max_bytes: int = DEFAULT_NOWAIT_MAX_BYTES
    #: ``DES_CORS_ORIGINS`` as given ("" = CORS off); see ``_cors``.
    cors_origins: str = ""
    #: ``DES_LINK_KEY`` (None = signed links refused); see ``_links``.
    link_key: bytes | None = None
    #: The ``DES_*`` variables set in the environment (None: settings built in code, all
    #: given); n_bits and the big-file prefix not given come from the store's layout record.
    des_given: frozenset[str] | None = None
    # The edge's limits (see the README's "Limits"): path and query (414), request line and
    # headers together (431, enforced by the server), seconds to send a request's headers
    # and to keep an idle connection, requests served at once per worker (more wait), and
    # the body of POST /files/batch (413, checked before it is read).
    max_url_bytes: int = DEFAULT_MAX_URL_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_seconds: int = DEFAULT_HEADER_TIMEOUT_SECONDS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_batch_body_bytes: int = DEFAULT_MAX_BATCH_BODY_BYTES
    # The ``server`` header of every answer (None: the server's own, ``server: granian``).
    server_header: str | None = None
    # OpenTelemetry spans for GET/HEAD /files (``_tracing``; needs des-http[otel]).
    otel: bool = False
    # Seconds between checks of the store's layout record (``_layout_watch``; 0: none).
    layout_check_seconds: int = DEFAULT_LAYOUT_CHECK_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HttpSettings:
        """Read every setting; raise ``SettingsError``/``ConfigError`` naming the variable."""
        env = os.environ if env is None else env
        des = DesSettings.from_env(dict(env))
        tokens = env.get("DES_AUTH_TOKENS_FILE", "").strip()
        level = env.get("DES_LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if level not in LOG_LEVELS:
            raise ConfigError(
                "DES_LOG_LEVEL", f"unknown level {level!r}; use one of {', '.join(LOG_LEVELS)}"
            )
        cache_control = env.get("DES_CACHE_CONTROL", DEFAULT_CACHE_CONTROL).strip()
        if not cache_control or any(ch in cache_control for ch in "\r\n"):
            raise ConfigError(
                "DES_CACHE_CONTROL",
                f"expected a Cache-Control header value such as {DEFAULT_CACHE_CONTROL!r}",
            )
        server_header = env.get("DES_HTTP_SERVER_HEADER", "").strip() or None
        if server_header is not None and not (
            server_header.isascii() and server_header.isprintable()
        ):
            raise ConfigError("DES_HTTP_SERVER_HEADER", "expected printable ASCII text")
        return cls(
            des=des,
            otel=_otel_wanted(env),
            server_header=server_header,
            cache_control=cache_control,
            auth_tokens_file=Path(tokens) if tokens else None,
            max_batch_items=_positive_int(
                env, "DES_MAX_BATCH_ITEMS", DEFAULT_MAX_BATCH_ITEMS, upper=100_000
            ),
            log_level=level,
            retry_after_seconds=_positive_int(
                env, "DES_RETRY_AFTER_SECONDS", DEFAULT_RETRY_AFTER_SECONDS, upper=86_400
            ),
            stream_threshold_bytes=_positive_int(
                env, "DES_STREAM_THRESHOLD_BYTES", DEFAULT_STREAM_THRESHOLD_BYTES, upper=1 << 30
            ),
            io_threads=_positive_int(env, "DES_IO_THREADS", DEFAULT_IO_THREADS, upper=1024),
            nowait_reads=_flag(env, "DES_NOWAIT_READS", default=True),
            nowait_max_bytes=_positive_int(
                env, "DES_NOWAIT_MAX_BYTES", DEFAULT_NOWAIT_MAX_BYTES, upper=1 << 20
            ),
            cors_origins=_cors_origins(env),
            link_key=link_key_from_env(env),
            des_given=frozenset(k for k, v in env.items() if k.startswith("DES_") and v.strip()),
            max_url_bytes=_positive_int(
                env, "DES_HTTP_MAX_URL_BYTES", DEFAULT_MAX_URL_BYTES, lower=256, upper=60_000
            ),
            max_header_bytes=_positive_int(
                env,
                "DES_HTTP_MAX_HEADER_BYTES",
                DEFAULT_MAX_HEADER_BYTES,
                lower=8192,
                upper=16 << 20,
            ),
            header_timeout_seconds=_positive_int(
                env, "DES_HTTP_HEADER_TIMEOUT_SECONDS", DEFAULT_HEADER_TIMEOUT_SECONDS, upper=60
            ),
            max_in_flight=_positive_int(
                env, "DES_HTTP_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT, upper=65_536
            ),
            max_batch_body_bytes=_positive_int(
                env,
                "DES_MAX_BATCH_BODY_BYTES",
                DEFAULT_MAX_BATCH_BODY_BYTES,
                lower=1024,
                upper=1 << 30,
            ),
            layout_check_seconds=_positive_int(
                env,
                "DES_LAYOUT_CHECK_SECONDS",
                DEFAULT_LAYOUT_CHECK_SECONDS,
                lower=0,
                upper=86_400,
            ),
        )


def _cors_origins(env: Mapping[str, str]) -> str:
    text = env.get("DES_CORS_ORIGINS", "").strip()
    CorsPolicy.parse(text)  # ConfigError naming a bad origin, at start
    return text


def _positive_int(
    env: Mapping[str, str], name: str, default: int, *, upper: int, lower: int = 1
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
    if not lower <= value <= upper:
        raise ConfigError(name, f"expected a number from {lower} to {upper}, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(name, f"expected 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def _otel_wanted(env: Mapping[str, str]) -> bool:
    """Tracing: ``DES_OTEL`` when set; else on when ``OTEL_TRACES_EXPORTER`` names an
    exporter (not ``none``); always off with ``OTEL_SDK_DISABLED=true``. On needs
    OpenTelemetry's API (the ``otel`` extra)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("DES_OTEL", "").strip():
        wanted = _flag(env, "DES_OTEL", default=False)
        variable = "DES_OTEL"
    else:
        exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        wanted = exporter not in ("", "none")
        variable = "OTEL_TRACES_EXPORTER"
    if wanted and importlib.util.find_spec("opentelemetry") is None:
        raise ConfigError(
            variable,
            "tracing needs OpenTelemetry's API: install des-http[otel] "
            "(pip install 'des-http[otel]'), or set DES_OTEL=0",
        )
    return wanted


def describe_config_error(exc: ConfigError | SettingsError) -> str:
    """One line for a person starting the service."""
    return f"des-http: invalid configuration: {exc}"
