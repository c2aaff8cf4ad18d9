"""R7: kill a real des-pack process (SIGKILL) at random instants, then check that no partial
shard is visible, that every file stored before is readable, and that running the same command
again finishes the job with byte-identical shards. Once with one frame per file, once with
solid blocks (``--block-size``, on fewer and larger shards so that blocks form)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from des_format import Codec, ShardReader
from des_packer import PackOptions, pack, plan_shards, read_manifest
from des_packer_testkit import DataSet, make_dataset, tree_bytes, write_manifest

TRIALS = 20
THRESHOLD = 4000
EXE = [sys.executable, "-c", "from des_packer.cli import pack_main; pack_main()"]
# variant -> (n_bits, solid block size, block member max); 0: one frame per file
VARIANTS = {"frames": (6, 0, 0), "blocks": (4, 2048, 1024)}


def cli_args(manifest: Path, out: Path, variant: str) -> list[str]:
    n_bits, block_size, member_max = VARIANTS[variant]
    args = [
        "--input-json", str(manifest), "--output-dir", str(out), "--n-bits", str(n_bits),
        "--workers", "2", "--big-file-threshold", str(THRESHOLD), "--max-shard-size", "3000",
    ]  # fmt: skip
    if block_size:
        args += ["--block-size", str(block_size), "--block-member-max", str(member_max)]
    return args


def options(variant: str) -> PackOptions:
    n_bits, block_size, member_max = VARIANTS[variant]
    return PackOptions(
        n_bits=n_bits,
        workers=2,
        big_file_threshold=THRESHOLD,
        max_shard_size=3000,
        block_size=block_size,
        block_member_max=member_max or 64 * 1024,
    )


def visible(out: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree_bytes(out).items() if ".des-tmp." not in k}


def check_consistent(out: Path, ds: DataSet, planned: dict[str, set[str]], old: set[str]) -> None:
    """Every visible shard is complete and readable; every file packed before is readable."""
    seen: set[str] = set()
    for shard in sorted(out.rglob("*.des")):
        rel = str(shard.relative_to(out))
        if shard.name.startswith(".") or ".p" in shard.name:
            continue
        with ShardReader.open_path(shard) as reader:
            reader.verify(deep=True)
            uids = {e.uid for e in reader.iter_entries()}
            for uid in uids:
                assert reader.read(uid) == ds.content(uid)
        assert uids <= planned[rel]
        seen |= uids
    assert old <= seen


def block_members(out: Path) -> int:
    """How many entries of the shards under ``out`` are solid-block members."""
    count = 0
    for shard in out.rglob("*.des"):
        if shard.name.startswith(".") or ".p" in shard.name:
            continue
        with ShardReader.open_path(shard) as reader:
            count += sum(e.codec is Codec.ZSTD_BLOCK for e in reader.iter_entries())
    return count


def wait_for_output(proc: subprocess.Popen[bytes], out: Path) -> float:
    """Wait until the packer has started writing (a temporary file exists) or exited."""
    while proc.poll() is None and not (out.exists() and any(out.rglob(".des-tmp.*"))):
        time.sleep(0.002)
    return time.monotonic()


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sigkill_at_random_instants_never_leaves_a_partial_shard(
    tmp_path: Path, variant: str
) -> None:
    ds = make_dataset(tmp_path / "d", n=100, days=2, big=3, big_size=6000)
    first_rows = ds.rows[::4]
    first = write_manifest(ds.root / "first.json", first_rows)
    plan = plan_shards(read_manifest(ds.manifest), n_bits=VARIANTS[variant][0])
    planned = {s.key: {e.uid for e in s.entries} for s in plan.shards}

    # References: one uninterrupted run, and a first run followed by a late run (appends).
    ref_fresh = tmp_path / "ref-fresh"
    started = time.monotonic()
    proc = subprocess.run(
        [*EXE, *cli_args(ds.manifest, ref_fresh, variant)], capture_output=True, check=False
    )
    duration = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    ref_append = tmp_path / "ref-append"
    pack(read_manifest(first), str(ref_append), options(variant))
    pack(read_manifest(ds.manifest), str(ref_append), options(variant))
    expected = {"fresh": visible(ref_fresh), "append": visible(ref_append)}
    if VARIANTS[variant][1]:  # the references hold solid blocks, so the kills hit them too
        assert block_members(ref_fresh) > 0
        assert block_members(ref_append) > 0

    rnd = random.Random(20240301)
    killed_mid_run = 0
    trial = -1
    # The kill instant is drawn from [0, scale * duration) after the packer starts writing. A
    # kill that comes too late (the packer had already finished: a slow machine made the
    # reference run look long) halves the scale, so kills keep landing mid-run whatever the
    # load; the count of trials stays bounded and every trial is checked either way.
    scale = 0.8
    while killed_mid_run < TRIALS:
        trial += 1
        assert trial < 10 * TRIALS, f"only {killed_mid_run} of {trial} kills landed mid-run"
        mode = "append" if trial % 2 else "fresh"
        out = tmp_path / f"t{trial}"
        old: set[str] = set()
        if mode == "append":
            pack(read_manifest(first), str(out), options(variant))
            old = {r["uid"] for r in first_rows}
        child = subprocess.Popen(
            [*EXE, *cli_args(ds.manifest, out, variant)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_output(child, out)
        time.sleep(rnd.uniform(0.0, scale * duration))
        child.send_signal(signal.SIGKILL)
        rc = child.wait()
        if rc == -signal.SIGKILL:
            killed_mid_run += 1
        else:
            scale /= 2
        check_consistent(out, ds, planned, old)
        report = pack(read_manifest(ds.manifest), str(out), options(variant))
        assert report.failures == ()
        assert visible(out) == expected[mode], f"trial {trial} ({mode})"
        assert not [p for p in out.rglob(".des-tmp.*")], f"trial {trial}: temp files left"
