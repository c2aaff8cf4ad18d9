"""A store that describes itself: the layout record ``_des_layout.json``.

The first pack records n_bits, the big-file prefix, the zone-map digest and the format
version, create-only; a later pack with other settings is refused naming both values; readers
(des, des-http as a real server, the des:// fsspec filesystem) take n_bits from it when it is
not given and refuse a mismatch naming both; a cold ``des get`` with DES_N_BITS given makes
no extra request; stores without a record keep working. Conditional creation is raced on a
local directory, on moto's S3 server and on SeaweedFS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pytest
from des_format import (
    LAYOUT_KEY,
    LocalObjectStore,
    ObjectStoreBase,
    StoreLayout,
    read_store_layout,
)
from des_packer import PackConfigError, PackOptions, pack, read_manifest
from des_packer._inspect import run_get
from des_packer._store_check import check_destination_layout
from des_packer.cli import des_app
from des_routing import locate_shard_key
from des_testing import free_port
from typer.testing import CliRunner

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

CREATED = "2024-02-02T10:00:00Z"
FILES = {f"doc-{i}": (f"file {i} " * (i + 1)).encode() for i in range(12)}


def write_manifest(root: Path) -> Path:
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    rows = []
    for uid, data in FILES.items():
        (src / uid).write_bytes(data)
        row = {"uid": uid, "created_at": CREATED, "size_bytes": len(data)}
        rows.append({**row, "source_path": f"src/{uid}"})
    manifest = root / "m.json"
    manifest.write_text(json.dumps(rows))
    return manifest


def des_pack(manifest: Path, out: str, *args: str, env: dict[str, str] | None = None) -> Any:
    exe = Path(sys.executable).parent / "des-pack"
    return subprocess.run(
        [str(exe), "--input-json", str(manifest), "--output-dir", out, "--no-progress", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=300,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DES_", "AWS_"))}
    env.update(extra)
    return env


def des(*args: str, env: dict[str, str]) -> Any:
    return CliRunner().invoke(des_app, list(args), env=env)


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    manifest = write_manifest(tmp_path)
    out = tmp_path / "des"
    done = des_pack(manifest, str(out), "--n-bits", "4")
    assert done.returncode == 0, done.stderr
    return out


def test_first_pack_records_the_layout_and_a_mismatch_is_refused(
    packed: Path, tmp_path: Path
) -> None:
    record = json.loads((packed / LAYOUT_KEY).read_text())
    assert record == {
        "record": "des-store-layout",
        "version": 1,
        "format_version": 1,
        "n_bits": 4,
        "bigfiles_prefix": "_bigFiles",
        "zones_digest": None,
    }
    before = sorted(p.name for p in (packed / "20240202").iterdir())
    done = des_pack(tmp_path / "m.json", str(packed), "--n-bits", "6")
    assert done.returncode == 2
    assert f"{packed}/ was written with n_bits 4 (not 6)" in done.stderr
    assert "DES_N_BITS=4" in done.stderr
    assert "nothing was written" in done.stderr
    assert sorted(p.name for p in (packed / "20240202").iterdir()) == before
    again = des_pack(tmp_path / "m.json", str(packed), "--n-bits", "4")  # same settings: fine
    assert again.returncode == 0, again.stderr


def test_des_reads_without_des_n_bits_and_names_both_values(packed: Path) -> None:
    env = {"DES_BACKEND": "local", "DES_BASE_DIR": str(packed), "DES_N_BITS": ""}
    got = des("get", "doc-3", "--created-at", CREATED, env=env)
    assert got.exit_code == 0, got.stderr
    assert got.stdout_bytes == FILES["doc-3"]
    got = des("ls", "--day", "20240202", "--json", env=env)
    assert got.exit_code == 0, got.stderr
    assert len(got.stdout.splitlines()) == len(FILES)
    wrong = {**env, "DES_N_BITS": "8"}
    got = des("get", "doc-3", "--created-at", CREATED, env=wrong)
    assert got.exit_code == 2
    assert "was written with n_bits 4 (not 8)" in got.stderr
    got = des("ls", "--day", "20240202", env=wrong)
    assert got.exit_code == 2
    assert "was written with n_bits 4 (not 8)" in got.stderr


class Counting(ObjectStoreBase):
    """Counts the reads of the inner store; it is its own only part, so the layout record's
    read goes through it too (and is counted)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in ("read_tail", "read_range", "iter_range", "head"):

            def counted(key: str, *a: Any, **kw: Any) -> Any:
                self.calls.append((name, key))
                return attr(key, *a, **kw)

            return counted
        return attr


