"""The store's layout record (``des_format.StoreLayout``) read once when the service starts.

n_bits and the big-file prefix come from it unless their variables are set; a set value
that differs stops the start with a message naming both (exit 2), instead of answering every
request with a 404. No request on the read path: the record is read here, once per zone,
with its ETag, which ``_layout_watch`` then re-checks in the background. A store written
before records existed has none and is served with the settings as they are.
"""

from __future__ import annotations

import dataclasses
import logging

from des_format import DesFormatError, LayoutMismatch, ObjectStore

from ._layout_watch import ZoneRecord, combined_layout, read_zone_records
from ._problems import ConfigError
from ._readiness import plan_zone_stores
from ._settings import HttpSettings

__all__ = ["settings_after_layout"]

log = logging.getLogger("des_http.errors")


def settings_after_layout(
    settings: HttpSettings, store: ObjectStore
) -> tuple[HttpSettings, list[ZoneRecord]]:
    """The settings to serve with, and what is known of each zone's record (for the watch)."""
    des = settings.des
    given = settings.des_given
    n_bits_given = given is None or "DES_N_BITS" in given
    prefix_given = given is None or "DES_BIGFILES_PREFIX" in given
    zones = [(what, s) for what, s, _ in plan_zone_stores(des, store)]
    try:
        records = read_zone_records(zones)
        layout = combined_layout(records)
    except LayoutMismatch as exc:
        raise ConfigError("DES_N_BITS", str(exc)) from None
    except DesFormatError as exc:
        if not n_bits_given:
            raise ConfigError(
                "DES_N_BITS",
                f"not set, and the layout record of {store.describe()} could not be read "
                f"({exc}); set DES_N_BITS to the value the shards were written with",
            ) from None
        log.warning(
            "the store's layout record could not be read (%s); serving with DES_N_BITS=%d",
            exc,
            des.n_bits,
        )
        return settings, [ZoneRecord(what, s) for what, s in zones]  # unknown: checked later
    found = [r for r, _ in records]
    if layout is None:
        return settings, found
    try:
        layout.check(
            store.describe(),
            n_bits=des.n_bits if n_bits_given else None,
            bigfiles_prefix=des.bigfiles_prefix if prefix_given else None,
        )
    except LayoutMismatch as exc:
        raise ConfigError("DES_N_BITS", str(exc)) from None
    des = dataclasses.replace(des, n_bits=layout.n_bits, bigfiles_prefix=layout.bigfiles_prefix)
    return dataclasses.replace(settings, des=des), found
