"""des export / des-pack --input-tar (round trips byte-exact), des ls --day, des find."""

from __future__ import annotations

import io
import json
import string
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from des_format import ShardReader
from des_packer import PackOptions, pack, read_manifest
from des_packer.cli import des_app
from des_packer_testkit import DataSet, run_des_pack, write_manifest
from des_routing import locate_shard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner


def des(out: Path, *args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(des_app, ["--base-dir", str(out), "--n-bits", "4", *args], env={})
    return result.exit_code, result.stdout_bytes, result.stderr


def packed(dataset: DataSet, out: Path) -> Path:
    pack(read_manifest(dataset.manifest), str(out), PackOptions(n_bits=4))
    return out


def tar_contents(path: Path) -> tuple[list[str], dict[str, bytes]]:
    with tarfile.open(path) as tar:
        names = tar.getnames()
        data = {}
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            assert fh is not None
            data[m.name] = fh.read()
    return names, data


def entry_of(out: Path, uid: str, created_at: str) -> Any:
    key = locate_shard(uid, created_at, 4).object_key
    with ShardReader.open_path(out / key) as reader:
        return reader.entry(uid), reader.read(uid)


def test_export_day_and_import_round_trip(dataset: DataSet, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "out")
    tar = tmp_path / "day.tar"
    code, _, err = des(out, "export", "--day", "20240301", "--output", str(tar))
    assert code == 0, err
    day_rows = [r for r in dataset.rows if r["created_at"].startswith("2024-03-01")]
    names, data = tar_contents(tar)
    assert names[-1] == "manifest.jsonl"
    assert sorted(names[:-1]) == sorted(r["uid"] for r in day_rows)
    manifest = [json.loads(line) for line in data["manifest.jsonl"].decode().splitlines()]
    by_uid = {m["uid"]: m for m in manifest}
    for r in day_rows:
        m = by_uid[r["uid"]]
        assert data[r["uid"]] == dataset.content(r["uid"])
        assert m["created_at"] == "2024-03-01T00:00:00Z"
        assert m["size_bytes"] == r["size_bytes"]
        assert m["content_type"] == r.get("content_type")
        entry, _ = entry_of(out, r["uid"], r["created_at"])
        assert m["checksum"] == f"crc32:{entry.checksum:08x}"
    # des-pack takes it back: same bytes, same content types, same names, same day
    out2 = tmp_path / "out2"
    code, _, err = run_des_pack("--input-tar", str(tar), "--output-dir", str(out2), "--n-bits", "4")
    assert code == 0, err
    for r in day_rows:
        e1, b1 = entry_of(out, r["uid"], r["created_at"])
        e2, b2 = entry_of(out2, r["uid"], r["created_at"])
        assert b2 == b1 == dataset.content(r["uid"])
        assert e2.content_type == e1.content_type
        assert e2.meta == e1.meta
    # and exporting the new store gives the same archive contents
    tar2 = tmp_path / "again.tar"
    code, _, err = des(out2, "export", "--day", "20240301", "--output", str(tar2))
    assert code == 0, err
    assert tar_contents(tar2)[1] == data


def test_export_shard_and_uids(dataset: DataSet, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "out")
    r = dataset.rows[0]
    key = locate_shard(r["uid"], r["created_at"], 4).object_key
    code, _, err = des(out, "export", "--shard", key, "-o", str(tmp_path / "s.tar"))
    assert code == 0, err
    with ShardReader.open_path(out / key) as reader:
        want = sorted(e.uid for e in reader.iter_entries())
    assert sorted(tar_contents(tmp_path / "s.tar")[0][:-1]) == want
    picked = [dataset.rows[0]["uid"], dataset.rows[2]["uid"]]
    code, _, err = des(out, "export", "--day", "20240301", *picked, "-o", str(tmp_path / "u.tar"))
    assert code == 0, err
    assert sorted(tar_contents(tmp_path / "u.tar")[0][:-1]) == sorted(picked)
    code, _, err = des(out, "export", "--day", "20240301", "nope", "-o", str(tmp_path / "n.tar"))
    assert code == 1
    assert "not on 20240301 (or deleted): nope" in err
    assert not (tmp_path / "n.tar").exists()
    code, _, err = des(out, "export", "-o", str(tmp_path / "x.tar"))
    assert code == 2
    assert "give --day YYYYMMDD or --shard KEY" in err


def test_import_zip_and_refusals(tmp_path: Path) -> None:
    rows = [
        {"uid": "a", "created_at": "2024-05-01T00:00:00Z", "size_bytes": 3, "checksum": None},
        {"uid": "b/c", "created_at": "2024-05-01T10:00:00Z", "size_bytes": 2},
    ]
    zpath = tmp_path / "in.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a", b"abc")
        zf.writestr("b/c", b"xy")
        zf.writestr("manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code, _, err = run_des_pack("--input-tar", str(zpath), "--output-dir", str(out), "--n-bits=4")
    assert code == 0, err
    assert entry_of(out, "b/c", "2024-05-01T10:00:00Z")[1] == b"xy"

    def make_tar(name: str, members: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w") as tar:
            for n, data in members.items():
                info = tarfile.TarInfo(n)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    no_manifest = make_tar("nomanifest.tar", {"a": b"abc"})
    code, _, err = run_des_pack("--input-tar", str(no_manifest), "--output-dir", str(out))
    assert code == 2
    assert "holds no manifest.jsonl" in err
    bad_sum = json.dumps({**rows[0], "checksum": "crc32:00000000"}) + "\n"
    damaged = make_tar("damaged.tar", {"a": b"abc", "manifest.jsonl": bad_sum.encode()})
    code, _, err = run_des_pack("--input-tar", str(damaged), "--output-dir", str(out))
    assert code == 2
    assert "the member's crc32 is 352441c2, the manifest says 00000000" in err
    extra = make_tar("extra.tar", {"a": b"abc", "z": b"", "manifest.jsonl": bad_sum.encode()[:0]})
    code, _, err = run_des_pack("--input-tar", str(extra), "--output-dir", str(out))
    assert code == 2
    assert "members not in manifest.jsonl: 'a', 'z'" in err
    code, _, err = run_des_pack("--output-dir", str(out))
    assert code == 2
    assert "give --input-json FILE or --input-tar FILE" in err
    not_tar = tmp_path / "x.tar"
    not_tar.write_bytes(b"hello")
    code, _, err = run_des_pack("--input-tar", str(not_tar), "--output-dir", str(out))
    assert code == 2
    assert "is neither a tar nor a zip" in err


_UID = st.text(alphabet=string.ascii_letters + string.digits + "-_./", min_size=1, max_size=12)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.dictionaries(
        _UID.filter(lambda u: u.strip() == u and not u.startswith("/")),
        st.tuples(
            st.binary(max_size=3000),
            st.sampled_from([None, "text/plain", "application/json", "image/png"]),
            st.integers(0, 86399),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_round_trip_property(tmp_path_factory: Any, files: dict[str, Any]) -> None:
    root = tmp_path_factory.mktemp("rt")
    rows = []
    for i, (uid, (data, ctype, secs)) in enumerate(files.items()):
        (root / f"s{i}.bin").write_bytes(data)
        row = {
            "uid": uid,
            "created_at": f"2024-02-29T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}Z",
            "size_bytes": len(data),
            "source_path": f"s{i}.bin",
        }
        if ctype:
            row["content_type"] = ctype
        rows.append(row)
    write_manifest(root / "m.json", rows)
    out = root / "out"
    pack(read_manifest(root / "m.json"), str(out), PackOptions(n_bits=4))
    tar = root / "x.tar"
    assert des(out, "export", "--day", "20240229", "-o", str(tar))[0] == 0
    out2 = root / "out2"
    code, _, err = run_des_pack("--input-tar", str(tar), "--output-dir", str(out2), "--n-bits", "4")
    assert code == 0, err
    for row in rows:
        e1, b1 = entry_of(out, row["uid"], row["created_at"])
        e2, b2 = entry_of(out2, row["uid"], row["created_at"])
        assert b1 == b2 == files[row["uid"]][0]
        assert e1.content_type == e2.content_type == row.get("content_type")
    tar2 = root / "y.tar"
    assert des(out2, "export", "--day", "20240229", "-o", str(tar2))[0] == 0
    assert tar_contents(tar2)[1] == tar_contents(tar)[1]


def test_ls_days(dataset: DataSet, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "out")
    code, stdout, err = des(out, "ls", "--day", "20240302", "--json")
    assert code == 0, err
    got = [json.loads(line) for line in stdout.decode().splitlines()]
    want = sorted(r["uid"] for r in dataset.rows if r["created_at"].startswith("2024-03-02"))
    assert sorted(g["uid"] for g in got) == want
    assert {g["created_at"] for g in got} == {"2024-03-02T00:00:00Z"}
    code, stdout, err = des(out, "ls", "--from", "2024-02-28", "--to", "20240305", "--json")
    assert code == 0, err
    assert len(stdout.decode().splitlines()) == len(dataset.rows)
    assert "60 files in" in err
    code, stdout, _ = des(out, "ls", "--day", "20240302")
    lines = stdout.decode().splitlines()
    assert lines[0].startswith("uid\tcreated_at\tsize")
    assert len(lines) == len(want) + 1
    code, _, err = des(out, "ls", "--from", "20240305", "--to", "20240301")
    assert code == 2
    assert "--to 20240301 is before --from 20240305" in err
    code, _, err = des(out, "ls", "--day", "2024-13-01")
    assert code == 2
    assert "is not a day" in err


def test_find(dataset: DataSet, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "out")
    row = dataset.rows[1]  # created on 2024-03-02
    code, stdout, err = des(out, "find", row["uid"], "--from", "20240201", "--to", "20240331")
    assert code == 0, err
    (hit,) = [json.loads(line) for line in stdout.decode().splitlines()]
    assert hit["created_at"] == "2024-03-02T00:00:00Z"
    assert hit["shard"] == locate_shard(row["uid"], row["created_at"], 4).object_key
    assert "des: find: searched 60/60 days (up to 20240331)" in err
    code, _, err = des(out, "find", "no-such-uid", "--from", "20240301", "--to", "20240302")
    assert code == 1
    assert "'no-such-uid' is in no shard from 20240301 to 20240302" in err
    code, _, err = des(out, "find", "x", "--from", "20000101", "--to", "20300101")
    assert code == 2
    assert "at most 3660 at a time" in err


def test_des_link_prints_a_path_the_key_verifies(tmp_path: Path) -> None:
    import time
    from urllib.parse import parse_qs, urlsplit

    from des_routing import LinkCheck, verify_link

    key = "k" * 40
    runner = CliRunner()
    args = ["link", "uid-1", "--created-at", "2024-01-01T05:00:00Z", "--expires", "600"]
    result = runner.invoke(des_app, args, env={"DES_LINK_KEY": key})
    assert result.exit_code == 0, result.stderr
    url = urlsplit(result.stdout.strip())
    assert url.path == "/files/uid-1"
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert q["created_at"] == "2024-01-01T05:00:00Z"
    assert abs(int(q["expires"]) - (time.time() + 600)) < 60
    assert (
        verify_link(key.encode(), "uid-1", "20240101", q["expires"], q["sig"], now=time.time())
        is LinkCheck.VALID
    )
    result = runner.invoke(des_app, args, env={"DES_LINK_KEY": ""})
    assert result.exit_code == 2
    assert "DES_LINK_KEY is not set" in result.stderr
    result = runner.invoke(des_app, args, env={"DES_LINK_KEY": "short"})
    assert result.exit_code == 2
    assert "DES_LINK_KEY is 5 bytes; a link key needs at least 32" in result.stderr


def test_chunk_reader_reads_across_chunks() -> None:
    import zlib

    from des_packer._export import _ChunkReader

    chunks = [b"abc", b"", b"defgh", b"i"]
    r = _ChunkReader(iter(chunks))
    assert r.read(2) == b"ab"
    assert r.read(4) == b"cdef"
    assert r.read(0) == b""
    assert r.read(-1) == b"ghi"
    assert r.read(5) == b""
    assert r.count == 9
    assert r.crc == zlib.crc32(b"abcdefghi")
