"""What a new user meets with des-pack (issue 20): sources checked by --dry-run, an empty
manifest, operating-system errors on the output (a real full and a real read-only file system,
a file in the way), no empty day directory after a failed shard, sizes with units."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from des_format import ShardReader
from des_packer import OutputFailed
from des_packer._errors import describe_os_error
from des_packer_testkit import DataSet, run_des_pack, write_manifest

run = run_des_pack
EXAMPLE = Path(__file__).resolve().parents[3] / "example_data" / "manifests" / "to-pack.json"


def _rows_with_bad_sources(ds: DataSet) -> Path:
    rows = [dict(r) for r in ds.rows[:10]]
    rows[2]["source_path"] = "input/gone.bin"  # missing
    rows[4]["size_bytes"] = int(rows[4]["size_bytes"]) + 1  # not its manifest size
    rows[6]["source_path"] = "input"  # a directory
    return write_manifest(ds.root / "bad-sources.json", rows)


def test_dry_run_rejects_sources_a_pack_could_not_read(dataset: DataSet, tmp_path: Path) -> None:
    manifest = _rows_with_bad_sources(dataset)
    code, out, err = run("--input-json", str(manifest), "--dry-run")
    assert code == 1
    rejected = [line for line in err.splitlines() if line.startswith("des-pack: rejected: ")]
    src = dataset.root / "input"
    assert sorted(rejected) == [  # in shard order
        f"des-pack: rejected: uid 'fuid-00002': source {src / 'gone.bin'} does not exist; "
        "fix source_path in the manifest",
        f"des-pack: rejected: uid 'fuid-00004': source {src / 'f4.txt'} has "
        f"{dataset.rows[4]['size_bytes']} bytes but size_bytes is "
        f"{int(dataset.rows[4]['size_bytes']) + 1}; fix size_bytes in the manifest (or the file)",
        f"des-pack: rejected: uid 'fuid-00006': source {src} is a directory, not a file",
    ]
    assert err.splitlines()[-1].startswith("des-pack: error: 3 source file(s) cannot be packed")
    assert out.splitlines()[-1].startswith("plan: ")
    assert "7 files" in out.splitlines()[-1]
    assert out.splitlines()[-1].endswith("3 rejected; nothing written")

    # --on-error skip: the plan without them, exit 3 (as the pack itself would), in --json too
    code, out, err = run("--input-json", str(manifest), "--dry-run", "--json", "--on-error", "skip")
    assert code == 3
    doc = json.loads(out)
    assert doc["files"] == 7
    assert sorted(r["uid"] for r in doc["rejected"]) == ["fuid-00002", "fuid-00004", "fuid-00006"]
    assert "error" not in err
    assert not (tmp_path / "o").exists()


def test_dry_run_with_every_source_in_place_exits_0(dataset: DataSet) -> None:
    code, out, err = run("--input-json", str(dataset.manifest), "--dry-run")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].endswith("0 rejected; nothing written")


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("as_json", [False, True])
def test_empty_manifest_exits_0_with_a_warning(
    tmp_path: Path, dry_run: bool, as_json: bool
) -> None:
    manifest = write_manifest(tmp_path / "empty.json", [])
    args = ["--input-json", str(manifest), "--output-dir", str(tmp_path / "o"), "--no-progress"]
    code, out, err = run(*args, *(["--dry-run"] if dry_run else []), *(["--json"] * as_json))
    assert code == 0
    assert err == f"des-pack: warning: the manifest {manifest} lists no files; nothing to pack\n"
    if as_json:
        assert json.loads(out)["files"] == 0


def test_size_mismatch_leaves_no_empty_day_directory(dataset: DataSet, tmp_path: Path) -> None:
    rows = [dict(r) for r in dataset.rows if r["created_at"].startswith("2024-03-01")][:3]
    rows[1]["size_bytes"] = int(rows[1]["size_bytes"]) + 5
    manifest = write_manifest(dataset.root / "mismatch.json", rows)
    out_dir = tmp_path / "o"
    code, _out, err = run(
        "--input-json", str(manifest), "--output-dir", str(out_dir), "--n-bits", "4"
    )
    assert code == 1
    assert "size_bytes is" in err
    # Shards finished by other processes before the failure stay (a rerun resumes from
    # them); no day directory is left empty, and no temporary file is left at all.
    written = [p for p in out_dir.rglob("*") if p.name != "_des_layout.json"]
    assert not [p for p in written if p.name.startswith(".des-tmp.")]
    assert not [p for p in written if p.is_dir() and not any(p.iterdir())]
    assert all(p.suffix == ".des" for p in written if p.is_file())


def test_skip_mode_all_failed_in_a_day_leaves_no_day_directory(
    dataset: DataSet, tmp_path: Path
) -> None:
    rows = [dict(r) for r in dataset.rows[:4]]
    for r in rows:
        if r["created_at"].startswith("2024-03-02"):
            r["source_path"] = "input/gone.bin"
    manifest = write_manifest(dataset.root / "half.json", rows)
    out_dir = tmp_path / "o"
    code, _out, _err = run(
        "--input-json", str(manifest), "--output-dir", str(out_dir), "--on-error", "skip",
        "--skipped-report", str(tmp_path / "skipped.jsonl"),
    )  # fmt: skip
    assert code == 3
    assert sorted(p.name for p in out_dir.iterdir() if p.name != "_des_layout.json") == ["20240301"]


def _no_temporary_files(root: Path) -> None:
    assert [p for p in root.rglob("*") if p.name.startswith(".des-tmp.")] == []


def _read_back(out_dir: Path) -> set[str]:
    """Every uid in the finished shards, each read back byte-exact against example_data."""
    rows = {r["uid"]: r for r in json.loads(EXAMPLE.read_text())}
    uids: set[str] = set()
    for shard in sorted(out_dir.rglob("*.des")):
        with ShardReader.open_path(shard) as reader:
            reader.verify(deep=True)
            for e in reader.iter_entries():
                source = (EXAMPLE.parent / rows[e.uid]["source_path"]).resolve()
                assert reader.read(e.uid) == source.read_bytes()
                uids.add(e.uid)
    return uids


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (mounting needs root; skipped, saying so, without it)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the ENOSPC case needs a small tmpfs")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_names_the_path_keeps_finished_shards_and_resumes(small_tmpfs: Path) -> None:
    out_dir = small_tmpfs / "out"
    args = ["--input-json", str(EXAMPLE), "--output-dir", str(out_dir), "--n-bits", "4"]
    code, out, err = run(*args, "--no-progress", "--json")
    assert code == 1
    doc = json.loads(out)
    msg = doc["error"]
    assert msg.startswith(
        f"cannot write {out_dir}: No space left on device (ENOSPC); free some space there or "
        "choose another --output-dir; packing stopped"
    )
    assert msg.endswith("it resumes after the finished shards")
    assert f"des-pack: error: {msg}\n" in err
    assert "files packed:" in err  # the summary, on stderr with --json
    _no_temporary_files(small_tmpfs)
    finished = _read_back(out_dir)
    assert 0 < len(finished) < 50
    assert doc["files"] == len(finished)
    assert doc["shards_written"] == len(list(out_dir.rglob("*.des")))

    # More room: the same command resumes after the finished shards and packs the rest.
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_tmpfs)], check=True)
    code, out, err = run(*args, "--no-progress", "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["files"] == 50 - len(finished)
    assert again["shards_skipped"] == doc["shards_written"]
    assert len(_read_back(out_dir)) == 50
    _no_temporary_files(small_tmpfs)


def test_disk_full_while_staging_big_files(small_tmpfs: Path) -> None:
    """Files above --big-file-threshold are copied to a temporary file first (in worker
    threads): a full disk there is the same clear error, and leaves nothing behind."""
    out_dir = small_tmpfs / "out"
    code, out, err = run(
        "--input-json", str(EXAMPLE), "--output-dir", str(out_dir), "--n-bits", "4",
        "--big-file-threshold", "1KiB", "--json", "--no-progress",
    )  # fmt: skip
    assert code == 1, err
    msg = json.loads(out)["error"]
    assert msg.startswith(f"cannot write {out_dir}")
    assert ": No space left on device (ENOSPC); free some space there" in msg
    assert ".des-tmp." not in msg
    _no_temporary_files(small_tmpfs)
    _read_back(out_dir)  # what was finished reads back


def test_read_only_file_system_names_the_path_and_the_fix(small_tmpfs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    out_dir = small_tmpfs / "out"
    code, out, err = run("--input-json", str(EXAMPLE), "--output-dir", str(out_dir), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["error"].startswith(
        f"cannot write {out_dir}: Read-only file system (EROFS); remount it read-write or "
        "choose another --output-dir; packing stopped"
    )
    assert (doc["files"], doc["exit_code"]) == (0, 1)
    assert "Errno" not in err


def test_a_file_in_the_way_of_the_output_dir(tmp_path: Path) -> None:
    (tmp_path / "afile").write_bytes(b"x")
    out_dir = tmp_path / "afile" / "out"
    code, _out, err = run(
        "--input-json", str(EXAMPLE), "--output-dir", str(out_dir), "--n-bits", "4"
    )
    assert code == 1
    last = err.splitlines()[-1]
    assert last.startswith(
        # the first write is the store's layout record, in the output directory itself
        f"des-pack: error: cannot write {out_dir}: {tmp_path / 'afile'} is a file, "
        "not a directory (ENOTDIR); move it away or choose another --output-dir"
    )
    assert "files packed:    0" in err
    assert "Errno" not in err


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.ENOSPC, "No space left on device (ENOSPC); free some space there"),
        (errno.EROFS, "Read-only file system (EROFS); remount it read-write"),
        (errno.EACCES, "Permission denied (EACCES); give this user write permission there"),
    ],
)
def test_os_error_messages_name_the_path_and_the_fix(code: int, fix: str) -> None:
    # Without a file name (a write() on a full disk has none) the output is named.
    exc = OSError(code, os.strerror(code))
    assert describe_os_error(exc, "/srv/des").startswith(f"cannot write /srv/des: {fix}")
    exc = OSError(code, os.strerror(code), "/srv/des/20240101")
    assert describe_os_error(exc, "/srv/des").startswith(f"cannot write /srv/des/20240101: {fix}")


def test_disk_full_in_the_pack_api_is_an_output_failed_with_its_report(
    dataset: DataSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same as the tmpfs case where mounting is not allowed: the fault is injected at the
    operating-system boundary (os.replace, which publishes a shard), after the first shard."""
    from des_packer import PackOptions, pack, read_manifest

    real_replace = os.replace
    calls = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(dst)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    out_dir = tmp_path / "o"
    with pytest.raises(OutputFailed) as caught:
        pack(read_manifest(dataset.manifest), str(out_dir), PackOptions(n_bits=4, workers=1))
    assert str(caught.value).startswith(f"cannot write {out_dir}: No space left on device")
    assert caught.value.report.shards_written == 1
    _no_temporary_files(out_dir)
    assert len(list(out_dir.rglob("*.des"))) == 1


