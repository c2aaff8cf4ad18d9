"""A store that describes itself: the layout record ``_des_layout.json``.

The first write to a store (a local base directory, an S3 prefix; each zone's for multi-zone
stores) creates this one small object, create-only, holding what a reader must know to find
files: the routing bits ``n_bits``, the big-file prefix, a digest of the zone map (multi-zone
stores) and the shard format version written. Writers check it before writing and refuse a
mismatch; readers take ``n_bits`` from it when they are not told, and refuse to start when
told a different value. Stores written before the record existed have none and work as before.

Standard library only: the JSON text, its checks and the create-only local write. S3 writes go
through des-storage-s3's create-only put.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import DesFormatError, ObjectNotFound
from ._layout import DEFAULT_BIGFILES_PREFIX, FORMAT_VERSION
from ._source import ObjectStore

__all__ = [
    "LAYOUT_KEY",
    "LayoutMismatch",
    "StoreLayout",
    "ensure_local_layout",
    "read_store_layout",
    "zones_digest",
]

LAYOUT_KEY = "_des_layout.json"
_RECORD = "des-store-layout"
_MAX_BYTES = 64 * 1024


class LayoutMismatch(DesFormatError, ValueError):
    """A store's layout record disagrees with the settings in use (the message names both)."""


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """What a store's layout record holds."""

    n_bits: int
    bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX
    zones_digest: str | None = None
    format_version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        doc = {
            "record": _RECORD,
            "version": 1,
            "format_version": self.format_version,
            "n_bits": self.n_bits,
            "bigfiles_prefix": self.bigfiles_prefix,
            "zones_digest": self.zones_digest,
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> StoreLayout:
        """Parse a record; ``DesFormatError`` naming ``where`` when it is not one."""
        try:
            doc: Any = json.loads(data.decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("record") != _RECORD:
                raise ValueError("not a DES layout record")
            n_bits, prefix = doc["n_bits"], doc["bigfiles_prefix"]
            version, digest = doc["format_version"], doc.get("zones_digest")
            if not isinstance(n_bits, int) or not isinstance(version, int):
                raise ValueError("n_bits and format_version must be whole numbers")
            if not isinstance(prefix, str) or not (digest is None or isinstance(digest, str)):
                raise ValueError("bigfiles_prefix and zones_digest must be strings")
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise DesFormatError(
                f"{where} is not a readable DES layout record ({exc}); restore it from a "
                "backup or remove it (the next write records the layout again)"
            ) from None
        return cls(n_bits, prefix, digest, version)

    def differences(
        self,
        *,
        n_bits: int | None,
        bigfiles_prefix: str | None = None,
        zones_digest: str | bool | None = False,
        writing: bool = False,
    ) -> list[str]:
        """What disagrees with the settings given (None/False: not checked), as phrases
        naming the recorded value first."""
        out = []
        if n_bits is not None and n_bits != self.n_bits:
            out.append(f"n_bits {self.n_bits} (not {n_bits})")
        if bigfiles_prefix is not None and bigfiles_prefix.strip("/") != self.bigfiles_prefix:
            out.append(f"big-file prefix {self.bigfiles_prefix!r} (not {bigfiles_prefix!r})")
        if zones_digest is not False and zones_digest != self.zones_digest:
            out.append(
                f"zone map {self.zones_digest or 'none (a single store)'} "
                f"(not {zones_digest or 'none (a single store)'})"
            )
        if self.format_version > FORMAT_VERSION:
            out.append(
                f"shard format version {self.format_version} (this des-format "
                f"{'writes' if writing else 'reads'} up to {FORMAT_VERSION}: upgrade it)"
            )
        return out

    def check(
        self,
        where: str,
        *,
        n_bits: int | None,
        bigfiles_prefix: str | None = None,
        zones_digest: str | bool | None = False,
        writing: bool = False,
    ) -> None:
        """Raise ``LayoutMismatch`` naming the recorded and the given values when they differ."""
        diffs = self.differences(
            n_bits=n_bits,
            bigfiles_prefix=bigfiles_prefix,
            zones_digest=zones_digest,
            writing=writing,
        )
        if diffs:
            raise LayoutMismatch(
                f"{where} was written with {'; '.join(diffs)}; use the store's values "
                f"(DES_N_BITS={self.n_bits}, DES_BIGFILES_PREFIX={self.bigfiles_prefix}) or "
                "another store"
            )


def zones_digest(zones: Iterable[tuple[str, int, int]]) -> str:
    """A digest of a zone map: its zones' (name, first, last shard index), in order."""
    canonical = json.dumps([list(z) for z in zones], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_store_layout(store: ObjectStore) -> StoreLayout | None:
    """The layout record of ``store`` (one read; one per zone of a multi-zone store), or None
    for a store written before records existed. Zones that disagree raise LayoutMismatch."""
    found: list[tuple[str, StoreLayout]] = []
    for s in store.parts().values():  # a multi-zone store: each zone has its record
        try:
            tail = s.read_tail(LAYOUT_KEY, _MAX_BYTES)
        except ObjectNotFound:
            continue
        where = s.describe(LAYOUT_KEY)
        found.append((where, StoreLayout.from_bytes(tail.data, where)))
    return agreed_layout(found)


def agreed_layout(found: Sequence[tuple[str, StoreLayout]]) -> StoreLayout | None:
    """The layout the records ``(where, record)`` of a store's zones agree on: the first
    one (None when there is none); a record with another n_bits or big-file prefix raises
    ``LayoutMismatch`` naming both places."""
    if not found:
        return None
    first_where, first = found[0]
    for where, other in found[1:]:
        if other.n_bits != first.n_bits or other.bigfiles_prefix != first.bigfiles_prefix:
            raise LayoutMismatch(
                f"{where} (n_bits {other.n_bits}, big-file prefix {other.bigfiles_prefix!r}) "
                f"disagrees with {first_where} (n_bits {first.n_bits}, big-file prefix "
                f"{first.bigfiles_prefix!r}): the zones were written with different settings"
            )
    return first


def ensure_local_layout(base_dir: str | os.PathLike[str], layout: StoreLayout) -> StoreLayout:
    """Create ``base_dir/_des_layout.json`` holding ``layout`` unless it exists (create-only:
    a complete file appears atomically or not at all); return the record now in place."""
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    final = base / LAYOUT_KEY
    if not final.exists():
        # A name of its own per writer (threads of one process too), so that no writer
        # links or removes another's half-written file.
        fd, name = tempfile.mkstemp(prefix=f".{LAYOUT_KEY}.", suffix=".tmp", dir=base)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(layout.to_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, final)  # fails if another writer created it first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return StoreLayout.from_bytes(final.read_bytes(), str(final))
