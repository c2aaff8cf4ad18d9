from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from des_packer_testkit import DataSet, make_dataset, run_des_pack, tree_bytes, write_manifest

run = run_des_pack


def with_rows(ds: DataSet, rows: list[dict[str, object]], name: str = "bad.json") -> str:
    return str(write_manifest(ds.root / name, rows))


def test_pack_then_summary(dataset: DataSet, tmp_path: Path) -> None:
    code, out, err = run(
        "--input-json", str(dataset.manifest), "--output-dir", str(tmp_path / "o"), "--n-bits", "4"
    )
    assert code == 0, err
    assert "files packed:    60\n" in out
    assert "failed:          0\n" in out
    assert "des-pack: written 20240302/F.des [60/60 files" in err  # the last line is always shown


def test_json_summary_and_rerun_skips(dataset: DataSet, tmp_path: Path) -> None:
    args = ["--input-json", str(dataset.manifest), "--output-dir", str(tmp_path / "o"), "--json"]
    code, out, _ = run(*args)
    first = json.loads(out)
    assert code == 0
    assert first["files"] == 60
    assert first["exit_code"] == 0
    code, out, _ = run(*args)
    again = json.loads(out)
    assert code == 0
    assert (again["files"], again["shards_skipped"]) == (0, first["shards_written"])