def test_n_bits_errors_name_where_the_value_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad --n-bits is reported as the option, a bad DES_N_BITS as the variable (des-pack
    and des alike)."""
    from des_packer.cli import des_app
    from typer.testing import CliRunner

    get = ["get", "ex-000000", "--created-at", "2024-01-01T22:11:00Z"]
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("DES_N_BITS", raising=False)
    r = CliRunner().invoke(des_app, ["--n-bits", "99", *get])
    assert r.exit_code == 2
    assert "Invalid value for '--n-bits': 99 is not in the range 4<=x<=16." in r.stderr
    assert "DES_N_BITS" not in r.stderr
    monkeypatch.setenv("DES_N_BITS", "99")
    r = CliRunner().invoke(des_app, get)
    assert r.exit_code == 2
    assert r.stderr.startswith("des: error: DES_N_BITS='99' is out of range")
    code, _out, err = run("--input-json", str(EXAMPLE), "--dry-run")
    assert code == 2
    assert err.startswith("des-pack: error: DES_N_BITS='99' (the default of --n-bits)")
    monkeypatch.delenv("DES_N_BITS")
    code, _out, err = run("--input-json", str(EXAMPLE), "--dry-run", "--n-bits", "99")
    assert code == 2
    assert "invalid --n-bits 99" in err
    assert "DES_N_BITS" not in err
