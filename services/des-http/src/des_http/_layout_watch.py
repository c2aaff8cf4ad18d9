"""The store's layout record, re-checked while the service runs (:class:`LayoutWatch`).

The record (``_des_layout.json``, one per zone) is read once at start (``_store_layout``),
with its ETag. Afterwards a background task asks each zone's record for its ETag every
``DES_LAYOUT_CHECK_SECONDS`` (one HEAD per zone: a HeadObject on S3; on local disk the
file's inode, size and modification time), never on the read path of a file. An unchanged
ETag ends the check; a changed one is read (one GET) and compared with the settings the
service serves with:

- it still agrees (or a store without a record got one that agrees): the new ETag is kept;
- it records another n_bits or big-file prefix (another writer re-initialised the store), is
  no longer a layout record, or is gone where there was one: every file would be looked up
  in the wrong shard, so the service stops answering files. ``/ready`` and every file
  request answer 503 with a problem naming the recorded and the served values and the fix;
  the error is logged once and counted (``des_store_layout_faults_total``). A record that
  agrees again ends it.

A check that cannot reach the store changes nothing (``/ready`` reports the storage itself).
Messages name the place as ``/ready`` does (a zone, "the shard directory"), never a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from des_format import (
    FORMAT_VERSION,
    LAYOUT_KEY,
    DesFormatError,
    ObjectNotFound,
    ObjectStore,
    StoreLayout,
    agreed_layout,
)

__all__ = ["LayoutWatch", "ZoneRecord", "combined_layout", "read_zone_records"]

log = logging.getLogger("des_http.errors")

# A layout record is a few hundred bytes; des-format reads at most this much of one too.
RECORD_MAX_BYTES = 64 << 10


@dataclass(slots=True)
class ZoneRecord:
    """What the service knows of one zone's record. ``present``: None while unknown (the
    read at start failed); ``layout``: the record read at start."""

    what: str  # as /ready names the place: "zone 'eu'", "the shard directory"
    store: ObjectStore
    present: bool | None = None
    etag: str | None = None
    layout: StoreLayout | None = None
    fault: str | None = None
    failing: bool = False  # the last check could not reach the store (logged once)


def read_zone_records(zones: list[tuple[str, ObjectStore]]) -> list[tuple[ZoneRecord, str]]:
    """One read per zone at start: each zone's record and where it lives (for start-up
    messages). ``DesFormatError`` when a record cannot be read or is not one."""
    out = []
    for what, store in zones:
        where = store.describe(LAYOUT_KEY)
        try:
            tail = store.read_tail(LAYOUT_KEY, RECORD_MAX_BYTES)
        except ObjectNotFound:
            out.append((ZoneRecord(what, store, present=False), where))
            continue
        layout = StoreLayout.from_bytes(tail.data, where)
        out.append((ZoneRecord(what, store, True, tail.etag, layout), where))
    return out


def combined_layout(records: list[tuple[ZoneRecord, str]]) -> StoreLayout | None:
    """The store's layout: the first zone's record (None when no zone has one); zones whose
    records disagree raise ``LayoutMismatch`` naming both."""
    return agreed_layout([(where, r.layout) for r, where in records if r.layout is not None])


class LayoutWatch:
    """See the module's docs. ``fault``: why files are not served (None: they are), read by
    the file endpoints and ``/ready``; ``on_fault(reason)``: told once per new fault."""

    def __init__(
        self,
        zones: list[ZoneRecord],
        *,
        n_bits: int,
        bigfiles_prefix: str,
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.zones = zones
        self.n_bits = n_bits
        self.bigfiles_prefix = bigfiles_prefix.strip("/")
        self.on_fault = on_fault
        self.fault: str | None = None

    def check(self) -> None:
        """Check every zone's record once (blocking: run it on a thread)."""
        for zone in self.zones:
            try:
                self._check_zone(zone)
            except Exception as exc:  # noqa: BLE001 - a store that does not answer
                if not zone.failing:
                    zone.failing = True
                    log.warning(
                        "the layout record of %s could not be checked (%s); checking again later",
                        zone.what,
                        type(exc).__name__,
                    )
                continue
            if zone.failing:
                zone.failing = False
                log.warning("the layout record of %s can be checked again", zone.what)
        faults = [z.fault for z in self.zones if z.fault is not None]
        self.fault = "; ".join(faults) if faults else None

    async def run(self, seconds: float, in_thread: Callable[..., Awaitable[Any]]) -> None:
        """Check every ``seconds`` until cancelled, through ``in_thread`` (the I/O threads)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await in_thread(self.check)
            except Exception:  # the threads shut down, say: the next round tries again
                log.exception("the layout record could not be checked")

    def lifespan(
        self, seconds: float, in_thread: Callable[..., Awaitable[Any]]
    ) -> Callable[[Any], AbstractAsyncContextManager[None]]:
        """An ASGI lifespan (FastAPI's ``lifespan=``) that runs :meth:`run` while it lasts."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            task = asyncio.create_task(self.run(seconds, in_thread))
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        return lifespan

    def _check_zone(self, zone: ZoneRecord) -> None:
        store = zone.store
        try:
            etag = store.head(LAYOUT_KEY).etag
        except ObjectNotFound:
            self._absent(zone)
            return
        if zone.present and etag is not None and etag == zone.etag:
            return  # unchanged: the usual check, one request
        try:
            tail = store.read_tail(LAYOUT_KEY, RECORD_MAX_BYTES)
        except ObjectNotFound:
            self._absent(zone)
            return
        known = zone.present is not None
        zone.present = True
        zone.etag = tail.etag or etag
        try:
            layout = StoreLayout.from_bytes(tail.data, zone.what)
        except DesFormatError:
            # Not known at start (unreadable then too): served with the settings given, as
            # the start decided; unreadable since: not served.
            if known:
                self._set_fault(zone, "unreadable", self._unreadable(zone))
            return
        diffs = self._differences(layout)
        if diffs:
            self._set_fault(zone, "mismatch", self._mismatch(zone, layout, diffs))
            return
        self._set_fault(zone, None, None)

    def _absent(self, zone: ZoneRecord) -> None:
        was = zone.present
        zone.present, zone.etag = False, None
        if was:  # there was a record: another writer may be re-initialising the store
            self._set_fault(zone, "missing", self._missing(zone))

    def _set_fault(self, zone: ZoneRecord, reason: str | None, fault: str | None) -> None:
        if fault == zone.fault:
            return
        zone.fault = fault
        if fault is None:
            log.warning(
                "the layout record of %s agrees with the service's settings again: files "
                "are served",
                zone.what,
            )
            return
        log.error("files are not served: %s", fault)
        if self.on_fault is not None and reason is not None:
            self.on_fault(reason)

    def _differences(self, layout: StoreLayout) -> list[str]:
        out = []
        if layout.n_bits != self.n_bits:
            out.append(f"n_bits {layout.n_bits} (this service reads with n_bits {self.n_bits})")
        if layout.bigfiles_prefix != self.bigfiles_prefix:
            out.append(
                f"big-file prefix {layout.bigfiles_prefix!r} (this service reads with "
                f"{self.bigfiles_prefix!r})"
            )
        if layout.format_version > FORMAT_VERSION:
            out.append(
                f"shard format version {layout.format_version} (this service reads up to "
                f"{FORMAT_VERSION}: upgrade des-http)"
            )
        return out

    def _served(self) -> str:
        return f"n_bits {self.n_bits}, big-file prefix {self.bigfiles_prefix!r}"

    def _mismatch(self, zone: ZoneRecord, layout: StoreLayout, diffs: list[str]) -> str:
        return (
            f"the layout record {LAYOUT_KEY} of {zone.what} changed while the service ran "
            f"and now records {'; '.join(diffs)}: files would be looked up in the wrong "
            "shards. Restore the record if the store was re-initialised by mistake; otherwise "
            f"restart des-http with the store's values (DES_N_BITS={layout.n_bits}, "
            f"DES_BIGFILES_PREFIX={layout.bigfiles_prefix})"
        )

    def _missing(self, zone: ZoneRecord) -> str:
        return (
            f"the layout record {LAYOUT_KEY} of {zone.what} is gone while the service ran "
            f"(it served with {self._served()}); another writer may be re-initialising the "
            "store. Restore the record, or restart des-http once the store is settled"
        )

    def _unreadable(self, zone: ZoneRecord) -> str:
        return (
            f"the layout record {LAYOUT_KEY} of {zone.what} changed while the service ran and "
            f"is no longer a DES layout record (the service serves with {self._served()}). "
            "Restore the record from a backup, or restart des-http once the store is settled"
        )
