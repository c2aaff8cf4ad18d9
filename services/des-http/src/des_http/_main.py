"""Building the app from the environment (``des-http`` and ``uvicorn des_http:app``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from des_routing import SettingsError
from fastapi import FastAPI

from ._problems import ConfigError
from ._settings import HttpSettings, describe_config_error

# Set by the des-http command once it has printed the start-up warnings (its workers build
# the app from the environment and need not print them again).
WARNED_VARIABLE = "DES_HTTP_STARTUP_CHECKED"


def load_settings_or_exit(env: Mapping[str, str] | None = None) -> HttpSettings:
    """Read the settings; on a bad one print a line naming the variable and exit with 2.

    A local backend whose ``DES_BASE_DIR`` is not a directory is refused here too (every
    read would be a 404), naming the variable and the path on stderr; answers and logs of a
    running service never carry the path.
    """
    try:
        settings = HttpSettings.from_env(env)
    except (SettingsError, ConfigError) as exc:
        print(describe_config_error(exc), file=sys.stderr)
        raise SystemExit(2) from None
    des = settings.des
    if str(des.backend) == "local" and not Path(des.base_dir).is_dir():
        what = "does not exist" if not Path(des.base_dir).exists() else "is not a directory"
        print(
            f"des-http: invalid configuration: DES_BASE_DIR={des.base_dir} {what}: set "
            "DES_BASE_DIR to the directory des-pack writes the shards to (DES_BACKEND=local)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return settings


def app_from_env(env: Mapping[str, str] | None = None) -> FastAPI:
    """The app for the settings in the environment, with JSON logs configured."""
    from ._app import create_app, warn_if_auth_is_off
    from ._logging import configure_logging

    settings = load_settings_or_exit(env)
    configure_logging(settings.log_level)
    source = os.environ if env is None else env
    if not source.get(WARNED_VARIABLE):
        warn_if_auth_is_off(settings)
    try:
        return create_app(settings)
    except (SettingsError, ConfigError) as exc:
        print(describe_config_error(exc), file=sys.stderr)
        raise SystemExit(2) from None