def test_des_get_makes_no_extra_request_when_n_bits_is_given(
    packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from des_packer import _inspect

    stores: list[Counting] = []
    real = _inspect.open_read_store

    def counting(settings: Any) -> Any:
        stores.append(Counting(real(settings)))
        return stores[-1]

    monkeypatch.setattr(_inspect, "open_read_store", counting)
    for var in [v for v in os.environ if v.startswith("DES_")]:
        monkeypatch.delenv(var)
    key = locate_shard_key("doc-5", CREATED, 4)
    import io

    out = io.BytesIO()
    given = {"DES_BACKEND": "local", "DES_BASE_DIR": str(packed), "DES_N_BITS": "4"}
    assert run_get("doc-5", CREATED, None, given, stdout=out) == 0
    assert out.getvalue() == FILES["doc-5"]
    assert LAYOUT_KEY not in [k for _, k in stores[-1].calls]
    assert 1 <= len(stores[-1].calls) <= 2  # tail (footer + index) and at most the payload
    assert {k for _, k in stores[-1].calls} == {key}
    out = io.BytesIO()
    assert run_get("doc-5", CREATED, None, {**given, "DES_N_BITS": None}, stdout=out) == 0
    assert out.getvalue() == FILES["doc-5"]
    assert stores[-1].calls[0] == ("read_tail", LAYOUT_KEY)  # one more request, first
    assert [k for _, k in stores[-1].calls[1:]] == [key] * (len(stores[-1].calls) - 1)


def test_stores_without_a_record_keep_working(packed: Path) -> None:
    (packed / LAYOUT_KEY).unlink()
    assert read_store_layout(LocalObjectStore(packed)) is None
    env = {"DES_BACKEND": "local", "DES_BASE_DIR": str(packed), "DES_N_BITS": "4"}
    got = des("get", "doc-1", "--created-at", CREATED, env=env)
    assert got.exit_code == 0, got.stderr
    assert got.stdout_bytes == FILES["doc-1"]
    got = des("get", "doc-1", "--created-at", CREATED, env={**env, "DES_N_BITS": "8"})
    assert got.exit_code == 1
    assert "no shard" in got.stderr  # as before the record existed


def test_fsspec_takes_n_bits_from_the_record(packed: Path) -> None:
    opts = {"backend": "local", "base_dir": str(packed), "skip_instance_cache": True}
    with fsspec.open("des://20240202/doc-7", "rb", **opts) as fh:
        assert fh.read() == FILES["doc-7"]
    with pytest.raises(ValueError, match=r"was written with n_bits 4 \(not 5\)"):
        fsspec.filesystem("des", n_bits=5, **opts)


@pytest.fixture
def http_env(packed: Path) -> dict[str, str]:
    return clean_env(DES_BACKEND="local", DES_BASE_DIR=str(packed))


def test_des_http_takes_n_bits_from_the_record(http_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    exe = Path(sys.executable).parent / "des-http"
    log = tmp_path / "http.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "--port", str(port)],
            env=http_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/files/doc-9",
                    params={"created_at": CREATED},
                    timeout=5,
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert r.status_code == 200
        assert r.content == FILES["doc-9"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    bad = subprocess.run(
        [str(exe), "--host", "127.0.0.1", "--port", str(free_port())],
        env={**http_env, "DES_N_BITS": "8"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "des-http: invalid configuration: DES_N_BITS:" in bad.stderr
    assert "was written with n_bits 4 (not 8)" in bad.stderr


def race(make: Any) -> list[str]:
    """Two writers with different n_bits set up the same new store at once: exactly one
    layout wins and the other writer is refused naming both values."""
    results: list[str] = []
    barrier = threading.Barrier(2)

    def writer(n_bits: int) -> None:
        barrier.wait()
        try:
            make(n_bits)
            results.append(f"ok {n_bits}")
        except PackConfigError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=writer, args=(n,)) for n in (4, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results)


def test_conditional_creation_on_a_local_directory(tmp_path: Path) -> None:
    out = tmp_path / "race"
    results = race(lambda n: check_destination_layout(str(out), PackOptions(n_bits=n)))
    oks = [r for r in results if r.startswith("ok ")]
    assert len(oks) == 1
    winner = int(oks[0][3:])
    loser = 6 if winner == 4 else 4
    assert [r for r in results if not r.startswith("ok ")] == [
        f"{out}/ was written with n_bits {winner} (not {loser}); use the store's values "
        f"(DES_N_BITS={winner}, DES_BIGFILES_PREFIX=_bigFiles) or another store; nothing was "
        "written"
    ]
    assert StoreLayout.from_bytes((out / LAYOUT_KEY).read_bytes(), "x").n_bits == winner


def test_conditional_creation_on_s3(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On each S3 server of the session (moto and SeaweedFS)."""
    server = s3_server
    server.reset()
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    server.client().create_bucket(Bucket="layout")

    def opts(n: int) -> PackOptions:
        return PackOptions(n_bits=n, s3_endpoint_url=server.endpoint_url, s3_region="us-east-1")

    results = race(lambda n: check_destination_layout("s3://layout/p", opts(n)))
    oks = [r for r in results if r.startswith("ok ")]
    assert len(oks) == 1, results
    winner = int(oks[0][3:])
    loser = 6 if winner == 4 else 4
    (refused,) = [r for r in results if not r.startswith("ok ")]
    assert refused.startswith(
        f"s3://layout/p/{LAYOUT_KEY} was written with n_bits {winner} (not {loser})"
    )
    body = server.client().get_object(Bucket="layout", Key=f"p/{LAYOUT_KEY}")["Body"].read()
    assert StoreLayout.from_bytes(body, "s3").n_bits == winner
    # a real pack into that prefix, then a read that is told nothing about n_bits
    manifest = write_manifest(tmp_path)
    pack(read_manifest(manifest), "s3://layout/p", opts(winner))
    with pytest.raises(PackConfigError, match=f"was written with n_bits {winner} "):
        pack(read_manifest(manifest), "s3://layout/p", opts(loser))
    env = {
        **server.env(),
        "DES_BACKEND": "s3",
        "DES_S3_BUCKET": "layout",
        "DES_S3_PREFIX": "p",
        "DES_S3_ENDPOINT_URL": server.endpoint_url,
        "DES_S3_REGION": "us-east-1",
        "DES_N_BITS": "",
    }
    got = des("get", "doc-2", "--created-at", CREATED, env=env)
    assert got.exit_code == 0, got.stderr
    assert got.stdout_bytes == FILES["doc-2"]


def test_des_delete_and_repack_follow_the_record(packed: Path) -> None:
    env = {"DES_BACKEND": "local", "DES_BASE_DIR": str(packed), "DES_N_BITS": ""}
    got = des("delete", "doc-4", "--created-at", CREATED, env={**env, "DES_N_BITS": "8"})
    assert got.exit_code == 2
    assert "was written with n_bits 4 (not 8)" in got.stderr
    got = des("repack", "--dry-run", env={**env, "DES_BIGFILES_PREFIX": "_other"})
    assert got.exit_code == 2
    assert "big-file prefix '_bigFiles' (not '_other')" in got.stderr
    got = des("delete", "doc-4", "--created-at", CREATED, env=env)  # n_bits from the record
    assert got.exit_code == 0, got.stderr
    got = des("get", "doc-4", "--created-at", CREATED, env=env)
    assert got.exit_code == 4
