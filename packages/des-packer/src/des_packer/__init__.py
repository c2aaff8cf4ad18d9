"""DES packer: plan and pack files into shards; the ``des-pack`` and ``des`` commands.

Library use (des-migrate builds on it)::

    from des_packer import ManifestEntry, PackOptions, pack

    report = pack(entries, "/data/des", PackOptions(n_bits=8, codec="zstd"))
"""

from ._deletions import DeletionRecord, iter_deletions
from ._errors import EntryFailed, ManifestError, PackAborted, PackConfigError, PackerError
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

__version__ = "0.1.1"

__all__ = [
    "CODECS",
    "DEFAULT_BIG_FILE_THRESHOLD",
    "DeletionRecord",
    "EntryFailed",
    "ManifestEntry",
    "ManifestError",
    "ManifestRecord",
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
