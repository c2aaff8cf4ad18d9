"""Building the app from the environment (``uvicorn des_http:app`` and ``des-http``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from des_routing import SettingsError
from fastapi import FastAPI

from ._settings import ConfigError, HttpSettings, describe_config_error


def load_settings_or_exit(env: Mapping[str, str] | None = None) -> HttpSettings:
    """Read the settings; on a bad one print a line naming the variable and exit with 2."""
    try:
        return HttpSettings.from_env(env)
    except (SettingsError, ConfigError) as exc:
        print(describe_config_error(exc), file=sys.stderr)
        raise SystemExit(2) from None


def app_from_env(env: Mapping[str, str] | None = None) -> FastAPI:
    """The app for the settings in the environment, with JSON logs configured."""
    from ._app import create_app
    from ._logging import configure_logging

    settings = load_settings_or_exit(env)
    configure_logging(settings.log_level)
    try:
        return create_app(settings)
    except (SettingsError, ConfigError) as exc:
        print(describe_config_error(exc), file=sys.stderr)
        raise SystemExit(2) from None
