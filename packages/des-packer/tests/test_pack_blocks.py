"""des-pack --block-size: small files of one content type compressed together (solid blocks)."""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    FEATURE_BLOCKS,
    Codec,
    IndexEntry,
    LocalObjectStore,
    ShardReader,
    ShardRetriever,
    is_precompressed,
)
from des_packer import PackAborted, PackConfigError, PackOptions, pack, read_manifest
from des_packer._blocks import Block, group_of, is_block_eligible, plan_work
from des_packer._manifest import ManifestEntry
from des_packer.cli import des_app
from des_packer_testkit import run_des_pack, tree_bytes, write_manifest
from des_routing import locate_shard
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

N_BITS = 4
BLOCK = 128 * 1024
WORDS = ["".join(random.Random(i).choices("abcdefghijklmnop", k=2 + i % 9)) for i in range(400)]


def _text(rnd: random.Random, kind: str, size: int) -> bytes:
    out: list[str] = []
    n = 0
    while n < size:
        if kind == "json":
            line = json.dumps({"id": rnd.randrange(10**6), "w": rnd.choices(WORDS, k=6)})
        elif kind == "csv":
            line = ",".join([str(rnd.randrange(1000)), *rnd.choices(WORDS, k=4)])
        else:
            line = f"2024-05-01 INFO {' '.join(rnd.choices(WORDS, k=8))}"
        out.append(line)
        n += len(line) + 1
    return ("\n".join(out) + "\n").encode()[:size]


def make_files(
    root: Path, n: int, *, start: int = 0, name: str = "m", days: int = 1
) -> list[dict[str, Any]]:
    """``n`` files of several kinds: JSON, CSV and log text (content types given, or only
    the extension; text/plain with and without an extension), some larger than the member
    maximum, some empty, some .gz (already compressed), some random bytes; the manifest is
    written to root/<name>.json."""
    rnd = random.Random(start * 7919 + n)
    src = root / "input"
    src.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(start, start + n):
        kind = i % 7
        ctype: str | None = None
        if kind == 0:
            data, fname = _text(rnd, "json", rnd.randint(200, 9000)), f"f{i}.json"
            ctype = "application/json"
        elif kind == 1:
            data, fname, ctype = _text(rnd, "csv", rnd.randint(100, 6000)), f"f{i}.csv", "text/csv"
        elif kind == 2:
            data, fname = _text(rnd, "log", rnd.randint(50, 3000)), f"f{i}.log"
            ctype = "text/plain"
        elif kind == 3:
            data, fname = _text(rnd, "log", rnd.randint(50, 3000)), f"f{i}.TXT"
        elif kind == 4:
            data, fname = rnd.randbytes(rnd.randint(20, 800)), f"f{i}.gz"
        elif kind == 5:
            size = 70_000 if i % 3 == 0 else rnd.randint(0, 40)
            data, fname = _text(rnd, "log", size), f"f{i}.log"
        else:
            data, fname, ctype = _text(rnd, "json", rnd.randint(10, 500)), f"f{i}", "text/plain"
        (src / fname).write_bytes(data)
        row: dict[str, Any] = {
            "uid": f"b-{i:05d}",
            "created_at": f"2024-05-{1 + i % days:02d}T{i % 24:02d}:00:00Z",
            "size_bytes": len(data),
            "source_path": f"input/{fname}",
        }
        if ctype is not None:
            row["content_type"] = ctype
        rows.append(row)
    write_manifest(root / f"{name}.json", rows)
    return rows


def key_of(row: dict[str, Any]) -> str:
    return locate_shard(row["uid"], row["created_at"], N_BITS).object_key


def read_all(out: Path, rows: list[dict[str, Any]], root: Path) -> None:
    r = ShardRetriever(LocalObjectStore(out))
    for row in rows:
        assert r.read(key_of(row), row["uid"]) == (root / row["source_path"]).read_bytes()


def shard_entries(out: Path) -> dict[str, tuple[int, list[IndexEntry]]]:
    """key -> (footer features, entries) of every shard under ``out``."""
    got = {}
    for p in sorted(out.rglob("*.des")):
        with ShardReader.open_path(p) as reader:
            got[str(p.relative_to(out))] = (reader.index.features, list(reader.iter_entries()))
    return got


