"""The layout record's re-check (``_layout_watch``) without a server: what one check asks of
each zone's store (one HEAD while the record is unchanged), and the faults it reports when
the record changes, disappears, appears or stops being one; and ``DES_LAYOUT_CHECK_SECONDS``.

The real service is tested in test_layout_watch_server.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from des_format import (
    LAYOUT_KEY,
    LayoutMismatch,
    LocalObjectStore,
    StorageUnavailable,
    StoreLayout,
)
from des_http import HttpSettings
from des_http._layout_watch import LayoutWatch, ZoneRecord, combined_layout, read_zone_records
from des_http._problems import ConfigError
from des_http_testkit import RecordingStore


def _record(base: Path, n_bits: int, prefix: str = "_bigFiles") -> None:
    """Replace the record, as another writer re-initialising the store would."""
    tmp = base / "record.tmp"
    tmp.write_bytes(StoreLayout(n_bits, prefix).to_bytes())
    tmp.replace(base / LAYOUT_KEY)


class Watched:
    """A watch over local zones, with the store requests and the faults it reported."""

    def __init__(self, bases: dict[str, Path], n_bits: int = 8) -> None:
        self.stores = {what: RecordingStore(LocalObjectStore(b)) for what, b in bases.items()}
        records = read_zone_records(list(self.stores.items()))
        self.faults: list[str] = []
        self.watch = LayoutWatch(
            [r for r, _ in records],
            n_bits=n_bits,
            bigfiles_prefix="_bigFiles",
            on_fault=self.faults.append,
        )
        for s in self.stores.values():
            s.calls.clear()

    def check(self) -> list[tuple[str, str]]:
        """One check; the store requests it made (op, key), all zones in order."""
        for s in self.stores.values():
            s.calls.clear()
        self.watch.check()
        return [c for s in self.stores.values() for c in s.calls]


def test_an_unchanged_record_costs_one_head_per_check(tmp_path: Path) -> None:
    _record(tmp_path, 8)
    w = Watched({"the shard directory": tmp_path})
    for _ in range(3):
        assert w.check() == [("head", LAYOUT_KEY)]
        assert w.watch.fault is None
    assert w.faults == []


def test_another_n_bits_stops_the_files_naming_both_values_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _record(tmp_path, 8)
    w = Watched({"the shard directory": tmp_path})
    _record(tmp_path, 6)
    with caplog.at_level(logging.WARNING, logger="des_http.errors"):
        assert w.check() == [("head", LAYOUT_KEY), ("read_tail", LAYOUT_KEY)]
        assert w.check() == [("head", LAYOUT_KEY)]  # the new ETag is known: one request
    assert w.watch.fault == (
        f"the layout record {LAYOUT_KEY} of the shard directory changed while the service "
        "ran and now records n_bits 6 (this service reads with n_bits 8): files would be "
        "looked up in the wrong shards. Restore the record if the store was re-initialised "
        "by mistake; otherwise restart des-http with the store's values (DES_N_BITS=6, "
        "DES_BIGFILES_PREFIX=_bigFiles)"
    )
    assert w.faults == ["mismatch"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"files are not served: {w.watch.fault}"]
    assert str(tmp_path) not in w.watch.fault
    _record(tmp_path, 8)  # restored
    assert w.check() == [("head", LAYOUT_KEY), ("read_tail", LAYOUT_KEY)]
    assert w.watch.fault is None
    assert w.faults == ["mismatch"]


def test_another_big_file_prefix_is_a_mismatch(tmp_path: Path) -> None:
    _record(tmp_path, 8)
    w = Watched({"the shard directory": tmp_path})
    _record(tmp_path, 8, "_other")
    w.check()
    assert w.watch.fault is not None
    assert (
        "now records big-file prefix '_other' (this service reads with '_bigFiles')"
        in w.watch.fault
    )
    assert "DES_BIGFILES_PREFIX=_other" in w.watch.fault
    assert w.faults == ["mismatch"]


def test_a_record_that_disappears_stops_the_files_until_it_is_back(tmp_path: Path) -> None:
    _record(tmp_path, 8)
    w = Watched({"the shard directory": tmp_path})
    (tmp_path / LAYOUT_KEY).unlink()
    assert w.check() == [("head", LAYOUT_KEY)]
    assert w.watch.fault == (
        f"the layout record {LAYOUT_KEY} of the shard directory is gone while the service ran "
        "(it served with n_bits 8, big-file prefix '_bigFiles'); another writer may be "
        "re-initialising the store. Restore the record, or restart des-http once the store "
        "is settled"
    )
    w.check()
    assert w.faults == ["missing"]
    _record(tmp_path, 6)  # back, but with other settings: still not served
    w.check()
    assert w.watch.fault is not None
    assert "now records n_bits 6" in w.watch.fault
    assert w.faults == ["missing", "mismatch"]
    _record(tmp_path, 8)
    w.check()
    assert w.watch.fault is None


def test_a_store_without_a_record_is_checked_when_one_appears(tmp_path: Path) -> None:
    w = Watched({"the shard directory": tmp_path})
    assert w.check() == [("head", LAYOUT_KEY)]
    assert w.watch.fault is None  # none at start, none now: served as before
    _record(tmp_path, 8)  # a writer with the same settings records the layout
    assert w.check() == [("head", LAYOUT_KEY), ("read_tail", LAYOUT_KEY)]
    assert w.watch.fault is None
    assert w.check() == [("head", LAYOUT_KEY)]
    other = tmp_path / "other"
    other.mkdir()
    w2 = Watched({"the shard directory": other})
    _record(other, 5)
    w2.check()
    assert w2.watch.fault is not None
    assert "now records n_bits 5 (this service reads with n_bits 8)" in w2.watch.fault
    assert w2.faults == ["mismatch"]


def test_a_record_that_is_no_longer_one_stops_the_files(tmp_path: Path) -> None:
    _record(tmp_path, 8)
    w = Watched({"the shard directory": tmp_path})
    (tmp_path / LAYOUT_KEY).write_bytes(b"{not json")
    w.check()
    assert w.watch.fault is not None
    assert "is no longer a DES layout record" in w.watch.fault
    assert w.faults == ["unreadable"]


def test_a_record_unreadable_at_start_is_served_as_the_start_decided(tmp_path: Path) -> None:
    (tmp_path / LAYOUT_KEY).write_bytes(b"{not json")
    store = LocalObjectStore(tmp_path)
    watch = LayoutWatch(
        [ZoneRecord("the shard directory", store)], n_bits=8, bigfiles_prefix="_bigFiles"
    )
    watch.check()
    assert watch.fault is None
    (tmp_path / LAYOUT_KEY).write_bytes(b"{still not json")
    watch.check()
    assert watch.fault is not None
    assert "no longer a DES layout record" in watch.fault


def test_each_zone_is_checked_and_named(tmp_path: Path) -> None:
    bases = {f"zone {n!r}": tmp_path / n for n in ("eu", "us")}
    for base in bases.values():
        base.mkdir()
        _record(base, 8)
    w = Watched(bases)
    assert w.check() == [("head", LAYOUT_KEY), ("head", LAYOUT_KEY)]
    _record(bases["zone 'us'"], 9)
    w.check()
    assert w.watch.fault is not None
    assert w.watch.fault.startswith(f"the layout record {LAYOUT_KEY} of zone 'us' changed")
    assert "zone 'eu'" not in w.watch.fault
    (bases["zone 'eu'"] / LAYOUT_KEY).unlink()
    w.check()
    assert "zone 'eu' is gone" in w.watch.fault
    assert "zone 'us' changed" in w.watch.fault
    assert w.faults == ["mismatch", "missing"]


def test_a_store_that_does_not_answer_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _record(tmp_path, 8)
    w = Watched({"the shard directory": tmp_path})
    store = w.stores["the shard directory"]
    store.fail = StorageUnavailable("down")
    with caplog.at_level(logging.WARNING, logger="des_http.errors"):
        w.check()
        w.check()
        assert w.watch.fault is None
        store.fail = None
        _record(tmp_path, 6)
        w.check()
    assert w.watch.fault is not None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "the layout record of the shard directory could not be checked "
        "(StorageUnavailable); checking again later",
        f"files are not served: {w.watch.fault}",
        "the layout record of the shard directory can be checked again",
    ]


def test_des_layout_check_seconds() -> None:
    base = {"DES_BACKEND": "local", "DES_BASE_DIR": "/tmp", "DES_N_BITS": "8"}
    assert HttpSettings.from_env(base).layout_check_seconds == 60
    assert (
        HttpSettings.from_env({**base, "DES_LAYOUT_CHECK_SECONDS": "5"}).layout_check_seconds == 5
    )
    assert (
        HttpSettings.from_env({**base, "DES_LAYOUT_CHECK_SECONDS": "0"}).layout_check_seconds == 0
    )
    for bad, why in (("-1", "from 0 to 86400, got -1"), ("1m", "whole number, got '1m'")):
        with pytest.raises(ConfigError, match=why) as info:
            HttpSettings.from_env({**base, "DES_LAYOUT_CHECK_SECONDS": bad})
        assert info.value.variable == "DES_LAYOUT_CHECK_SECONDS"


def test_the_start_reads_each_zone_once_and_refuses_zones_that_disagree(tmp_path: Path) -> None:
    bases = {f"zone {n!r}": tmp_path / n for n in ("eu", "us", "ap")}
    for base in bases.values():
        base.mkdir()
    _record(bases["zone 'eu'"], 8)
    _record(bases["zone 'us'"], 8)  # ap: none yet
    stores = {what: RecordingStore(LocalObjectStore(b)) for what, b in bases.items()}
    records = read_zone_records(list(stores.items()))
    assert [s.calls for s in stores.values()] == [[("read_tail", LAYOUT_KEY)]] * 3
    assert [(r.what, r.present, r.etag is not None) for r, _ in records] == [
        ("zone 'eu'", True, True),
        ("zone 'us'", True, True),
        ("zone 'ap'", False, False),
    ]
    assert combined_layout(records) == StoreLayout(8)
    _record(bases["zone 'us'"], 9)
    with pytest.raises(LayoutMismatch) as info:
        combined_layout(read_zone_records(list(stores.items())))
    us, eu = tmp_path / "us" / LAYOUT_KEY, tmp_path / "eu" / LAYOUT_KEY
    assert str(info.value) == (
        f"{us} (n_bits 9, big-file prefix '_bigFiles') disagrees with {eu} (n_bits 8, "
        "big-file prefix '_bigFiles'): the zones were written with different settings"
    )
