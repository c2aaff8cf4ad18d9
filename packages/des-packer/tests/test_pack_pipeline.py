"""The packer's pipeline: files prepared in batches by the workers, local reads with os.read,
staged big files never left behind, and source names without pathlib."""

from __future__ import annotations

import os
import threading
from pathlib import Path, PurePosixPath

import pytest
from des_format import ShardReader
from des_packer import (
    EntryFailed,
    ManifestEntry,
    PackAborted,
    PackOptions,
    PackReport,
    pack,
    pack_plan,
    plan_shards,
    read_manifest,
)
from des_packer._blocks import source_name
from des_packer._pack import PackTuning
from des_packer._sources import SourceReader
from des_packer_testkit import make_dataset, tree_bytes, write_manifest
from hypothesis import given, settings
from hypothesis import strategies as st

BIG = 2500  # big-file threshold: the data set's big files (5000 bytes) go to _bigFiles


@given(st.text(alphabet="ab./\\: ~é", max_size=14))
@settings(max_examples=500, deadline=None)
def test_source_name_is_purepath_name(source: str) -> None:
    assert source_name(source) == (PurePosixPath(source).name or None)


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("../input/000/file-1.json", "file-1.json"),
        ("s3://bucket/dir/key.bin", "key.bin"),
        ("dir/sub/", "sub"),
        ("dir/.", "dir"),
        ("/", None),
        ("", None),
    ],
)
def test_source_name_examples(source: str, name: str | None) -> None:
    assert source_name(source) == name


@pytest.mark.parametrize(
    ("files", "nbytes"), [(1, 1 << 40), (3, 1 << 40), (64, 1), (10**6, 10**12)]
)
def test_batch_bounds_do_not_change_the_shards(tmp_path: Path, files: int, nbytes: int) -> None:
    ds = make_dataset(tmp_path / "d", n=70, big=4)
    opts = PackOptions(n_bits=4, workers=2, big_file_threshold=BIG)
    pack(read_manifest(ds.manifest), str(tmp_path / "ref"), opts)
    plan = plan_shards(read_manifest(ds.manifest), n_bits=4)
    tuning = PackTuning(batch_files=files, batch_bytes=nbytes)
    report = pack_plan(plan, str(tmp_path / "out"), opts, tuning=tuning)
    assert report.files == 74
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "ref")


def _pack_in_one_batch(manifest: Path, out: Path, opts: PackOptions) -> PackReport:
    """Pack with every work item in one batch (one worker task for the whole run)."""
    plan = plan_shards(read_manifest(manifest), n_bits=opts.n_bits)
    return pack_plan(
        plan, str(out), opts, tuning=PackTuning(batch_files=10**6, batch_bytes=1 << 50)
    )


def _staging_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob(".des-tmp.*"))


def test_failure_inside_a_batch_leaves_no_staged_big_file(tmp_path: Path) -> None:
    """Everything in one batch: the worker stages the big files after the failing entry too;
    none may stay behind, and the shards finished before it are published whole."""
    ds = make_dataset(tmp_path / "d", n=40, big=12, days=1)
    plan = plan_shards(read_manifest(ds.manifest), n_bits=4)
    order = [e for s in plan.shards for e in s.entries]
    shard_of = [si for si, s in enumerate(plan.shards) for _e in s.entries]
    bigs = [i for i, e in enumerate(order) if e.size_bytes > BIG]
    # a small file in a later shard than the first big file, with big files after it
    victim_at = next(
        i
        for i in range(bigs[0], bigs[-1])
        if shard_of[i] > shard_of[bigs[0]] and order[i].size_bytes <= BIG
    )
    victim = order[victim_at]
    os.unlink(victim.source)
    out = tmp_path / "out"
    opts = PackOptions(n_bits=4, workers=2, big_file_threshold=BIG)
    with pytest.raises(PackAborted, match="does not exist") as info:
        _pack_in_one_batch(ds.manifest, out, opts)
    assert info.value.report.failures[-1][0] == victim.uid
    assert _staging_files(out) == []
    victim_shard = shard_of[victim_at]
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.des"))
    assert written == sorted(s.key for s in plan.shards[:victim_shard])
    published = {p.name for p in out.rglob("_bigFiles/*")}
    referenced = set()
    for key in written:
        with ShardReader.open_path(out / key) as reader:
            referenced |= {e.bigfile_hash for e in reader.iter_entries() if e.is_bigfile}
    assert published == referenced
    assert referenced  # the shard with the first big file was published
    assert bigs[-1] > victim_at  # and big files were staged after the failure