def test_dry_run_writes_nothing(dataset: DataSet, tmp_path: Path) -> None:
    code, out, _ = run(
        "--input-json", str(dataset.manifest), "--output-dir", str(tmp_path / "o"),
        "--dry-run", "--json", "--n-bits", "4", "--max-shard-size", "1000",
    )  # fmt: skip
    assert code == 0
    plan = json.loads(out)
    assert plan["files"] == 60
    assert plan["bytes"] == sum(r["size_bytes"] for r in dataset.rows)
    assert sum(s["files"] for s in plan["shards"]) == 60
    assert all(s["parts_at_most"] == max(1, -(-s["bytes"] // 1000)) for s in plan["shards"])
    assert not (tmp_path / "o").exists()
    code, out, _ = run("--input-json", str(dataset.manifest), "--dry-run")
    assert code == 0
    assert out.splitlines()[-1].startswith("plan: ")
    assert out.splitlines()[-1].endswith("0 rejected; nothing written")


@pytest.mark.parametrize(
    ("change", "code", "fragment"),
    [
        (
            {"created_at": None},
            2,
            "bad.json entry #2 (uid 'fuid-00001'): missing field created_at; every entry needs "
            "uid, created_at, size_bytes and source_path",
        ),
        (
            {"created_at": "2024-13-45"},
            2,
            "bad.json entry #2 (uid 'fuid-00001'): cannot parse created_at '2024-13-45'",
        ),
        (
            {"size_bytes": -1},
            2,
            "bad.json entry #2 (uid 'fuid-00001'): size_bytes must not be negative, got -1",
        ),
        ({"uid": "fuid-00000"}, 2, "duplicate uid 'fuid-00000' on 20240301"),
        ({"size_bytes": 1}, 1, "bytes but size_bytes is 1; fix size_bytes in the manifest"),
        ({"source_path": "input/nope.bin"}, 1, "nope.bin does not exist; fix source_path"),
        ({"source_path": "input"}, 1, "is a directory, not a file"),
    ],
)
def test_bad_entries(
    dataset: DataSet, tmp_path: Path, change: dict[str, object], code: int, fragment: str
) -> None:
    rows = [dict(r) for r in dataset.rows[:4]]
    if change.get("uid") == "fuid-00000":
        rows[2]["created_at"] = rows[0]["created_at"]
    rows[1].update(change)
    rows[1] = {k: v for k, v in rows[1].items() if v is not None}
    if change.get("uid"):
        rows[2]["uid"] = "fuid-00000"
        rows[1] = dataset.rows[1]
    m = with_rows(dataset, rows)
    got, out, err = run("--input-json", m, "--output-dir", str(tmp_path / "o"))
    assert got == code, err
    assert fragment in err
    assert err.count("des-pack: error: ") == 1
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--codec", "brotli"], "unknown codec 'brotli'; use one of: none, zstd, lz4"),
        (["--n-bits", "40"], "invalid --n-bits 40: n_bits must be within 4..16"),
        (["--shard-range", "7"], "--shard-range '7' is not of the form A-B (for example 0-255)"),
        (["--on-error", "ignore"], "--on-error must be fail or skip, got 'ignore'"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--max-shard-size", "0"], "--max-shard-size must be a positive number of bytes"),
    ],
)
def test_bad_options_exit_2(
    dataset: DataSet, tmp_path: Path, args: list[str], fragment: str
) -> None:
    code, _, err = run("--input-json", str(dataset.manifest), "--output-dir", str(tmp_path), *args)
    assert code == 2
    assert f"des-pack: error: {fragment}" in err


def test_missing_output_dir_is_a_usage_error(dataset: DataSet) -> None:
    code, _, err = run("--input-json", str(dataset.manifest))
    assert code == 2
    assert "--output-dir is required" in err


def test_skip_mode_exit_3_and_report_file(dataset: DataSet, tmp_path: Path) -> None:
    rows = [dict(r) for r in dataset.rows[:6]]
    rows[2]["source_path"] = "input/missing.txt"
    rows[4]["created_at"] = "not a date"
    report = tmp_path / "skipped.jsonl"
    code, out, err = run(
        "--input-json", with_rows(dataset, rows), "--output-dir", str(tmp_path / "o"),
        "--on-error", "skip", "--skipped-report", str(report), "--json",
    )  # fmt: skip
    assert code == 3
    doc = json.loads(out)
    assert doc["files"] == 4
    assert doc["exit_code"] == 3
    skipped = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(s["uid"] for s in skipped) == ["fuid-00002", "fuid-00004"]
    assert f"des-pack: 2 entries skipped; see {report}" in err


def test_help_documents_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Exit codes: 0 everything packed (or nothing to pack: an empty manifest, with a " in text
    assert "warning); 1 packing failed" in text
    assert "3 some entries were skipped" in text


def test_real_process_bad_input_and_good_run(dataset: DataSet, tmp_path: Path) -> None:
    exe = [sys.executable, "-c", "from des_packer.cli import pack_main; pack_main()"]
    rows = [dict(r) for r in dataset.rows[:3]]
    rows[0]["size_bytes"] = "big"
    proc = subprocess.run(
        [*exe, "--input-json", with_rows(dataset, rows), "--output-dir", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "des-pack: error: bad.json entry #1 (uid 'fuid-00000'): size_bytes must be a whole "
        "number of bytes, got 'big'\n"
    )
    proc = subprocess.run(
        [*exe, "--input-json", str(dataset.manifest), "--output-dir", str(tmp_path / "o2")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "files packed:    60" in proc.stdout
    assert len(tree_bytes(tmp_path / "o2")) > 0


def test_jsonl_manifest_streams(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=20, jsonl=True)
    code, out, err = run("--input-json", str(ds.manifest), "--output-dir", str(tmp_path / "o"))
    assert code == 0, err
    assert "files packed:    20" in out


def test_example_data_packs_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = Path(__file__).resolve().parents[3] / "example_data" / "manifests" / "to-pack.json"
    monkeypatch.chdir(tmp_path)  # relative source paths follow the manifest, not the cwd
    code, out, err = run("--input-json", str(manifest), "--output-dir", "out", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["files"] == 50
    rows = json.loads(manifest.read_text())
    assert doc["bytes_in"] == sum(r["size_bytes"] for r in rows)


def test_failure_with_json_reports_what_was_done(dataset: DataSet, tmp_path: Path) -> None:
    rows = [dict(r) for r in dataset.rows[:8]]
    rows[5]["source_path"] = "input/gone.bin"
    code, out, err = run(
        "--input-json", with_rows(dataset, rows), "--output-dir", str(tmp_path / "o"), "--json"
    )
    assert code == 1
    doc = json.loads(out)
    assert doc["exit_code"] == 1
    assert doc["failures"][0]["uid"] == "fuid-00005"
    assert doc["error"].startswith("uid 'fuid-00005': source ")
    assert doc["error"].endswith("then run the same command again")
    assert doc["files"] == sum(s["files"] for s in doc["shards"])
    assert err.count("des-pack: error: ") == 1


def test_late_file_for_a_legacy_shard_is_a_clear_error(tmp_path: Path) -> None:
    import shutil

    from des_routing import locate_shard

    vectors = Path(__file__).resolve().parents[2] / "des-format" / "tests" / "vectors"
    legacy = vectors / "legacy" / "v2-none.des"
    loc = locate_shard("late-1", "2024-01-01T00:00:00Z", 4)
    out = tmp_path / "out"
    (out / loc.date_dir).mkdir(parents=True)
    shutil.copy(legacy, out / loc.object_key)
    (tmp_path / "late.bin").write_bytes(b"late bytes")
    m = write_manifest(
        tmp_path / "m.json",
        [{"uid": "late-1", "created_at": "2024-01-01T00:00:00Z", "size_bytes": 10,
          "source_path": "late.bin"}],
    )  # fmt: skip
    code, _, err = run("--input-json", str(m), "--output-dir", str(out), "--n-bits", "4")
    assert code == 1
    assert f"des-pack: error: cannot add files to {out / loc.object_key}: " in err
    assert "legacy DES2" in err
    assert (out / loc.object_key).read_bytes() == legacy.read_bytes()
    assert not list(out.rglob(".des-tmp.*"))


PACK_FLAGS = [
    "--input-json", "--input-tar", "--output-dir", "--max-shard-size", "--n-bits", "--codec",
    "--level", "--workers", "--processes", "--shard-range", "--dry-run", "--json", "--on-error",
    "--skipped-report", "--big-file-threshold", "--zones-config", "--progress", "--no-progress",
    "--fsync", "--no-fsync", "--dict", "--no-dict", "--dict-max-file-size", "--block-size",
    "--block-member-max", "--help",
]  # fmt: skip


def _one_line(text: str) -> str:
    """typer's help and errors on one line, without rich's box borders."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def test_help_lists_every_flag() -> None:
    exe = Path(sys.executable).parent / "des-pack"
    proc = subprocess.run(
        [str(exe), "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "200", "TERM": "dumb", "PATH": str(exe.parent)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:3] == ["Usage:", "des-pack", "[OPTIONS]"]
    listed = re.findall(r"(?<![\w-])--[a-z][a-z-]*", proc.stdout.split("Options")[1])
    assert sorted(set(listed)) == sorted(PACK_FLAGS)
    text = _one_line(proc.stdout)
    for default in ("[default: (1GiB)]", "[default: ($DES_N_BITS, else 8)]", "[default: 3]"):
        assert default in text


def test_help_is_typers_layout_as_des_and_des_migrate() -> None:
    """One CLI library and one help style for the commands (issue 19)."""
    from des_migrate.cli import migrate_app
    from des_packer.cli import des_app, pack_app
    from typer.testing import CliRunner

    heads = []
    for app, args in (
        (pack_app, ["--help"]),
        (des_app, ["get", "--help"]),
        (migrate_app, ["--help"]),
    ):
        r = CliRunner().invoke(app, args, env={"COLUMNS": "100", "TERM": "dumb"})
        assert r.exit_code == 0, r.output
        heads.append(
            [line.split(" ", 1)[0] for line in r.stdout.split("\n") if line.startswith("╭")]
        )
    assert heads[0] == ["╭─"]
    assert all("╭─" in h for h in heads)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "give --input-json FILE or --input-tar FILE (one of them)"),
        (["--input-json", "m.json", "--frobnicate"], {}, "No such option: --frobnicate"),
        (["--input-json", "m.json", "--n-bit", "4"], {}, "No such option: --n-bit"),
        (["--input-json", "m.json", "--level", "high"], {}, "Invalid value for '--level'"),
        (["--input-json", "m.json", "--workers"], {}, "Option '--workers' requires an argument"),
        (
            ["--input-json", "m.json", "--block-size", "128KB/s"],
            {},
            "Invalid value for '--block-size': expected a number of bytes such as 131072, "
            "128KiB or 1GiB, got '128KB/s'",
        ),
        (
            ["--input-json", "m.json", "--max-shard-size", "1.5GiB"],
            {},
            "Invalid value for '--max-shard-size': expected a number of bytes such as 131072, "
            "128KiB or 1GiB, got '1.5GiB'",
        ),
        (
            ["--input-json", "m.json", "--big-file-threshold", "64 parsecs"],
            {},
            "Invalid value for '--big-file-threshold': expected a number of bytes such as "
            "131072, 128KiB or 1GiB, got '64 parsecs'",
        ),
    ],
)
def test_usage_errors_name_the_option_and_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    exe = Path(sys.executable).parent / "des-pack"
    proc = subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "200", "TERM": "dumb", "PATH": str(exe.parent), **env},
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert message in _one_line(proc.stderr)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DES_N_BITS": "eight"},
            "DES_N_BITS='eight' (the default of --n-bits) is not a whole number; fix or unset it",
        ),
        (
            {"DES_N_BITS": "99"},
            "DES_N_BITS='99' (the default of --n-bits) must be within 4..16; fix or unset it, "
            "or give --n-bits",
        ),
        (
            {"DES_BIG_FILE_THRESHOLD_BYTES": "lots"},
            "DES_BIG_FILE_THRESHOLD_BYTES='lots' (the default of --big-file-threshold) is not "
            "a number of bytes such as 131072, 128KiB or 1GiB; fix or unset it",
        ),
    ],
)
def test_a_bad_environment_default_names_the_variable(
    dataset: DataSet, env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run("--input-json", str(dataset.manifest), "--dry-run")
    assert (code, out) == (2, "")
    assert err == f"des-pack: error: {message}\n"


def test_big_file_threshold_takes_units_like_the_other_sizes(
    dataset: DataSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stored_big(*args: str) -> int:
        out_dir = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        code, _out, err = run(
            "--input-json", str(dataset.manifest), "--output-dir", str(out_dir), *args
        )
        assert code == 0, err
        return len(list(out_dir.rglob("_bigFiles/*")))

    monkeypatch.delenv("DES_BIG_FILE_THRESHOLD_BYTES", raising=False)
    over_1k = sum(1 for r in dataset.rows if int(r["size_bytes"]) > 1024)
    assert over_1k > 0
    assert stored_big("--big-file-threshold", "1KiB") == over_1k
    assert stored_big("--big-file-threshold", "1024") == over_1k
    monkeypatch.setenv("DES_BIG_FILE_THRESHOLD_BYTES", "1KiB")
    assert stored_big() == over_1k
    assert stored_big("--big-file-threshold", "64MiB") == 0


def test_env_defaults_and_flags_over_them(
    dataset: DataSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    def plan(*args: str) -> dict[str, object]:
        code, out, err = run("--input-json", str(dataset.manifest), "--dry-run", "--json", *args)
        assert code == 0, err
        doc: dict[str, object] = json.loads(out)
        return doc

    def key_digits(doc: dict[str, object]) -> set[int]:
        shards = doc["shards"]
        assert isinstance(shards, list)
        return {len(s["key"].split("/")[1]) for s in shards}

    monkeypatch.delenv("DES_N_BITS", raising=False)
    assert key_digits(plan()) == {len("A7.des")}  # 8 bits: two hex digits
    monkeypatch.setenv("DES_N_BITS", "4")
    assert key_digits(plan()) == {len("A.des")}
    assert key_digits(plan("--n-bits", "12")) == {len("A7F.des")}
    monkeypatch.setenv("DES_N_BITS", "")  # empty: as if unset
    assert key_digits(plan()) == {len("A7.des")}


def test_help_and_usage_errors_load_no_packing_code(dataset: DataSet) -> None:
    code = (
        "import sys\n"
        "from des_packer.cli import pack_main\n"
        "try:\n"
        "    pack_main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    names = ('des_packer._commands', 'des_packer._pack', 'des_format')\n"
        "    loaded = [m for m in names if m in sys.modules]\n"
        "    print(exc.code, loaded)\n"
    )
    for args, exit_code in ((["--help"], 0), (["--level", "high"], 2)):
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
        )
        assert proc.stdout.splitlines()[-1] == f"{exit_code} []"
    des = [sys.executable, "-c", "from des_packer.cli import des_main; des_main()", "--help"]
    proc = subprocess.run(des, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Inspect and retrieve DES shards" in proc.stdout


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("131072", 131072),
        ("128KiB", 128 << 10),
        ("128kib", 128 << 10),
        ("4MiB", 4 << 20),
        ("1GiB", 1 << 30),
        ("100MB", 100_000_000),
        ("64kB", 64_000),
        ("512B", 512),
        (" 2 MiB ", 2 << 20),
    ],
)
def test_byte_sizes_take_binary_and_decimal_units(text: str, size: int) -> None:
    from des_packer._pack_app import byte_size

    assert byte_size(text) == size
