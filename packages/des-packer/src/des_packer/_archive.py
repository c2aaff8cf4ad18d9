"""Manifests from archives: a tar (plain or compressed) or a zip holding files named by uid and
a ``manifest.jsonl`` (what ``des export`` writes), turned into an ordinary JSON Lines manifest
for des-pack.

Every member is copied once into a work directory (checked against the manifest's size and
checksum on the way), so the pack then reads plain local files; the work directory is the
caller's (``des-pack --input-tar`` uses a temporary one, removed afterwards).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ._errors import ManifestError

__all__ = ["ARCHIVE_MANIFEST", "unpack_archive"]

ARCHIVE_MANIFEST = "manifest.jsonl"
_CHUNK = 1 << 20


@contextmanager
def _members(path: Path) -> Iterator[Iterator[tuple[str, IO[bytes]]]]:
    """(name, readable) of each regular member of a tar or zip, in archive order."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:

            def zip_members() -> Iterator[tuple[str, IO[bytes]]]:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    with zf.open(info) as fh:
                        yield info.filename, fh

            yield zip_members()
        return
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError) as exc:
        raise ManifestError(
            f"--input-tar {path} is neither a tar nor a zip archive ({exc}); give the file "
            "des export wrote, or a tar/zip with manifest.jsonl"
        ) from None

    def tar_members() -> Iterator[tuple[str, IO[bytes]]]:
        for info in tar:
            if info.isdir():
                continue
            if not info.isfile():
                raise ManifestError(
                    f"--input-tar {path}: member {info.name!r} is not a regular file "
                    "(links and devices cannot be packed); remove it from the archive"
                )
            fh = tar.extractfile(info)
            assert fh is not None  # a regular file
            with fh:
                yield info.name, fh

    with tar:
        yield tar_members()


def _copy(src: IO[bytes], dest: Path) -> tuple[int, int, str]:
    """Copy ``src`` to ``dest``; (size, CRC-32, SHA-256 hex) of the bytes."""
    from des_format import crc32

    crc = 0
    sha = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            crc = crc32(chunk, crc)
            sha.update(chunk)
            size += len(chunk)
    return size, crc, sha.hexdigest()


def _safe_name(name: object, fallback: str) -> str:
    plain = isinstance(name, str) and name not in ("", ".", "..")
    if plain and not any(c in str(name) for c in "/\\\x00"):
        return str(name)
    return fallback


def unpack_archive(path: str | os.PathLike[str], work_dir: str | os.PathLike[str]) -> Path:
    """Copy the members of the archive at ``path`` into ``work_dir`` and write there a JSON
    Lines manifest des-pack reads (``ManifestError`` naming the problem otherwise).

    Each manifest line needs ``uid`` (the member's name), ``created_at`` and ``size_bytes``;
    ``content_type``, ``checksum`` (``crc32:<8 hex>`` or ``sha256:<64 hex>``, checked) and
    ``meta`` are kept. A member the manifest does not name, or a line whose member is
    missing, is an error: nothing is left out silently.
    """
    archive = Path(path)
    work = Path(work_dir)
    files = work / "files"
    files.mkdir(parents=True, exist_ok=True)
    found: dict[str, tuple[Path, int, int, str]] = {}
    manifest_bytes: bytes | None = None
    if not archive.is_file():
        raise ManifestError(f"--input-tar {archive} does not exist or is not a file")
    try:
        with _members(archive) as members:
            for n, (name, fh) in enumerate(members):
                if name == ARCHIVE_MANIFEST:
                    manifest_bytes = fh.read()
                    continue
                if name in found:
                    raise ManifestError(
                        f"--input-tar {archive}: member {name!r} appears twice; keep one"
                    )
                folder = files / str(n)
                folder.mkdir()
                dest = folder / "data"
                size, crc, sha = _copy(fh, dest)
                found[name] = (dest, size, crc, sha)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ManifestError(f"--input-tar {archive} is damaged: {exc}") from None
    if manifest_bytes is None:
        raise ManifestError(
            f"--input-tar {archive} holds no {ARCHIVE_MANIFEST}; add one (JSON Lines of uid, "
            "created_at, size_bytes, content_type) or write the archive with des export"
        )
    rows: list[dict[str, Any]] = []
    named: set[str] = set()
    for lineno, raw in enumerate(manifest_bytes.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{archive.name}:{ARCHIVE_MANIFEST} line {lineno}"
        try:
            row = json.loads(raw)
        except ValueError as exc:
            raise ManifestError(f"not valid JSON ({exc})", where=where) from None
        if not isinstance(row, dict) or not isinstance(row.get("uid"), str):
            raise ManifestError("expected a JSON object with a string uid", where=where)
        uid = row["uid"]
        if uid not in found:
            raise ManifestError(
                f"uid {uid!r} has no member of that name in the archive", where=where
            )
        if uid in named:
            raise ManifestError(f"uid {uid!r} is listed twice", where=where)
        named.add(uid)
        dest, size, crc, sha = found[uid]
        if row.get("size_bytes") != size:
            raise ManifestError(
                f"uid {uid!r}: size_bytes is {row.get('size_bytes')!r} but the member has "
                f"{size} bytes",
                where=where,
            )
        checksum = row.get("checksum")
        if checksum is not None:
            algo, _, value = str(checksum).partition(":")
            actual = {"crc32": f"{crc:08x}", "sha256": sha}.get(algo)
            if actual is None:
                raise ManifestError(
                    f"uid {uid!r}: unknown checksum {checksum!r}; use crc32:<8 hex digits> "
                    "or sha256:<64 hex digits>",
                    where=where,
                )
            if value.lower() != actual:
                raise ManifestError(
                    f"uid {uid!r}: the member's {algo} is {actual}, the manifest says "
                    f"{value}: the archive is damaged",
                    where=where,
                )
        meta = row.get("meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        name = _safe_name(meta.pop("name", None), "data")
        if name != "data":
            dest = dest.rename(dest.with_name(name))
        out: dict[str, Any] = {
            "uid": uid,
            "created_at": row.get("created_at"),
            "size_bytes": size,
            "source_path": str(dest.relative_to(work)),
        }
        if row.get("content_type") is not None:
            out["content_type"] = row["content_type"]
        if meta:
            out["meta"] = meta
        rows.append(out)
    extra = sorted(set(found) - named)
    if extra:
        raise ManifestError(
            f"--input-tar {archive}: members not in {ARCHIVE_MANIFEST}: "
            f"{', '.join(repr(x) for x in extra[:5])}{' ...' if len(extra) > 5 else ''}; "
            "list them (uid, created_at, size_bytes) or remove them"
        )
    manifest = work / "manifest.jsonl"
    with manifest.open("w", encoding="utf-8") as mf:
        for r in rows:
            mf.write(json.dumps(r, ensure_ascii=False) + "\n")
    return manifest
