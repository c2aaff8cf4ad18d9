"""R7 on S3: kill a real des-pack process writing to the S3 server (SIGKILL at random instants),
then check that every shard visible in the bucket is complete and readable, and that running
the same command again finishes the job with byte-identical objects. Once with one frame per
file, once with solid blocks (``--block-size``, more files so that shards hold blocks)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from des_format import Codec, ShardReader, StoreSource, bigfile_key, part_key
from des_packer import PackOptions, pack, plan_shards, read_manifest
from des_packer_testkit import DataSet, make_dataset
from des_routing import DesSettings
from des_storage_s3 import open_store

TRIALS = 20
N_BITS = 4
# variant -> (files, extra des-pack flags)
VARIANTS: dict[str, tuple[int, list[str]]] = {
    "frames": (14, []),
    "blocks": (80, ["--block-size", "4096", "--block-member-max", "2048"]),
}
EXE = [sys.executable, "-c", "from des_packer.cli import pack_main; pack_main()"]


def objects(client: Any, prefix: str) -> dict[str, tuple[int, str]]:
    """key -> (size, ETag): equal ETags of equal-sized uploads mean equal bytes (MD5 based)."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="packed", Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) :]] = (obj["Size"], obj["ETag"])
    return out


def check_visible(s3: Any, prefix: str, ds: DataSet, planned: dict[str, set[str]]) -> int:
    """Every visible shard is whole and reads back; returns how many solid-block members
    the visible shards hold."""
    members = 0
    env = {
        "DES_BACKEND": "s3",
        "DES_S3_BUCKET": "packed",
        "DES_S3_PREFIX": prefix,
        "DES_S3_ENDPOINT_URL": s3.endpoint_url,
        "DES_N_BITS": str(N_BITS),
    }
    store = open_store(DesSettings.from_env(env))
    for key in objects(s3.client(), prefix + "/"):
        if not key.endswith(".des") or ".p" in key:
            continue
        reader = ShardReader(
            StoreSource(store, key),
            lambda n, k=key: StoreSource(store, part_key(k, n)),
            lambda sha, k=key: StoreSource(store, bigfile_key(k, sha)),
        )
        reader.verify(deep=True)
        uids = {e.uid for e in reader.iter_entries()}
        assert uids == planned[key], key  # fresh runs publish whole shards only
        members += sum(e.codec is Codec.ZSTD_BLOCK for e in reader.iter_entries())
        for uid in uids:
            assert reader.read(uid) == ds.content(uid)
    return members


@pytest.mark.slow
@pytest.mark.s3_servers(
    "moto",
    reason="20 SIGKILLs per variant test the packer's commit protocol (R7), which no server's "
    "answers change; SeaweedFS runs the large-append, delete and every other S3 suite, and "
    "this test alone would add about 5 minutes to CI there",
)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sigkill_while_packing_to_s3(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    n_files, extra = VARIANTS[variant]
    s3_server.reset()
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    client = s3_server.client()
    client.create_bucket(Bucket="packed")
    ds = make_dataset(tmp_path / "d", n=n_files, days=1, big=1, big_size=3000)
    plan = plan_shards(read_manifest(ds.manifest), n_bits=N_BITS)
    planned = {s.key: {e.uid for e in s.entries} for s in plan.shards}
    options = PackOptions(
        n_bits=N_BITS,
        big_file_threshold=2500,
        max_shard_size=2000,
        s3_endpoint_url=s3_server.endpoint_url,
        block_size=4096 if extra else 0,
        block_member_max=2048 if extra else 64 * 1024,
    )
    env = {**os.environ, **s3_server.env(), "DES_S3_ENDPOINT_URL": s3_server.endpoint_url}

    def args(prefix: str) -> list[str]:
        return [
            *EXE, "--input-json", str(ds.manifest), "--output-dir", f"s3://packed/{prefix}",
            "--n-bits", str(N_BITS), "--big-file-threshold", "2500", "--max-shard-size", "2000",
            "--progress", *extra,
        ]  # fmt: skip

    # Reference run; the progress bar's first output marks the start of packing.
    ref = subprocess.Popen(args("ref"), env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert ref.stderr is not None
    ref.stderr.read(1)
    started = time.monotonic()
    ref.wait()
    duration = time.monotonic() - started
    assert ref.returncode == 0
    expected = objects(client, "ref/")
    assert len(expected) > len(planned)  # heads, parts and big files
    assert (check_visible(s3_server, "ref", ds, planned) > 0) == bool(extra)

    rnd = random.Random(7)
    killed = 0
    trial = -1
    scale = 1.0  # halved after each kill that came too late, so kills keep landing mid-run
    while killed < TRIALS:
        trial += 1
        assert trial < 10 * TRIALS, f"only {killed} of {trial} kills landed mid-run"
        prefix = f"t{trial}"
        child = subprocess.Popen(
            args(prefix), env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        assert child.stderr is not None
        child.stderr.read(1)
        time.sleep(rnd.uniform(0.0, scale * duration))
        child.send_signal(signal.SIGKILL)
        if child.wait() == -signal.SIGKILL:
            killed += 1
        else:
            scale /= 2
        child.stderr.close()
        check_visible(s3_server, prefix, ds, planned)
        report = pack(read_manifest(ds.manifest), f"s3://packed/{prefix}", options)
        assert report.failures == ()
        assert objects(client, prefix + "/") == expected, f"trial {trial}"
        staging = Path(tempfile.gettempdir()).glob(f"des-pack-{child.pid}-*")
        assert not list(staging), "the killed packer's staging directory was not removed"
