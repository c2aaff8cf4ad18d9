"""SIGKILL a real ``des repack`` subprocess at random points: every file not deleted keeps
reading byte-exact, every deleted one keeps reading as deleted, and a second run finishes the
erasure."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    EntryDeleted,
    LocalObjectStore,
    LocalShardEditor,
    ShardReader,
    ShardRetriever,
    part_key,
    read_shard_index,
)
from des_packer import PackOptions, pack, read_manifest
from des_packer._deletions import iter_deletions
from des_packer._repack import RepackOptions, is_head_key, repack
from des_routing import locate_shard

sys.path.insert(0, str(Path(__file__).parent))
from test_delete_local import N_BITS, content, des, make_files

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

TRIALS = 20

CHILD = r"""
import os, signal, sys, time
from des_format import LocalShardEditor
from des_packer._repack import RepackOptions, repack

base, kill_at = sys.argv[1], int(sys.argv[2])
steps = 0

def hook(step):
    global steps
    steps += 1
    if steps == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

print("ready", flush=True)
started = time.perf_counter()
repack(LocalShardEditor(base), RepackOptions(max_part_size=700, bigfile_grace_seconds=0),
       hook=hook)
print(steps, time.perf_counter() - started, flush=True)
"""


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, list[dict[str, Any]], set[str]]:
    root = tmp_path_factory.mktemp("kill")
    rows = make_files(root, n=60, big=4)
    out = root / "out"
    pack(
        read_manifest(root / "m.json"),
        str(out),
        PackOptions(n_bits=N_BITS, max_shard_size=700, big_file_threshold=2500),
    )
    # big-0 and big-1 share their content and stay; big-2 and big-3 are deleted
    victims = {r["uid"] for i, r in enumerate(rows[:60]) if i % 4 == 1} | {"big-2", "big-3"}
    for r in rows:
        if r["uid"] in victims:
            assert des(out, "delete", r["uid"], "--created-at", r["created_at"])[0] == 0
    return root, out, rows, victims


def run_child(out: Path, kill_at: int, delay: float | None) -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out), str(kill_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    if delay is not None:
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout + stderr


def check_readable(out: Path, root: Path, rows: list[dict[str, Any]], victims: set[str]) -> None:
    retriever = ShardRetriever(LocalObjectStore(out))
    for r in rows:
        key = locate_shard(r["uid"], r["created_at"], N_BITS).object_key
        if r["uid"] in victims:
            with pytest.raises(EntryDeleted):
                retriever.read(key, r["uid"])
        else:
            assert retriever.read(key, r["uid"]) == content(root, r["uid"]), r["uid"]
    # every visible shard is complete: header, index and every payload check out
    for path in sorted(out.rglob("*.des")):
        if not is_head_key(path.relative_to(out).as_posix()):
            continue
        with ShardReader.open_path(path) as reader:
            reader.verify(deep=True)


def all_bytes(out: Path) -> bytes:
    return b"\x00".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


def test_sigkill_during_repack_never_loses_a_file(
    base: tuple[Path, Path, list[dict[str, Any]], set[str]], tmp_path: Path
) -> None:
    root, out, rows, victims = base
    # one full run to learn how many steps and how long the repack itself takes
    probe = tmp_path / "probe"
    shutil.copytree(out, probe)
    code, text = run_child(probe, 0, None)
    assert code == 0, text
    steps_s, seconds_s = text.split()[-2:]
    total_steps, seconds = int(steps_s), float(seconds_s)
    assert total_steps >= 10
    stored: dict[str, bytes] = {}
    store = LocalObjectStore(out)
    for r in rows:
        if r["uid"] in victims:
            key = locate_shard(r["uid"], r["created_at"], N_BITS).object_key
            e = read_shard_index(store, key)[0].lookup(r["uid"])
            assert e is not None
            assert e.deleted
            okey = key if e.part == 0 or e.is_bigfile else part_key(key, e.part)
            if not e.is_bigfile:
                stored[r["uid"]] = store.read_range(okey, e.offset, e.offset + e.stored_size)

    rnd = random.Random(1234)
    killed = 0
    for trial in range(TRIALS):
        work = tmp_path / f"t{trial}"
        shutil.copytree(out, work)
        if trial % 2 == 0:
            code, text = run_child(work, rnd.randint(1, total_steps), None)
        else:
            code, text = run_child(work, 0, rnd.uniform(0, seconds))
        killed += code == -signal.SIGKILL
        check_readable(work, root, rows, victims)
        # a second run finishes the job: nothing deleted is left anywhere
        report = repack(
            LocalShardEditor(work), RepackOptions(max_part_size=700, bigfile_grace_seconds=0)
        )
        assert report.failures == ()
        check_readable(work, root, rows, victims)
        assert {d.state for d in iter_deletions(LocalShardEditor(work))} == {"erased"}
        blob = all_bytes(work)
        for r in rows:
            if r["uid"] in victims:
                assert content(root, r["uid"]) not in blob, (trial, r["uid"])
        for uid, s in stored.items():
            if len(s) >= 32:
                assert s not in blob, (trial, uid)
        shutil.rmtree(work)
    assert killed >= TRIALS // 2
    os.sync()