def blocks_of(entries: list[IndexEntry]) -> dict[tuple[int, int], list[IndexEntry]]:
    """The solid blocks of a shard: (part, offset) -> its members."""
    blocks: dict[tuple[int, int], list[IndexEntry]] = defaultdict(list)
    for e in entries:
        if e.codec is Codec.ZSTD_BLOCK:
            blocks[(e.part, e.offset)].append(e)
    return blocks


def entry_of(uid: str, root: Path, rows: list[dict[str, Any]]) -> ManifestEntry:
    row = next(r for r in rows if r["uid"] == uid)
    return ManifestEntry(
        uid, row["created_at"], row["size_bytes"], str(root / row["source_path"]),
        row.get("content_type"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("blocks")
    return root, make_files(root, 700)


def opts(**kw: Any) -> PackOptions:
    base: dict[str, Any] = {"n_bits": N_BITS, "fsync": False, "workers": 2, "block_size": BLOCK}
    base.update(kw)
    return PackOptions(**base)


def test_blocks_pack_smaller_and_every_file_reads_back(
    files: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, rows = files
    manifest = list(read_manifest(root / "m.json"))
    plain = pack(manifest, str(tmp_path / "plain"), opts(block_size=0))
    out = tmp_path / "blocks"
    report = pack(manifest, str(out), opts())
    assert report.files == plain.files == 700
    assert report.bytes_out < plain.bytes_out
    assert report.blocks > 0
    assert report.block_files > 2 * report.blocks - 1
    assert plain.blocks == plain.block_files == 0
    assert sum(s.blocks for s in report.shards) == report.blocks
    read_all(out, rows, root)
    by_uid = {r["uid"]: r for r in rows}
    total_blocks = total_members = 0
    for key, (features, entries) in shard_entries(out).items():
        blocks = blocks_of(entries)
        assert bool(features & FEATURE_BLOCKS) == bool(blocks), key
        total_blocks += len(blocks)
        for members in blocks.values():
            total_members += len(members)
            assert len(members) >= 2
            assert sum(m.size for m in members) <= BLOCK
            # one content type (or extension) per block, every member eligible
            groups = {group_of(entry_of(m.uid, root, rows)) for m in members}
            assert len(groups) == 1, groups
            for m in members:
                row = by_uid[m.uid]
                assert 0 < row["size_bytes"] <= 64 * 1024
                assert not is_precompressed(Path(row["source_path"]).name, row.get("content_type"))
            # members follow one another in the block, in uid order
            members.sort(key=lambda m: m.block_offset)
            assert [m.uid for m in members] == sorted(m.uid for m in members)
            assert members[0].block_offset == 0
            for a, b in itertools.pairwise(members):
                assert b.block_offset == a.block_offset + a.size
    assert (total_blocks, total_members) == (report.blocks, report.block_files)
    # .json, .csv, .log and .TXT/.txt and text/plain files all ended up in blocks, text/plain
    # .log files apart from text/plain files without an extension
    in_blocks = {
        group_of(entry_of(e.uid, root, rows))
        for _f, entries in shard_entries(out).values()
        for e in entries
        if e.codec is Codec.ZSTD_BLOCK
    }
    assert in_blocks == {
        ("application/json", "json"), ("text/csv", "csv"), ("text/plain", "log"), ("", "txt"),
        ("text/plain", ""), ("", "log"),
    }  # fmt: skip
    for _f, entries in shard_entries(tmp_path / "plain").values():
        assert all(e.codec is not Codec.ZSTD_BLOCK for e in entries)


def test_des_get_batch_and_json_summary(
    files: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, rows = files
    out = tmp_path / "out"
    code, stdout, err = run_des_pack(
        "--input-json", str(root / "m.json"), "--output-dir", str(out), "--n-bits", str(N_BITS),
        "--no-fsync", "--block-size", "131072", "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["files"] == 700
    assert doc["blocks"] > 0
    assert doc["block_files"] > doc["blocks"]
    assert sum(s["blocks"] for s in doc["shards"]) == doc["blocks"]
    assert sum(s["block_files"] for s in doc["shards"]) == doc["block_files"]
    code, stdout, _ = run_des_pack(
        "--input-json", str(root / "m.json"), "--output-dir", str(tmp_path / "o2"), "--n-bits",
        str(N_BITS), "--no-fsync", "--block-size", "131072",
    )  # fmt: skip
    assert code == 0
    assert f"solid blocks:    {doc['blocks']} ({doc['block_files']} files)\n" in stdout
    # A dry run plans the blocks without reading a file: the packer's grouping, so at least
    # the blocks the pack forms in every shard (a planned block of files that do not compress
    # together is stored file by file).
    code, stdout, err = run_des_pack(
        "--input-json", str(root / "m.json"), "--n-bits", str(N_BITS), "--block-size",
        "131072", "--dry-run", "--json",
    )  # fmt: skip
    assert code == 0, err
    plan = json.loads(stdout)
    packed = {s["key"]: (s["blocks"], s["block_files"]) for s in doc["shards"]}
    planned = {s["key"]: (s["blocks"], s["block_files"]) for s in plan["shards"]}
    assert planned.keys() == packed.keys()
    for key, (blocks, block_files) in planned.items():
        assert blocks >= packed[key][0], key
        assert block_files >= packed[key][1], key
    assert plan["blocks"] == sum(b for b, _ in planned.values()) >= doc["blocks"]
    assert plan["block_files"] == sum(f for _, f in planned.values()) >= doc["block_files"]
    assert plan["block_files"] - doc["block_files"] < plan["block_files"] // 10  # close
    code, stdout, err = run_des_pack(
        "--input-json", str(root / "m.json"), "--n-bits", str(N_BITS), "--block-size",
        "131072", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert stdout.splitlines()[-1].startswith(f"plan: 16 shards, 700 files, {plan['bytes']} bytes ")
    assert f", at most {plan['blocks']} solid blocks ({plan['block_files']} files); " in stdout
    code, stdout, err = run_des_pack(
        "--input-json", str(root / "m.json"), "--n-bits", str(N_BITS), "--dry-run", "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["blocks"] == 0  # without --block-size: none
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(json.dumps({"uid": r["uid"], "created_at": r["created_at"]}) + "\n" for r in rows)
    )
    base = ["--base-dir", str(out), "--n-bits", str(N_BITS)]
    res = CliRunner().invoke(
        des_app, [*base, "get", "--batch", str(batch), "--out", str(tmp_path / "got")], env={}
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"] == 700
    for row in rows:
        assert (tmp_path / "got" / row["uid"]).read_bytes() == (
            root / row["source_path"]
        ).read_bytes()
    res = CliRunner().invoke(des_app, [*base, "verify", str(out), "--deep"], env={})
    assert res.exit_code == 0, res.output
    # a dry run plans as before
    code, stdout, err = run_des_pack(
        "--input-json", str(root / "m.json"), "--n-bits", str(N_BITS), "--dry-run",
        "--block-size", "131072",
    )  # fmt: skip
    assert code == 0, err
    assert "plan: 16 shards, 700 files" in stdout


def test_reruns_workers_and_shard_range_splits_give_identical_shards(
    files: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, _rows = files
    manifest = list(read_manifest(root / "m.json"))
    pack(manifest, str(tmp_path / "a"), opts(workers=2))
    pack(manifest, str(tmp_path / "b"), opts(workers=1, max_inflight_bytes=200_000))
    pack(manifest, str(tmp_path / "c"), opts(shard_range=(0, 6)))
    pack(manifest, str(tmp_path / "c"), opts(shard_range=(7, 15)))
    a = tree_bytes(tmp_path / "a")
    assert len(a) == 16
    assert tree_bytes(tmp_path / "b") == a
    assert tree_bytes(tmp_path / "c") == a
    # running the same command again (resume) skips every complete shard, changes nothing
    again = pack(manifest, str(tmp_path / "a"), opts())
    assert (again.shards_skipped, again.files, again.blocks) == (16, 0, 0)
    assert tree_bytes(tmp_path / "a") == a


def test_append_late_files_adds_blocks_and_keeps_old_ones(tmp_path: Path) -> None:
    root = tmp_path / "src"
    first = make_files(root, 400, name="first")
    late = make_files(root, 250, start=5000, name="late")
    out = tmp_path / "out"
    pack(read_manifest(root / "first.json"), str(out), opts())
    before = shard_entries(out)
    report = pack(read_manifest(root / "late.json"), str(out), opts())
    assert report.shards_appended == 16
    assert report.files == 250
    assert report.blocks > 0
    after = shard_entries(out)
    late_uids = {r["uid"] for r in late}
    new_blocks = 0
    for key, (_features, old_entries) in before.items():
        features, entries = after[key]
        assert features & FEATURE_BLOCKS
        by_uid = {e.uid: e for e in entries}
        for e in old_entries:  # the old files and their blocks are kept as they were
            assert by_uid[e.uid] == e
        old_blocks = blocks_of(old_entries)
        for where, members in blocks_of(entries).items():
            uids = {m.uid for m in members}
            if where in old_blocks:
                assert uids == {m.uid for m in old_blocks[where]}
            else:
                assert uids <= late_uids  # a new block holds only late files
                new_blocks += 1
    assert new_blocks == report.blocks
    read_all(out, first + late, root)


def test_tiny_max_shard_size_rolls_blocks_over_into_parts(
    files: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, rows = files
    out = tmp_path / "out"
    report = pack(read_manifest(root / "m.json"), str(out), opts(max_shard_size=8192))
    assert report.blocks > 0
    assert max(s.parts for s in report.shards) > 1
    read_all(out, rows, root)
    res = CliRunner().invoke(
        des_app,
        ["--base-dir", str(out), "--n-bits", str(N_BITS), "verify", str(out), "--deep"],
        env={},
    )
    assert res.exit_code == 0, res.output


def test_on_error_skip_leaves_out_a_missing_member(tmp_path: Path) -> None:
    root = tmp_path / "src"
    rows = make_files(root, 300)
    manifest = list(read_manifest(root / "m.json"))
    # a file that goes into a block in a normal run
    ref = pack(manifest, str(tmp_path / "ref"), opts())
    members = [
        m.uid
        for _f, entries in shard_entries(tmp_path / "ref").values()
        for ms in blocks_of(entries).values()
        for m in ms
        if len(ms) >= 3
    ]
    victim = next(r for r in rows if r["uid"] == members[0])
    (root / victim["source_path"]).unlink()
    with pytest.raises(PackAborted, match=f"{victim['uid']}.*does not exist"):
        pack(manifest, str(tmp_path / "fail"), opts())
    out = tmp_path / "skip"
    report = pack(manifest, str(out), opts(on_error="skip"))
    assert [uid for uid, _reason in report.failures] == [victim["uid"]]
    assert report.files == 299
    assert report.blocks == ref.blocks
    read_all(out, [r for r in rows if r is not victim], root)
    with ShardReader.open_path(out / key_of(victim)) as reader:
        assert reader.lookup(victim["uid"]) is None
    # the CLI exits 3 and lists it
    code, _out, err = run_des_pack(
        "--input-json", str(root / "m.json"), "--output-dir", str(tmp_path / "cli"),
        "--n-bits", str(N_BITS), "--block-size", "65536", "--on-error", "skip",
        "--skipped-report", str(tmp_path / "skipped.jsonl"),
    )  # fmt: skip
    assert code == 3, err
    skipped = [json.loads(line) for line in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert [s["uid"] for s in skipped] == [victim["uid"]]


def test_a_wrong_size_member_fails_like_a_single_file(tmp_path: Path) -> None:
    root = tmp_path / "src"
    rows = make_files(root, 60)
    victim = next(r for r in rows if r["source_path"].endswith(".csv"))
    victim["size_bytes"] += 1
    write_manifest(root / "m.json", rows)
    with pytest.raises(PackAborted, match="fix size_bytes in the manifest") as exc:
        pack(read_manifest(root / "m.json"), str(tmp_path / "o"), opts())
    assert exc.value.report.failures[0][0] == victim["uid"]


@pytest.mark.parametrize(
    ("args", "kw", "message"),
    [
        (
            ["--block-size", "131072", "--codec", "lz4"],
            {"block_size": 131072, "codec": "lz4"},
            "--block-size needs --codec zstd, got --codec lz4",
        ),
        (
            ["--block-size", "131072", "--codec", "none"],
            {"block_size": 131072, "codec": "none"},
            "--block-size needs --codec zstd, got --codec none",
        ),
        (
            ["--block-size", "131072", "--dict"],
            {"block_size": 131072, "dictionary": True},
            "--block-size cannot be combined with --dict; choose one of them",
        ),
        (
            ["--block-size", "4194305"],
            {"block_size": 4194305},
            "--block-size must be at most 4194304 bytes (4 MiB), got 4194305",
        ),
        (
            ["--block-size", "-1"],
            {"block_size": -1},
            "--block-size must be 0 (off) or a positive number of bytes, got -1",
        ),
        (
            ["--block-size", "131072", "--block-member-max", "0"],
            {"block_size": 131072, "block_member_max": 0},
            "--block-member-max must be a positive number of bytes, got 0",
        ),
        (
            ["--block-member-max", "-5"],
            {"block_member_max": -5},
            "--block-member-max must be a positive number of bytes, got -5",
        ),
        (
            ["--block-size", "32768"],
            {"block_size": 32768},
            "--block-member-max (65536) must not be larger than --block-size (32768)",
        ),
        (
            ["--block-size", "1000", "--block-member-max", "1001"],
            {"block_size": 1000, "block_member_max": 1001},
            "--block-member-max (1001) must not be larger than --block-size (1000)",
        ),
    ],
)
def test_bad_block_options(
    args: list[str], kw: dict[str, Any], message: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    make_files(root, 5)
    for extra in ([], ["--dry-run"], ["--json"]):
        code, out, err = run_des_pack(
            "--input-json", str(root / "m.json"), "--output-dir", str(tmp_path / "o"),
            *args, *extra,
        )  # fmt: skip
        assert code == 2
        assert err == f"des-pack: error: {message}\n"
        if extra == ["--json"]:
            assert json.loads(out) == {"error": message, "exit_code": 2}
    assert not (tmp_path / "o").exists()
    with pytest.raises(PackConfigError) as exc:
        PackOptions(**kw).validate()
    assert str(exc.value) == message


def test_block_options_at_their_limits(tmp_path: Path) -> None:
    root = tmp_path / "src"
    rows = make_files(root, 80)
    for size, member in ((4 << 20, 4 << 20), (1, 1), (512, 512)):
        out = tmp_path / f"o{size}"
        code, _out, err = run_des_pack(
            "--input-json", str(root / "m.json"), "--output-dir", str(out), "--n-bits",
            str(N_BITS), "--no-fsync", "--block-size", str(size), "--block-member-max",
            str(member),
        )  # fmt: skip
        assert code == 0, err
        read_all(out, rows, root)
    assert "--block-size" in run_des_pack("--help")[1]


def test_help_explains_the_trade_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # typer's help table: one line per option
    code, out, _ = run_des_pack("--help")
    assert code == 0
    text = " ".join(out.replace("│", " ").split())
    assert "--block-size BYTES" in text
    assert "reading one file decompresses its whole block (still one request)" in text
    assert "--block-member-max BYTES" in text


def test_blocks_on_s3_round_trip(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through the moto S3 server over HTTP: shards with blocks, then late files appended
    (server-side copy + tail), read back byte-exact."""
    from des_format import IndexCache
    from des_routing import DesSettings
    from des_storage_s3 import open_store

    s3_server.reset()
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.client().create_bucket(Bucket="blocks")
    root = tmp_path / "src"
    first = make_files(root, 200, name="first")
    late = make_files(root, 60, start=9000, name="late")
    s3_opts = opts(s3_endpoint_url=s3_server.endpoint_url, s3_region="us-east-1")
    report = pack(read_manifest(root / "first.json"), "s3://blocks/p", s3_opts)
    assert report.blocks > 0
    report = pack(read_manifest(root / "late.json"), "s3://blocks/p", s3_opts)
    assert report.shards_appended >= 1
    settings = DesSettings.from_env(
        {
            **s3_server.env(),
            "DES_BACKEND": "s3",
            "DES_S3_BUCKET": "blocks",
            "DES_S3_PREFIX": "p",
            "DES_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "DES_S3_REGION": "us-east-1",
            "DES_N_BITS": str(N_BITS),
        }
    )
    retriever = ShardRetriever(open_store(settings), cache=IndexCache(16 << 20))
    for row in first + late:
        assert retriever.read(key_of(row), row["uid"]) == (root / row["source_path"]).read_bytes()


# ---- the grouping rule (pure)

DAY = datetime(2024, 5, 1, tzinfo=UTC)
_NAMES = ["a.txt", "b.TXT", "c.json", "d.gz", "e", "f.log", "g.png", "h.csv"]
_TYPES = [None, None, "text/plain", "application/json", "image/jpeg", "Text/Plain; charset=x"]


@st.composite
def shard_entries_strategy(draw: st.DrawFn) -> list[ManifestEntry]:
    n = draw(st.integers(0, 60))
    out = []
    for i in range(n):
        size = draw(st.sampled_from([0, 1, 7, 100, 500, 999, 1000, 1001, 3000, 20_000]))
        name = draw(st.sampled_from(_NAMES))
        ctype = draw(st.sampled_from(_TYPES))
        out.append(ManifestEntry(f"u{i:04d}", DAY, size, f"in/{i}/{name}", ctype))
    return out


@settings(max_examples=300, deadline=None)
@given(
    entries=shard_entries_strategy(),
    block_size=st.sampled_from([0, 1, 1000, 2500, 4000, 70_000]),
    member_max=st.sampled_from([1, 500, 1000, 5000]),
    threshold=st.sampled_from([10, 1000, 10 << 20]),
)
def test_plan_work_properties(
    entries: list[ManifestEntry], block_size: int, member_max: int, threshold: int
) -> None:
    items = plan_work(
        entries, block_size=block_size, member_max=member_max, big_file_threshold=threshold
    )
    assert (
        plan_work(
            entries, block_size=block_size, member_max=member_max, big_file_threshold=threshold
        )
        == items
    )  # deterministic
    flat = [e for it in items for e in (it.entries if isinstance(it, Block) else (it,))]
    assert sorted(e.uid for e in flat) == [e.uid for e in entries]  # each entry exactly once
    position = {e.uid: i for i, e in enumerate(entries)}

    def eligible(e: ManifestEntry) -> bool:
        return is_block_eligible(e, member_max=member_max, big_file_threshold=threshold)

    if block_size == 0:
        assert items == entries
        return
    singles = [it for it in items if not isinstance(it, Block)]
    # files not eligible stay alone, in their order
    assert [e for e in singles if not eligible(e)] == [e for e in entries if not eligible(e)]
    # per group, the blocks (and eligible files left alone) cut the group's files, in order,
    # into runs, greedily: a run ends only where its next file would not fit
    runs: dict[tuple[str, str], list[list[ManifestEntry]]] = defaultdict(list)
    for it in items:
        if isinstance(it, Block):
            assert len(it.entries) >= 2
            assert it.size_bytes <= block_size
            assert len({group_of(e) for e in it.entries}) == 1
            runs[group_of(it.entries[0])].append(list(it.entries))
        elif eligible(it):
            runs[group_of(it)].append([it])
    for group, group_runs in runs.items():
        group_runs.sort(key=lambda run: position[run[0].uid])
        mine = [e for e in entries if eligible(e) and group_of(e) == group]
        assert [e for run in group_runs for e in run] == mine
        for a, b in itertools.pairwise(group_runs):
            assert sum(e.size_bytes for e in a) + b[0].size_bytes > block_size


def test_group_of_and_eligibility() -> None:
    def entry(source: str, ctype: str | None = None, size: int = 10) -> ManifestEntry:
        return ManifestEntry("u", DAY, size, source, ctype)

    assert group_of(entry("in/a.TXT")) == ("", "txt")
    assert group_of(entry("in/a.tar.GZ")) == ("", "gz")
    assert group_of(entry("in/noext")) == ("", "")
    assert group_of(entry("in/dot.")) == ("", "")
    assert group_of(entry("s3://bucket/dir/x.json")) == ("", "json")
    assert group_of(entry("in/a.txt", "Text/Plain; charset=utf-8")) == ("text/plain", "txt")
    assert group_of(entry("in/a.log", "text/plain")) == ("text/plain", "log")
    assert group_of(entry("in/a", "application/json")) == ("application/json", "")

    def ok(e: ManifestEntry) -> bool:
        return is_block_eligible(e, member_max=100, big_file_threshold=50)

    assert ok(entry("in/a.txt", size=50))
    assert not ok(entry("in/a.txt", size=51))  # above the big-file threshold
    assert not ok(entry("in/a.txt", size=0))
    assert not ok(entry("in/a.gz"))
    assert not ok(entry("in/a.bin", "image/jpeg"))
    assert not is_block_eligible(entry("in/a", size=101), member_max=100, big_file_threshold=1000)
    # a block is emitted at the file that would overflow it; open blocks at the end, by
    # their first member
    es = [
        ManifestEntry(f"u{i}", DAY, size, f"in/{i}.{ext}")
        for i, (size, ext) in enumerate(
            [(40, "txt"), (40, "log"), (40, "txt"), (30, "gz"), (40, "txt"), (40, "log")]
        )
    ]
    items = plan_work(es, block_size=100, member_max=100, big_file_threshold=1000)
    assert items == [es[3], Block((es[0], es[2])), Block((es[1], es[5])), es[4]]
