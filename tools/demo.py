"""Pack the sample files through the embedded defaults and read every one back.

Run through ``bash tools/demo`` (which installs the workspace first). Everything it writes goes
under ``demo-output/`` (removed and recreated on each run). The database also lists a few newer
files (two days old) that this run leaves for the next one (``--cutoff`` below), so that
``des-stats`` and ``des-migrate --dry-run`` on it, as in the README, have rows to show.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-output"
#: The sample files are from January 2024: the demo migrates rows created before this instant
#: and leaves the newer rows (``PENDING``) unarchived.
CUTOFF = "2024-02-01T00:00:00Z"
PENDING = 5


def run(*args: str, env: dict[str, str] | None = None) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run(args, check=True, cwd=OUT, env=env)


def main() -> int:
    manifest_path = ROOT / "example_data" / "manifests" / "to-pack.json"
    manifest = json.loads(manifest_path.read_text())
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()

    # 1. The business database: one row per file, all old enough to archive.
    db = OUT / "files.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE files (uid TEXT PRIMARY KEY, created_at TIMESTAMP, file_location TEXT,"
        " size_bytes INTEGER, archived BOOLEAN DEFAULT 0)"
    )
    for item in manifest:
        source = (manifest_path.parent / item["source_path"]).resolve()
        created = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
        con.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, 0)",
            (
                item["uid"],
                created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                str(source),
                item["size_bytes"],
            ),
        )
    # A few newer files, not yet migrated: copies of sample files under demo-output/incoming.
    incoming = OUT / "incoming"
    incoming.mkdir()
    recent = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    for i, item in enumerate(manifest[:PENDING]):
        source = (manifest_path.parent / item["source_path"]).resolve()
        copy = incoming / f"new-{i:06d}{source.suffix}"
        shutil.copyfile(source, copy)
        con.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, 0)",
            (
                f"new-{i:06d}",
                (recent + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S"),
                str(copy),
                copy.stat().st_size,
            ),
        )
    con.commit()
    con.close()

    config = OUT / "migration-config.json"
    config.write_text(
        json.dumps(
            {
                "database": {"url": f"sqlite+pysqlite:///{db}", "table_name": "files"},
                "migration": {"archive_age_days": 1, "batch_size": 100},
                "packer": {"output_dir": str(OUT / "des"), "n_bits": 4},
            },
            indent=2,
        )
    )

    # 2. Migrate the January rows: pack, verify, mark archived (sources are kept:
    #    delete_source_files is off). The newer rows stay for the next run.
    bin_dir = Path(sys.executable).parent
    run(str(bin_dir / "des-migrate"), "--config", str(config), "--cutoff", CUTOFF)

    # 3. Read every file back through the same retrieval pipeline the service uses.
    batch = OUT / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"uid": m["uid"], "created_at": m["created_at"]}) + "\n" for m in manifest
        )
    )
    env = {
        "DES_BACKEND": "local",
        "DES_BASE_DIR": str(OUT / "des"),
        "DES_N_BITS": "4",
        "PATH": str(bin_dir),
    }
    run(str(bin_dir / "des"), "get", "--batch", str(batch), "--out", str(OUT / "restored"), env=env)

    bad = 0
    for item in manifest:
        original = (manifest_path.parent / item["source_path"]).read_bytes()
        restored_path = OUT / "restored" / item["uid"]
        restored = restored_path.read_bytes() if restored_path.exists() else None
        if restored != original:
            bad += 1
            print(f"MISMATCH {item['uid']}", file=sys.stderr)
    shards = sorted(p.relative_to(OUT / "des") for p in (OUT / "des").rglob("*.des"))
    digest = hashlib.sha256(b"".join((OUT / "des" / s).read_bytes() for s in shards)).hexdigest()
    con = sqlite3.connect(db)
    (archived,) = con.execute("SELECT count(*) FROM files WHERE archived").fetchone()
    (pending,) = con.execute("SELECT count(*) FROM files WHERE NOT archived").fetchone()
    con.close()
    rows_ok = (archived, pending) == (len(manifest), PENDING)
    if not rows_ok:
        print(f"UNEXPECTED {archived} archived and {pending} pending rows", file=sys.stderr)
    print(
        f"\n{len(manifest)} files packed into {len(shards)} shards, "
        f"{len(manifest) - bad} read back byte-exact, {bad} mismatched "
        f"(shards sha256 {digest[:16]}); {pending} newer rows left unarchived for the next run "
        "(see them with des-stats or des-migrate --dry-run)"
    )
    return 1 if bad or not rows_ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
