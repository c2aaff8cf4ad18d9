"""Packing with several processes (``PackOptions.processes``, ``des-pack --processes``): the
same bytes, the same report, failures and errors as one process gives them, progress summed
over the children."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from des_format import ShardReader
from des_packer import (
    ManifestEntry,
    PackAborted,
    PackConfigError,
    PackOptions,
    ProgressEvent,
    pack,
    read_manifest,
)
from des_packer._sources import SourceReader
from des_packer_testkit import make_dataset, run_des_pack, tree_bytes

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (Linux)")

BIG = 2500


def _report_without_time(report: object) -> object:
    return dataclasses.replace(report, elapsed_seconds=0.0)  # type: ignore[type-var]


@pytest.mark.parametrize("block_size", [0, 4096])
def test_processes_write_the_same_bytes_and_report(tmp_path: Path, block_size: int) -> None:
    ds = make_dataset(tmp_path / "d", n=120, big=3, days=3)
    base = PackOptions(
        n_bits=4, big_file_threshold=BIG, max_shard_size=4000, block_size=block_size,
        block_member_max=2048 if block_size else 64 * 1024,
    )  # fmt: skip
    one = pack(read_manifest(ds.manifest), str(tmp_path / "one"), base)
    opts = dataclasses.replace(base, processes=3)
    many = pack(read_manifest(ds.manifest), str(tmp_path / "many"), opts)
    assert tree_bytes(tmp_path / "many") == tree_bytes(tmp_path / "one")
    assert _report_without_time(many) == _report_without_time(one)
    assert many.files == 123
    assert len(many.shards) > 3
    # a rerun with processes: every shard skipped, every uid listed once as already present
    again = pack(read_manifest(ds.manifest), str(tmp_path / "many"), opts)
    again_one = pack(read_manifest(ds.manifest), str(tmp_path / "one"), base)
    assert _report_without_time(again) == _report_without_time(again_one)
    assert len(again.duplicates) == 123


def test_progress_is_summed_over_the_children(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=80, days=2)
    events: list[ProgressEvent] = []
    opts = PackOptions(n_bits=4, processes=2, progress=events.append)
    report = pack(read_manifest(ds.manifest), str(tmp_path / "out"), opts)
    assert events[-1].files_done == events[-1].files_total == 80
    assert events[-1].bytes_done == events[-1].bytes_total == report.bytes_in
    assert sorted(e.shard_key for e in events if e.shard_status == "written") == sorted(
        s.key for s in report.shards
    )
    assert [e.files_done for e in events] == sorted(e.files_done for e in events)


def test_a_bad_file_stops_every_process(tmp_path: Path) -> None:
    """on_error="fail": PackAborted with the failure; nothing partial is visible, no
    temporary file is left, every visible shard is complete and readable."""
    ds = make_dataset(tmp_path / "d", n=200, days=4)
    victim = ds.rows[150]
    os.unlink(ds.manifest.parent / victim["source_path"])
    out = tmp_path / "out"
    with pytest.raises(PackAborted, match="does not exist") as info:
        pack(read_manifest(ds.manifest), str(out), PackOptions(n_bits=4, processes=2))
    report = info.value.report
    assert report.failures == ((victim["uid"], report.failures[0][1]),)
    assert [s.status for s in report.shards].count("failed") == 1
    assert not list(out.rglob(".des-tmp.*"))
    written = {s.key for s in report.shards if s.status == "written"}
    assert {str(p.relative_to(out)) for p in out.rglob("*.des")} == written
    for key in written:
        with ShardReader.open_path(out / key) as reader:
            reader.verify(deep=True)


def test_skip_lists_failures_in_plan_order(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=200, days=4)
    victims = [ds.rows[i] for i in (170, 20, 95)]
    for v in victims:
        os.unlink(ds.manifest.parent / v["source_path"])
    one = pack(read_manifest(ds.manifest), str(tmp_path / "one"), PackOptions(on_error="skip"))
    opts = PackOptions(on_error="skip", processes=2)
    many = pack(read_manifest(ds.manifest), str(tmp_path / "many"), opts)
    assert many.failures == one.failures
    assert len(many.failures) == 3
    assert tree_bytes(tmp_path / "many") == tree_bytes(tmp_path / "one")


def test_an_error_in_a_child_reaches_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = make_dataset(tmp_path / "d", n=60, days=2)
    target = ds.rows[33]["uid"]
    real_read = SourceReader.read

    def read(self: SourceReader, entry: ManifestEntry) -> bytes:
        if entry.uid == target:
            raise RuntimeError("disk on fire")
        return real_read(self, entry)

    monkeypatch.setattr(SourceReader, "read", read)  # inherited by the forked children
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        pack(read_manifest(ds.manifest), str(out), PackOptions(n_bits=4, processes=2))
    assert not list(out.rglob(".des-tmp.*"))


def test_processes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(PackConfigError, match="--processes must be at least 1, got 0"):
        PackOptions(processes=0).validate()
    ds = make_dataset(tmp_path / "d", n=4)
    code, _out, err = run_des_pack(
        "--input-json", str(ds.manifest), "--output-dir", str(tmp_path / "o"), "--processes", "0"
    )
    assert code == 2
    assert "--processes must be at least 1, got 0" in err


def test_cli_default_uses_processes_and_writes_the_same(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=90, days=2)
    args = ["--input-json", str(ds.manifest), "--n-bits", "4", "--no-progress"]
    assert run_des_pack(*args, "--output-dir", str(tmp_path / "a"))[0] == 0
    assert run_des_pack(*args, "--output-dir", str(tmp_path / "b"), "--processes", "1")[0] == 0
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
