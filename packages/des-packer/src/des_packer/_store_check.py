"""The writer's side of the store's layout record (``des_format.StoreLayout``): before a pack
writes anything, the destination's record is read (and created, create-only, by the first
writer); a record that disagrees with the pack's n_bits, big-file prefix or zone map stops
the pack with a message naming both values. Runs once per destination, at its setup; nothing
in the packing loop."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

from ._errors import PackConfigError
from ._options import PackOptions

if TYPE_CHECKING:
    from des_format import ObjectStore

__all__ = ["check_destination_layout", "expected_layout"]


def expected_layout(options: PackOptions, zones: Any = None) -> Any:
    from des_format import StoreLayout, zones_digest

    digest = None
    if zones is not None:
        digest = zones_digest((z.name, z.start, z.end) for z in zones.zones)
    return StoreLayout(
        n_bits=options.n_bits,
        bigfiles_prefix=options.bigfiles_prefix.strip("/"),
        zones_digest=digest,
    )


def _mismatch(exc: Exception) -> PackConfigError:
    return PackConfigError(f"{exc}; nothing was written")


def check_destination_layout(output: str, options: PackOptions) -> None:
    """Create or check the layout record of ``output`` (see the module doc)."""
    from des_format import DesFormatError, ensure_local_layout

    if not (options.zones_config or output.startswith("s3://")):
        if not output or "://" in output:
            return  # open_destination names the problem
        expected = expected_layout(options)
        try:
            recorded = ensure_local_layout(output, expected)
            recorded.check(
                os.path.join(output, ""),
                n_bits=expected.n_bits,
                bigfiles_prefix=expected.bigfiles_prefix,
                zones_digest=None,
                writing=True,
            )
        except DesFormatError as exc:
            raise _mismatch(exc) from None
        # An OSError (read-only, full, a file in the way) reaches pack_plan, which reports it
        # as every write error of the output is reported: the path, the fix, exit 1.
        return
    _check_s3(output, options)


def _check_s3(output: str, options: PackOptions) -> None:
    try:
        from des_storage_s3 import ShardExists, open_shard_store, open_store
    except ImportError:
        return  # open_destination names the missing extra
    from des_format import LAYOUT_KEY, DesFormatError, ObjectNotFound, StoreLayout

    from ._s3dest import s3_settings_for

    settings, _ = s3_settings_for(output, options)
    expected = expected_layout(options, settings.zones)
    readers = open_store(settings).parts()  # each zone has its own record
    writers = open_shard_store(settings).parts()
    pairs = [(readers[name], writers[name]) for name in readers]
    data = expected.to_bytes()
    for reader, writer in pairs:
        where = reader.describe(LAYOUT_KEY)
        try:
            tail = reader.read_tail(LAYOUT_KEY, 1 << 16)
        except ObjectNotFound:
            with tempfile.NamedTemporaryFile(prefix="des-layout-") as tmp:
                tmp.write(data)
                tmp.flush()
                try:
                    writer.put_shard(tmp.name, LAYOUT_KEY)  # create-only
                    continue
                except ShardExists:  # another writer was first: check theirs
                    pass
            tail = reader.read_tail(LAYOUT_KEY, 1 << 16)
        try:
            StoreLayout.from_bytes(tail.data, where).check(
                where,
                n_bits=expected.n_bits,
                bigfiles_prefix=expected.bigfiles_prefix,
                zones_digest=expected.zones_digest,
                writing=True,
            )
        except DesFormatError as exc:
            raise _mismatch(exc) from None


def settings_from_store(settings: Any, store: ObjectStore, given: set[str]) -> Any:
    """A reader's settings after the store's layout record (one read; see the module doc):
    n_bits and the big-file prefix come from it unless ``given`` names their variables,
    and a given value that differs raises ``des_format.LayoutMismatch`` naming both. A
    store without a record leaves ``settings`` as they are."""
    import dataclasses

    from des_format import read_store_layout

    layout = read_store_layout(store)
    if layout is None:
        return settings
    layout.check(
        store.describe(),
        n_bits=settings.n_bits if "DES_N_BITS" in given else None,
        bigfiles_prefix=settings.bigfiles_prefix if "DES_BIGFILES_PREFIX" in given else None,
    )
    return dataclasses.replace(
        settings, n_bits=layout.n_bits, bigfiles_prefix=layout.bigfiles_prefix
    )