def test_worker_error_inside_a_batch_removes_what_it_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error (not a bad entry) in a worker: the big files that batch had staged
    are removed before the error reaches the caller."""
    ds = make_dataset(tmp_path / "d", n=20, big=6, days=1)
    plan = plan_shards(read_manifest(ds.manifest), n_bits=4)
    order = [e for s in plan.shards for e in s.entries]
    first_big = min(i for i, e in enumerate(order) if e.size_bytes > BIG)
    target = next(e.uid for e in order[first_big + 1 :] if e.size_bytes <= BIG)
    real_read = SourceReader.read

    def read(self: SourceReader, entry: ManifestEntry) -> bytes:
        if entry.uid == target:
            raise RuntimeError("disk on fire")
        return real_read(self, entry)

    monkeypatch.setattr(SourceReader, "read", read)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        _pack_in_one_batch(ds.manifest, out, PackOptions(n_bits=4, big_file_threshold=BIG))
    assert _staging_files(out) == []
    assert list(out.rglob("*.des")) == []
    assert list(out.rglob("_bigFiles/*")) == []


def test_source_larger_than_its_size_is_refused(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=8)
    rows = [dict(r) for r in ds.rows]
    grown = next(r for r in rows if r["size_bytes"] > 1)
    grown["size_bytes"] -= 1
    m = write_manifest(ds.root / "grown.json", rows)
    report = pack(read_manifest(m), str(tmp_path / "out"), PackOptions(n_bits=4, on_error="skip"))
    assert report.failures == (
        (
            grown["uid"],
            f"source {ds.root / grown['source_path']} has more than {grown['size_bytes']} "
            f"bytes but size_bytes is {grown['size_bytes']}; fix size_bytes in the manifest "
            "(or the file)",
        ),
    )
    assert report.files == 7


def test_a_source_read_in_pieces_is_packed_whole(tmp_path: Path) -> None:
    """A FIFO hands its bytes over in pieces: the short reads are joined."""
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    pieces = [b"first piece, " * 300, b"second, " * 500, b"last." * 7]

    def feed() -> None:
        with fifo.open("wb", buffering=0) as fh:
            for p in pieces:
                fh.write(p)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    rows = [
        {
            "uid": "piped",
            "created_at": "2024-05-01T00:00:00Z",
            "size_bytes": sum(map(len, pieces)),
            "source_path": str(fifo),
        }
    ]
    m = write_manifest(tmp_path / "m.json", rows)
    out = tmp_path / "out"
    try:
        report = pack(read_manifest(m), str(out), PackOptions(n_bits=4, workers=1))
    finally:
        writer.join(timeout=30)
    assert report.files == 1
    (shard,) = out.rglob("*.des")
    with ShardReader.open_path(shard) as reader:
        assert reader.read("piped") == b"".join(pieces)


def test_leftovers_of_every_shard_go_with_one_listing_per_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = make_dataset(tmp_path / "d", n=60, days=1)
    plan = plan_shards(read_manifest(ds.manifest), n_bits=4)
    out = tmp_path / "out"
    day = out / plan.shards[0].date_dir
    day.mkdir(parents=True)
    names = [s.key.rsplit("/", 1)[1] for s in plan.shards]
    assert len(names) >= 3
    left = [
        f".des-tmp.{names[0]}.0.aaa",
        f".des-tmp.{names[0]}.p1.bbb",
        f".des-tmp.{names[2]}.big.c",
    ]
    foreign = [".des-tmp.ZZ.des.0.abc", f".des-tmp.{names[1]}x.0.abc", f".des-edit.{names[1]}.x"]
    for n in left + foreign:
        (day / n).write_bytes(b"half a shard")
    listed: list[str] = []
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        listed.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = pack(read_manifest(ds.manifest), str(out), PackOptions(n_bits=4))
    assert listed.count(str(day)) == 1  # not once per shard
    assert report.files == 60
    assert sorted(p.name for p in day.glob(".des-*")) == sorted(foreign)


@pytest.mark.parametrize("piece", [1, 100, 999, 1000])
def test_short_reads_are_joined_and_a_longer_source_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    """Reads that return at most ``piece`` bytes (as network file systems may): a source of
    exactly size_bytes comes back whole, one byte longer is refused, even when the first
    read stops right at size_bytes and only the read for the end finds the extra byte."""
    data = bytes(range(256)) * 4 + b"tail"  # 1,028 bytes
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, piece)))
    reader = SourceReader()
    exact = ManifestEntry("u", "2024-05-01T00:00:00Z", len(data), str(src))
    assert reader.read(exact) == data
    short = ManifestEntry("u", "2024-05-01T00:00:00Z", 1000, str(src))
    with pytest.raises(EntryFailed) as failed:
        reader.read(short)
    assert failed.value.reason == (
        f"source {src} has more than 1000 bytes but size_bytes is 1000; fix size_bytes in the "
        "manifest (or the file)"
    )
