"""Deleting and erasing files in local shards: des delete, des repack, des deletions."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    EntryDeleted,
    IndexCache,
    LocalObjectStore,
    LocalShardEditor,
    ObjectStore,
    ShardRetriever,
    read_shard_index,
)
from des_format.testing import CountingStore
from des_packer import PackOptions, pack, read_manifest
from des_packer._deletions import iter_deletions
from des_packer._repack import RepackOptions, plan_repack, repack, scan_shard
from des_packer.cli import des_app
from des_packer_testkit import write_manifest
from des_routing import locate_shard
from typer.testing import CliRunner

N_BITS = 4
DAY = "2024-03-01"


def make_files(root: Path, n: int = 40, *, big: int = 0, seed: int = 3) -> list[dict[str, Any]]:
    """Random (stored raw) and text (compressed) files, plus ``big`` files of 3000 random
    bytes; file ``big-1`` has the same content as ``big-0`` (one big-file object)."""
    rnd = random.Random(seed)
    src = root / "input"
    src.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    shared = rnd.randbytes(3000)
    for i in range(n + big):
        if i >= n:
            j = i - n
            data = shared if j < 2 else rnd.randbytes(3000)
            uid = f"big-{j}"
        elif i % 3 == 0:
            data = (f"text {i} {rnd.random()} " * 40).encode()
            uid = f"txt-{i:03d}"
        else:
            data = rnd.randbytes(200 + i)
            uid = f"bin-{i:03d}"
        (src / uid).write_bytes(data)
        rows.append(
            {
                "uid": uid,
                "created_at": f"{DAY}T{i % 24:02d}:00:00Z",
                "size_bytes": len(data),
                "source_path": f"input/{uid}",
            }
        )
    write_manifest(root / "m.json", rows)
    return rows


def content(root: Path, uid: str) -> bytes:
    return (root / "input" / uid).read_bytes()


def key_of(r: dict[str, Any]) -> str:
    return str(locate_shard(r["uid"], r["created_at"], N_BITS).object_key)


def warm_replica(
    store: ObjectStore, root: Path, rows: list[dict[str, Any]], live: dict[str, Any]
) -> tuple[CountingStore, ShardRetriever]:
    """Another replica reading ``store``, its index cache warm for every shard of ``rows``:
    ``live`` reads back in one request."""
    counted = CountingStore(store)
    replica = ShardRetriever(counted, cache=IndexCache(1 << 24))
    for r in rows:
        replica.stat(key_of(r), r["uid"])
    counted.reset()
    assert replica.read(key_of(live), live["uid"]) == content(root, live["uid"])
    assert counted.count == 1
    return counted, replica


def assert_replica_sees_deletes(
    counted: CountingStore,
    replica: ShardRetriever,
    root: Path,
    rows: list[dict[str, Any]],
    deleted: tuple[dict[str, Any], ...],
    live: dict[str, Any],
) -> None:
    """Through the warm replica ``deleted`` reads as gone, every other row as packed, and
    ``live`` still in one request."""
    for r in deleted:
        with pytest.raises(EntryDeleted):
            replica.read(key_of(r), r["uid"])
    for r in rows:
        if r not in deleted:
            assert replica.read(key_of(r), r["uid"]) == content(root, r["uid"]), r["uid"]
    counted.reset()
    assert replica.read(key_of(live), live["uid"]) == content(root, live["uid"])
    assert counted.count == 1


def des(out: Path, *args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(
        des_app, ["--base-dir", str(out), "--n-bits", str(N_BITS), *args], env={}
    )
    return result.exit_code, result.stdout_bytes, result.stderr


def all_bytes(base: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()]


def stored_bytes(base: Path, uid: str, created_at: str) -> bytes:
    """The bytes a shard stores for ``uid`` (compressed or raw) while it is still there."""
    key = locate_shard(uid, created_at, N_BITS).object_key
    store = LocalObjectStore(base)
    index, _etag = read_shard_index(store, key)
    e = index.lookup(uid)
    assert e is not None
    assert not e.is_bigfile
    from des_format import part_key

    okey = key if e.part == 0 else part_key(key, e.part)
    return store.read_range(okey, e.offset, e.offset + e.stored_size)


@pytest.fixture
def packed(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    rows = make_files(tmp_path)
    out = tmp_path / "out"
    report = pack(read_manifest(tmp_path / "m.json"), str(out), PackOptions(n_bits=N_BITS))
    assert report.files == len(rows)
    return out, rows


def read_everything(out: Path, rows: list[dict[str, Any]], src: Path) -> dict[str, Any]:
    r = ShardRetriever(LocalObjectStore(out))
    got: dict[str, Any] = {}
    for row in rows:
        key = locate_shard(row["uid"], row["created_at"], N_BITS).object_key
        try:
            got[row["uid"]] = r.read(key, row["uid"])
        except EntryDeleted:
            got[row["uid"]] = "deleted"
    return got


def test_delete_reads_as_gone_and_unknown_stays_not_found(
    packed: tuple[Path, list[dict[str, Any]]],
) -> None:
    out, rows = packed
    row = rows[1]
    code, stdout, err = des(out, "delete", row["uid"], "--created-at", row["created_at"])
    assert (code, err) == (0, "")
    assert stdout.decode() == (
        f"deleted {row['uid']} (hidden: its bytes are in the shard's head object until a"
        " repack erases them)\n"
    )
    code, stdout, err = des(out, "get", row["uid"], "--created-at", row["created_at"])
    assert (code, stdout) == (4, b"")
    assert err == f"des: error: {row['uid']}: deleted (gone; it will not come back)\n"
    # deleting again is fine; an unknown uid is not found (exit 1) both for get and delete
    code, stdout, _ = des(out, "delete", row["uid"], "--created-at", row["created_at"])
    assert (code, stdout.decode()) == (
        0,
        f"{row['uid']} was already deleted (hidden: its bytes are in the shard's head object"
        " until a repack erases them)\n",
    )
    code, _, err = des(out, "get", "nope-1", "--created-at", row["created_at"])
    assert code == 1
    assert "deleted" not in err
    code, _, err = des(out, "delete", "nope-1", "--created-at", row["created_at"])
    assert code == 1
    assert err.startswith("des: error: nope-1: not found")


def test_repack_erases_bytes_and_keeps_every_other_file(
    packed: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    out, rows = packed
    src = tmp_path
    victims = [r for r in rows if r["uid"] in ("bin-001", "txt-003", "bin-010", "txt-012")]
    stored = {r["uid"]: stored_bytes(out, r["uid"], r["created_at"]) for r in victims}
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"uid": r["uid"], "created_at": r["created_at"]}) + "\n" for r in victims
        )
    )
    assert des(out, "delete", "--batch", str(batch))[0] == 0
    editor = LocalShardEditor(out)
    hidden = list(iter_deletions(editor))
    assert sorted((d.uid, d.state) for d in hidden) == sorted((r["uid"], "hidden") for r in victims)
    blobs = b"\x00".join(all_bytes(out))
    for uid, s in stored.items():
        assert s in blobs, uid  # still there: only hidden

    before = {p: p.read_bytes() for p in out.rglob("*.des")}
    code, stdout, _ = des(out, "repack", "--dry-run")
    assert code == 0
    assert stdout.decode().count("would repack ") == len(
        {locate_shard(r["uid"], r["created_at"], N_BITS).object_key for r in victims}
    )
    assert {p: p.read_bytes() for p in out.rglob("*.des")} == before

    code, stdout, err = des(out, "repack", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert sum(r["erased"] for r in doc["repacked"]) == len(victims)
    assert doc["failures"] == []

    blobs = b"\x00".join(all_bytes(out))
    for r in victims:
        assert stored[r["uid"]] not in blobs
        assert content(src, r["uid"]) not in blobs
    got = read_everything(out, rows, src)
    for row in rows:
        want = "deleted" if row in victims else content(src, row["uid"])
        assert got[row["uid"]] == want, row["uid"]
    assert sorted((d.uid, d.state) for d in iter_deletions(editor)) == sorted(
        (r["uid"], "erased") for r in victims
    )
    code, stdout, err = des(out, "deletions", "--json")
    assert code == 0
    lines = [json.loads(x) for x in stdout.decode().splitlines()]
    assert sorted(x["uid"] for x in lines) == sorted(r["uid"] for r in victims)
    assert {x["state"] for x in lines} == {"erased"}
    assert all(set(x) == {"uid", "shard", "state"} for x in lines)
    # erased files keep reading as deleted (410), not as unknown
    v = victims[0]
    assert des(out, "get", v["uid"], "--created-at", v["created_at"])[0] == 4
    # nothing is left to repack
    code, stdout, _ = des(out, "repack", "--json")
    assert json.loads(stdout)["chosen"] == []


def test_repack_rounds_and_threshold(packed: tuple[Path, list[dict[str, Any]]]) -> None:
    out, rows = packed
    editor = LocalShardEditor(out)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(locate_shard(r["uid"], r["created_at"], N_BITS).object_key, []).append(r)
    keys = sorted(by_key)
    assert len(keys) >= 3
    for k in keys[:3]:
        r = by_key[k][0]
        assert des(out, "delete", r["uid"], "--created-at", r["created_at"])[0] == 0
    stats = [scan_shard(k, read_shard_index(editor.store, k)[0]) for k in keys]
    high = max(s.deleted_share for s in stats)
    assert [s.key for s in plan_repack(stats, threshold=high, max_shards=None)] == [
        s.key for s in stats if s.deleted_share == high
    ]
    first = repack(editor, RepackOptions(max_shards=2, bigfile_grace_seconds=0))
    assert (len(first.repacked), first.remaining) == (2, 1)
    states = sorted(d.state for d in iter_deletions(editor))
    assert states == ["erased", "erased", "hidden"]
    second = repack(editor, RepackOptions(max_shards=2, bigfile_grace_seconds=0))
    assert (len(second.repacked), second.remaining) == (1, 0)
    assert sorted(d.state for d in iter_deletions(editor)) == ["erased"] * 3


def test_big_file_object_goes_when_no_live_entry_references_it(tmp_path: Path) -> None:
    rows = make_files(tmp_path, n=6, big=3)
    out = tmp_path / "out"
    pack(
        read_manifest(tmp_path / "m.json"),
        str(out),
        PackOptions(n_bits=N_BITS, big_file_threshold=2500),
    )
    bigdir = out / "20240301" / "_bigFiles"
    assert len(list(bigdir.iterdir())) == 2  # big-0 and big-1 share their content
    shared = content(tmp_path, "big-0")
    editor = LocalShardEditor(out)
    opts = RepackOptions(bigfile_grace_seconds=0)
    big0, big1 = (next(r for r in rows if r["uid"] == u) for u in ("big-0", "big-1"))

    assert des(out, "delete", "big-0", "--created-at", big0["created_at"])[0] == 0
    repack(editor, opts)
    assert shared in b"".join(all_bytes(out))  # big-1 still references it
    got = read_everything(out, rows, tmp_path)
    assert got["big-0"] == "deleted"
    assert got["big-1"] == shared

    assert des(out, "delete", "big-1", "--created-at", big1["created_at"])[0] == 0
    assert [d.state for d in iter_deletions(editor) if d.uid == "big-1"] == ["hidden"]
    report = repack(editor, opts)
    assert len(report.bigfiles_removed) == 1
    assert shared not in b"".join(all_bytes(out))
    assert len(list(bigdir.iterdir())) == 1
    got = read_everything(out, rows, tmp_path)
    for r in rows:
        want = "deleted" if r["uid"] in ("big-0", "big-1") else content(tmp_path, r["uid"])
        assert got[r["uid"]] == want
    assert {d.state for d in iter_deletions(editor)} == {"erased"}


def test_unreferenced_big_file_within_grace_is_kept_and_reported(tmp_path: Path) -> None:
    rows = make_files(tmp_path, n=4, big=3)
    out = tmp_path / "out"
    pack(
        read_manifest(tmp_path / "m.json"),
        str(out),
        PackOptions(n_bits=N_BITS, big_file_threshold=2500),
    )
    editor = LocalShardEditor(out)
    row = next(r for r in rows if r["uid"] == "big-2")
    assert des(out, "delete", "big-2", "--created-at", row["created_at"])[0] == 0
    report = repack(editor, RepackOptions(bigfile_grace_seconds=3600))
    assert report.bigfiles_removed == ()
    recs = [d for d in iter_deletions(editor) if d.uid == "big-2"]
    assert [(d.state, d.leftovers) for d in recs] == [("erasing", 1)]
    assert repack(editor, RepackOptions(bigfile_grace_seconds=0)).bigfiles_removed != ()
    assert [d.state for d in iter_deletions(editor)] == ["erased"]


def test_repack_racing_an_append_loses_nothing(tmp_path: Path) -> None:
    rows = make_files(tmp_path, n=12)
    out = tmp_path / "out"
    pack(read_manifest(tmp_path / "m.json"), str(out), PackOptions(n_bits=N_BITS))
    victim = rows[1]
    key = locate_shard(victim["uid"], victim["created_at"], N_BITS).object_key
    victim_stored = stored_bytes(out, victim["uid"], victim["created_at"])
    assert des(out, "delete", victim["uid"], "--created-at", victim["created_at"])[0] == 0
    # late files routed to the same shard
    late_root = tmp_path / "late"
    late: list[dict[str, Any]] = []
    rnd = random.Random(9)
    i = 0
    while len(late) < 3:
        uid = f"late-{i}"
        i += 1
        if locate_shard(uid, victim["created_at"], N_BITS).object_key != key:
            continue
        data = rnd.randbytes(300)
        (late_root / "input").mkdir(parents=True, exist_ok=True)
        (late_root / "input" / uid).write_bytes(data)
        late.append(
            {
                "uid": uid,
                "created_at": victim["created_at"],
                "size_bytes": 300,
                "source_path": f"input/{uid}",
            }
        )
    write_manifest(late_root / "m.json", late)
    steps: list[str] = []

    def hook(step: str) -> None:
        steps.append(step)
        if step == "built" and steps.count("built") == 1:
            # a packer appends while the repack has built its new shard
            rep = pack(read_manifest(late_root / "m.json"), str(out), PackOptions(n_bits=N_BITS))
            assert rep.shards_appended == 1

    editor = LocalShardEditor(out)
    report = repack(editor, RepackOptions(prefix=key, bigfile_grace_seconds=0), hook=hook)
    assert [r.attempts for r in report.repacked] == [2]
    assert steps.count("built") == 2
    got = read_everything(out, rows, tmp_path)
    for r in rows:
        assert got[r["uid"]] == ("deleted" if r is victim else content(tmp_path, r["uid"]))
    retr = ShardRetriever(LocalObjectStore(out))
    for r in late:
        assert retr.read(key, r["uid"]) == content(late_root, r["uid"])
    assert victim_stored not in b"\x00".join(all_bytes(out))
    assert [d.state for d in iter_deletions(editor)] == ["erased"]


def test_repack_with_parts_uses_new_part_numbers(tmp_path: Path) -> None:
    rows = make_files(tmp_path, n=40)
    out = tmp_path / "out"
    opts = PackOptions(n_bits=N_BITS, max_shard_size=600)
    pack(read_manifest(tmp_path / "m.json"), str(out), opts)
    editor = LocalShardEditor(out)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(locate_shard(r["uid"], r["created_at"], N_BITS).object_key, []).append(r)
    key = max(sorted(by_key), key=lambda k: len(by_key[k]))
    victim = by_key[key][1]
    index, _ = read_shard_index(editor.store, key)
    old_parts = {e.part for e in index.iter_entries() if e.part}
    assert old_parts
    assert des(out, "delete", victim["uid"], "--created-at", victim["created_at"])[0] == 0
    repack(editor, replace(RepackOptions(prefix=key), max_part_size=300))
    index, _ = read_shard_index(editor.store, key)
    new_parts = {e.part for e in index.iter_entries() if e.part}
    assert new_parts
    assert min(new_parts) > max(old_parts)
    stem = key[:-4]
    on_disk = sorted(p.name for p in (out / key).parent.glob(f"{Path(stem).name}.p*.des"))
    assert on_disk == sorted(f"{Path(stem).name}.p{n}.des" for n in new_parts)
    got = read_everything(out, rows, tmp_path)
    for r in rows:
        assert got[r["uid"]] == ("deleted" if r is victim else content(tmp_path, r["uid"]))


def test_packing_the_manifest_again_does_not_bring_a_deleted_file_back(
    packed: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    out, rows = packed
    victim = rows[4]
    assert des(out, "delete", victim["uid"], "--created-at", victim["created_at"])[0] == 0
    again = pack(read_manifest(tmp_path / "m.json"), str(out), PackOptions(n_bits=N_BITS))
    assert victim["uid"] in again.duplicates
    assert des(out, "get", victim["uid"], "--created-at", victim["created_at"])[0] == 4
    repack(LocalShardEditor(out), RepackOptions(bigfile_grace_seconds=0))
    again = pack(read_manifest(tmp_path / "m.json"), str(out), PackOptions(n_bits=N_BITS))
    assert victim["uid"] in again.duplicates  # the erased tombstone still holds the uid
    assert des(out, "get", victim["uid"], "--created-at", victim["created_at"])[0] == 4
    assert content(tmp_path, victim["uid"]) not in b"\x00".join(all_bytes(out))


def test_usage_errors_exit_2_with_a_message(packed: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _rows = packed
    cases = [
        (("repack", "--threshold", "2"), "des: error: --threshold must be between 0 and 1"),
        (("repack", "--max-shards", "0"), "des: error: --max-shards must be at least 1"),
        (("deletions", "--state", "gone"), "des: error: --state must be hidden, erasing or"),
        (("delete",), "des: error: give UID --created-at T (or --batch FILE)"),
        (("delete", "--batch", str(out / "missing.jsonl")), "des: error: cannot read --batch"),
        (("delete", "x", "--created-at", "yesterday"), "des: error: 'x': "),
    ]
    for args, message in cases:
        code, stdout, err = des(out, *args)
        assert (code, stdout) == (2, b""), args
        assert err.startswith(message), (args, err)


def test_delete_erases_part_payloads_and_big_files_at_once(tmp_path: Path) -> None:
    import os
    import time

    from des_format import part_key

    rows = make_files(tmp_path, n=40, big=3)
    out = tmp_path / "out"
    opts = PackOptions(n_bits=N_BITS, max_shard_size=600, big_file_threshold=2500)
    pack(read_manifest(tmp_path / "m.json"), str(out), opts)
    store = LocalObjectStore(out)

    def entry_of(r: dict[str, Any]) -> Any:
        return read_shard_index(store, key_of(r))[0].lookup(r["uid"])

    in_parts = [r for r in rows if not entry_of(r).is_bigfile and entry_of(r).part >= 1]
    victim, live = in_parts[0], next(r for r in in_parts[1:] if key_of(r) == key_of(in_parts[0]))
    big = next(r for r in rows if r["uid"] == "big-2")  # content no other file has
    stored = stored_bytes(out, victim["uid"], victim["created_at"])
    counted, replica = warm_replica(LocalObjectStore(out), tmp_path, rows, live)
    # the big files were packed more than the grace period (an hour) ago
    past = time.time() - 7200
    for p in (out / "20240301" / "_bigFiles").iterdir():
        os.utime(p, (past, past))

    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"uid": r["uid"], "created_at": r["created_at"]}) + "\n"
            for r in (victim, big)
        )
    )
    code, stdout, err = des(out, "delete", "--batch", str(batch))
    assert (code, err) == (0, "")
    assert sorted(stdout.decode().splitlines()) == sorted(
        f"deleted {r['uid']} (its bytes are erased)" for r in (victim, big)
    )
    assert_replica_sees_deletes(counted, replica, tmp_path, rows, (victim, big), live)
    blobs = b"\x00".join(all_bytes(out))
    assert stored not in blobs
    for r in (victim, big):
        assert content(tmp_path, r["uid"]) not in blobs, r["uid"]
    e = entry_of(victim)
    part = (out / part_key(key_of(victim), e.part)).read_bytes()
    assert part[e.offset : e.offset + e.stored_size] == b"\x00" * e.stored_size
    code, stdout, _ = des(out, "deletions", "--json")
    assert code == 0
    states = {json.loads(x)["uid"]: json.loads(x)["state"] for x in stdout.decode().splitlines()}
    assert states == {victim["uid"]: "erased", big["uid"]: "erased"}
    # a shard with such tombstones still verifies, deep, and a repack still rewrites it
    assert des(out, "verify", str(out), "--deep")[0] == 0
    report = repack(LocalShardEditor(out), RepackOptions(bigfile_grace_seconds=0))
    assert report.failures == ()
    assert {d.uid: d.state for d in iter_deletions(LocalShardEditor(out))} == states
    assert des(out, "get", victim["uid"], "--created-at", victim["created_at"])[0] == 4


def test_deletions_tells_hidden_from_erased_bytes_in_parts(tmp_path: Path) -> None:
    from des_format import StorageUnavailable, delete_entries

    rows = make_files(tmp_path, n=30)
    out = tmp_path / "out"
    pack(
        read_manifest(tmp_path / "m.json"), str(out), PackOptions(n_bits=N_BITS, max_shard_size=600)
    )
    store = LocalObjectStore(out)
    victim = next(
        r
        for r in rows
        if (
            e := read_shard_index(
                store, locate_shard(r["uid"], r["created_at"], N_BITS).object_key
            )[0].lookup(r["uid"])
        )
        is not None
        and e.part >= 1
    )
    key = locate_shard(victim["uid"], victim["created_at"], N_BITS).object_key

    class Interrupted(LocalShardEditor):
        def overwrite_range(self, *args: Any, **kwargs: Any) -> bool:
            raise StorageUnavailable("the process died between the two writes")

    with pytest.raises(StorageUnavailable):
        delete_entries(Interrupted(out), key, [victim["uid"]])
    editor = LocalShardEditor(out)
    assert [(d.uid, d.state) for d in iter_deletions(editor)] == [(victim["uid"], "hidden")]
    code, stdout, _ = des(out, "delete", victim["uid"], "--created-at", victim["created_at"])
    assert (code, stdout.decode()) == (
        0,
        f"{victim['uid']} was already deleted (its bytes are erased)\n",
    )
    assert [(d.uid, d.state) for d in iter_deletions(editor)] == [(victim["uid"], "erased")]
    assert content(tmp_path, victim["uid"]) not in b"\x00".join(all_bytes(out))


def test_repack_racing_a_delete_that_overwrites_part_bytes_starts_again(tmp_path: Path) -> None:
    from des_format import delete_entries

    rows = make_files(tmp_path, n=40)
    out = tmp_path / "out"
    pack(
        read_manifest(tmp_path / "m.json"), str(out), PackOptions(n_bits=N_BITS, max_shard_size=600)
    )
    store = LocalObjectStore(out)

    def part_of(r: dict[str, Any]) -> int:
        e = read_shard_index(store, key_of(r))[0].lookup(r["uid"])
        assert e is not None
        return e.part

    first = next(r for r in rows if part_of(r) >= 1)
    key = key_of(first)
    late_victim = next(r for r in rows if r is not first and key_of(r) == key and part_of(r) >= 1)
    assert des(out, "delete", first["uid"], "--created-at", first["created_at"])[0] == 0

    class RacedStore:
        """The repack's reads; its first read of a part lets another replica delete a file
        of that part (tombstone, then its bytes overwritten) before the bytes come back."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.raced = False

        def read_range(self, k: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
            if ".p" in k and not self.raced:
                self.raced = True
                delete_entries(LocalShardEditor(out), key, [late_victim["uid"]])
            return bytes(self.inner.read_range(k, start, end, if_match=if_match))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    editor = LocalShardEditor(out)
    raced = RacedStore(editor.store)
    editor.store = raced  # type: ignore[assignment]
    report = repack(editor, RepackOptions(prefix=key, bigfile_grace_seconds=0))
    assert raced.raced
    assert report.failures == ()
    assert [(r.key, r.attempts, sorted(r.erased)) for r in report.repacked] == [
        (key, 2, sorted([first["uid"], late_victim["uid"]]))
    ]
    got = read_everything(out, rows, tmp_path)
    for r in rows:
        want = "deleted" if r in (first, late_victim) else content(tmp_path, r["uid"])
        assert got[r["uid"]] == want, r["uid"]
