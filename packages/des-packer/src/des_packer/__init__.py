"""DES packer: plan and pack files into shards; the ``des-pack`` and ``des`` commands.

Library use (des-migrate builds on it)::

    from des_packer import ManifestEntry, PackOptions, pack

    report = pack(entries, "/data/des", PackOptions(n_bits=8, codec="zstd"))
"""

from typing import TYPE_CHECKING

from ._errors import (
    EntryFailed,
    ManifestError,
    OutputFailed,
    PackAborted,
    PackConfigError,
    PackerError,
)

if TYPE_CHECKING:
    from ._deletions import DeletionRecord, iter_deletions
    from ._manifest import (
        ManifestEntry,
        ManifestRecord,
        iter_manifest_records,
        parse_manifest_entry,
        read_manifest,
    )
    from ._options import CODECS, DEFAULT_BIG_FILE_THRESHOLD, PackOptions, ProgressEvent
    from ._pack import open_destination, pack, pack_plan
    from ._plan import PackPlan, PlannedShard, parse_shard_range, plan_shards
    from ._repack import (
        RepackOptions,
        RepackReport,
        ShardDeletionStats,
        ShardRepack,
        plan_repack,
        repack,
        repack_shard,
    )
    from ._report import PackReport, ShardResult

# Every module but the errors is imported on first use: `des-pack --help` and a usage error
# need none of them, des-pack never needs deletion and repack, and each module imported costs
# its start-up (compiling it too, where no bytecode cache is written).
_LAZY = {
    "ManifestEntry": "_manifest",
    "ManifestRecord": "_manifest",
    "iter_manifest_records": "_manifest",
    "parse_manifest_entry": "_manifest",
    "read_manifest": "_manifest",
    "CODECS": "_options",
    "DEFAULT_BIG_FILE_THRESHOLD": "_options",
    "PackOptions": "_options",
    "ProgressEvent": "_options",
    "open_destination": "_pack",
    "pack": "_pack",
    "pack_plan": "_pack",
    "PackPlan": "_plan",
    "PlannedShard": "_plan",
    "parse_shard_range": "_plan",
    "plan_shards": "_plan",
    "PackReport": "_report",
    "ShardResult": "_report",
    "DeletionRecord": "_deletions",
    "iter_deletions": "_deletions",
    "RepackOptions": "_repack",
    "RepackReport": "_repack",
    "ShardDeletionStats": "_repack",
    "ShardRepack": "_repack",
    "plan_repack": "_repack",
    "repack": "_repack",
    "repack_shard": "_repack",
}


#: The installed distribution's version (read from its metadata on first use, so that
#: importing the package does not load ``importlib.metadata``).
__version__: str


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value: object = version("des-packer")
    else:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CODECS",
    "DEFAULT_BIG_FILE_THRESHOLD",
    "DeletionRecord",
    "EntryFailed",
    "ManifestEntry",
    "ManifestError",
    "ManifestRecord",
    "OutputFailed",
    "PackAborted",
    "PackConfigError",
    "PackOptions",
    "PackPlan",
    "PackReport",
    "PackerError",
    "PlannedShard",
    "ProgressEvent",
    "RepackOptions",
    "RepackReport",
    "ShardDeletionStats",
    "ShardRepack",
    "ShardResult",
    "__version__",
    "iter_deletions",
    "iter_manifest_records",
    "open_destination",
    "pack",
    "pack_plan",
    "parse_manifest_entry",
    "parse_shard_range",
    "plan_repack",
    "plan_shards",
    "read_manifest",
    "repack",
    "repack_shard",
]
