from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from des_format import LocalObjectStore, ShardReader, ShardRetriever
from des_packer import (
    PackAborted,
    PackOptions,
    pack,
    plan_shards,
    read_manifest,
)
from des_packer.cli import des_app
from des_packer_testkit import CountingStore, DataSet, make_dataset, tree_bytes, write_manifest
from des_routing import locate_shard
from typer.testing import CliRunner

OPTS = PackOptions(n_bits=4, workers=2)


def read_back(out: Path, ds: DataSet, n_bits: int = 4) -> dict[str, bytes]:
    retriever = ShardRetriever(LocalObjectStore(out))
    got = {}
    for row in ds.rows:
        key = locate_shard(row["uid"], row["created_at"], n_bits).object_key
        got[row["uid"]] = retriever.read(key, row["uid"])
    return got


def test_every_file_comes_back_byte_exact_through_des_get_batch(
    make_data: object, tmp_path: Path
) -> None:
    ds = make_dataset(tmp_path / "d", n=60, big=2, big_size=3000)
    out = tmp_path / "out"
    report = pack(
        read_manifest(ds.manifest), str(out), PackOptions(n_bits=4, big_file_threshold=2500)
    )
    assert report.files == 62
    assert report.failures == ()
    assert report.bytes_in == sum(r["size_bytes"] for r in ds.rows)
    assert report.bytes_out == sum(len(b) for b in tree_bytes(out).values())
    assert (
        len(list((out / "20240301" / "_bigFiles").iterdir())) == 1
        or len(list((out / "20240302" / "_bigFiles").iterdir())) == 1
    )
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"uid": r["uid"], "created_at": r["created_at"]}) + "\n" for r in ds.rows
        )
    )
    result = CliRunner().invoke(
        des_app,
        [
            "--base-dir",
            str(out),
            "--n-bits",
            "4",
            "get",
            "--batch",
            str(batch),
            "--out",
            str(tmp_path / "got"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] == 62
    for row in ds.rows:
        assert (tmp_path / "got" / row["uid"]).read_bytes() == ds.content(row["uid"])


def test_same_files_give_byte_identical_shards_whatever_the_workers(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=80)
    pack(read_manifest(ds.manifest), str(tmp_path / "a"), PackOptions(n_bits=4, workers=1))
    pack(
        read_manifest(ds.manifest),
        str(tmp_path / "b"),
        PackOptions(n_bits=4, workers=4, max_inflight_bytes=1),
    )
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert a == b
    shards = [k for k in a if k.endswith(".des") and "/." not in k]  # not lock files
    assert len(shards) == len(plan_shards(read_manifest(ds.manifest), n_bits=4).shards)


def test_shard_range_splits_give_the_same_shards_as_one_run(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=80)
    pack(read_manifest(ds.manifest), str(tmp_path / "one"), OPTS)
    r1 = pack(
        read_manifest(ds.manifest),
        str(tmp_path / "split"),
        PackOptions(n_bits=4, shard_range=(0, 6)),
    )
    r2 = pack(
        read_manifest(ds.manifest),
        str(tmp_path / "split"),
        PackOptions(n_bits=4, shard_range=(7, 15)),
    )
    assert r1.shards_written > 0
    assert r2.shards_written > 0
    assert r1.shards_appended == r2.shards_appended == 0
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "split")


def test_rollover_reads_every_file_in_at_most_3_requests_cold_and_1_warm(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=120, days=1)
    out = tmp_path / "out"
    report = pack(read_manifest(ds.manifest), str(out), PackOptions(n_bits=4, max_shard_size=2048))
    parts = sorted(p.name for p in out.rglob("*.p*.des"))
    assert parts, "a 2 KiB limit must roll over into continuation parts"
    assert sum(s.parts for s in report.shards) == len(parts)
    for p in out.rglob("*.des"):
        assert p.stat().st_size <= 2048 or ".p" not in p.name or p.stat().st_size < 4096
    from des_format import IndexCache

    in_parts = 0
    for row in ds.rows:
        key = locate_shard(row["uid"], row["created_at"], 4).object_key
        store = CountingStore(LocalObjectStore(out))
        cold = ShardRetriever(store)
        assert cold.read(key, row["uid"]) == ds.content(row["uid"])
        assert len(store.calls) <= 3, store.calls
        assert not any(c[0] == "head" for c in store.calls)
        in_parts += any(".p" in k for _m, k in store.calls)
        warm_store = CountingStore(LocalObjectStore(out))
        warm = ShardRetriever(warm_store, cache=IndexCache(1 << 20))
        warm.read(key, row["uid"])
        warm_store.calls.clear()
        assert warm.read(key, row["uid"]) == ds.content(row["uid"])
        assert len(warm_store.calls) == (1 if row["size_bytes"] else 0)  # empty: no payload
    assert in_parts > 0


def test_late_files_are_appended_and_old_files_kept(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=40)
    first = [r for i, r in enumerate(ds.rows) if i % 3 == 0]
    late = [r for i, r in enumerate(ds.rows) if i % 3 != 0]
    out = tmp_path / "out"
    m1 = write_manifest(ds.root / "m1.json", first)
    m2 = write_manifest(ds.root / "m2.json", [*late, first[0]])
    r1 = pack(read_manifest(m1), str(out), OPTS)
    assert r1.files == len(first)
    r2 = pack(read_manifest(m2), str(out), OPTS)
    assert r2.files == len(late)
    assert r2.shards_appended > 0
    assert r2.duplicates == (first[0]["uid"],)
    assert read_back(out, ds) == {r["uid"]: ds.content(r["uid"]) for r in ds.rows}
    for shard in out.rglob("*.des"):
        with ShardReader.open_path(shard) as reader:
            uids = [e.uid for e in reader.iter_entries()]
            assert len(uids) == len(set(uids))
            reader.verify(deep=True)
    assert not list(out.rglob(".des-tmp.*"))


def test_rerun_skips_complete_shards_and_changes_nothing(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=40)
    out = tmp_path / "out"
    first = pack(read_manifest(ds.manifest), str(out), OPTS)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.des")}
    again = pack(read_manifest(ds.manifest), str(out), OPTS)
    assert again.files == 0
    assert again.shards_skipped == first.shards_written
    assert again.shards_written == again.shards_appended == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.des")} == before


def test_leftover_temp_files_are_removed(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=10, days=1)
    out = tmp_path / "out"
    plan = plan_shards(read_manifest(ds.manifest), n_bits=4)
    day = out / plan.shards[0].date_dir
    day.mkdir(parents=True)
    name = plan.shards[0].key.rsplit("/", 1)[1]
    (day / f".des-tmp.{name}.0.abc").write_bytes(b"half a shard")
    (day / ".des-tmp.ZZ.des.0.abc").write_bytes(b"someone else's")
    pack(read_manifest(ds.manifest), str(out), OPTS)
    assert sorted(p.name for p in day.glob(".des-tmp.*")) == [".des-tmp.ZZ.des.0.abc"]


def test_skip_mode_leaves_bad_files_out(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=12)
    rows = [dict(r) for r in ds.rows]
    rows[3]["source_path"] = "input/absent.bin"
    rows[5]["size_bytes"] += 1
    m = write_manifest(ds.root / "bad.json", rows)
    out = tmp_path / "out"
    report = pack(read_manifest(m), str(out), PackOptions(n_bits=4, on_error="skip"))
    assert report.files == 10
    assert sorted(u for u, _ in report.failures) == [rows[3]["uid"], rows[5]["uid"]]
    reasons = dict(report.failures)
    assert reasons[rows[3]["uid"]] == (
        f"source {ds.root / 'input' / 'absent.bin'} does not exist; fix source_path in the manifest"
    )
    assert reasons[rows[5]["uid"]].endswith(
        f"has {rows[5]['size_bytes'] - 1} bytes but size_bytes is {rows[5]['size_bytes']}; "
        "fix size_bytes in the manifest (or the file)"
    )


def test_fail_mode_stops_and_earlier_shards_stay_complete(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=40, days=1)
    plan = plan_shards(read_manifest(ds.manifest), n_bits=4)
    victim = plan.shards[-1].entries[-1]
    os.unlink(victim.source)
    out = tmp_path / "out"
    with pytest.raises(PackAborted, match="does not exist") as info:
        pack(read_manifest(ds.manifest), str(out), OPTS)
    report = info.value.report
    assert report.failures[-1][0] == victim.uid
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.des"))
    assert written == [s.key for s in plan.shards[:-1]]
    assert not list(out.rglob(".des-tmp.*"))


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_every_codec_round_trips(tmp_path: Path, codec: str) -> None:
    ds = make_dataset(tmp_path / "d", n=16)
    out = tmp_path / "out"
    report = pack(read_manifest(ds.manifest), str(out), PackOptions(n_bits=4, codec=codec))
    assert report.files == 16
    assert read_back(out, ds) == {r["uid"]: ds.content(r["uid"]) for r in ds.rows}
    codecs = set()
    for shard in out.rglob("*.des"):
        with ShardReader.open_path(shard) as reader:
            codecs |= {e.codec.name.lower() for e in reader.iter_entries()}
    assert codecs == ({"none"} if codec == "none" else {"none", codec})
