"""The DES shard format: streaming writer, I/O-free reader core, codecs, checksums. Standard
library only (zstd and lz4 through the ``des-format[zstd]`` / ``des-format[lz4]`` extras).
"""

from ._aretriever import AsyncObjectStore, AsyncOpenedFile, AsyncShardRetriever, run_steps_async
from ._bigfiles import BigFileSink, LocalBigFileSink
from ._cache import CacheStats, IndexCache
from ._checksum import crc32, crc32_backend
from ._codecs import (
    DEFAULT_BLOCK_MEMBER_MAX,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_DICT_MAX_FILE_SIZE,
    MAX_BLOCK_SIZE,
    MAX_DICTIONARY_SIZE,
    MIN_DICT_SAMPLES,
    Codec,
    StreamDecoder,
    codec_available,
    is_precompressed,
    parse_codec,
    train_dictionary,
)
from ._delete import DeleteResult, delete_entries
from ._editor import (
    DEFAULT_BIGFILE_GRACE_SECONDS,
    EditorCapabilities,
    ShardEditor,
    entry_payload_key,
    is_head_key,
    read_shard_index,
)
from ._erase import fill_byte, payload_overwritten
from ._errors import (
    ChecksumMismatch,
    CodecNotInstalled,
    CorruptShard,
    DesFormatError,
    DuplicateUid,
    EntryDeleted,
    EntryNotFound,
    ObjectNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    StorageUnavailable,
    StoreError,
    UnknownCodec,
    UnsupportedFormatVersion,
)
from ._index import ShardIndex
from ._index_writer import WriteSummary
from ._layout import (
    DEFAULT_BIG_FILE_THRESHOLD,
    DEFAULT_BIGFILES_PREFIX,
    DEFAULT_TAIL_SIZE,
    FEATURE_BLOCKS,
    FEATURE_DICTIONARY,
    FORMAT_VERSION,
    Footer,
    Header,
    IndexEntry,
    bigfile_key,
    entry_to_json,
    parse_footer,
    parse_header,
    part_key,
)
from ._local_editor import LocalShardEditor, local_shard_lock
from ._pipeline import (
    Head,
    Located,
    PayloadVerifier,
    ReadRange,
    ReadTail,
    RetrievalPipeline,
    run_steps,
)
from ._prepare import (
    FileDigest,
    PreparedBlock,
    PreparedPayload,
    build_meta,
    hash_file,
    prepare_block,
    prepare_payload,
)
from ._read_index import read_index, read_index_steps
from ._reader import ShardReader, decode_payload
from ._retriever import CoalescedRange, OpenedFile, ShardRetriever, plan_coalesced_ranges
from ._source import (
    ByteRange,
    ByteSource,
    BytesSource,
    ListEntry,
    LocalFileSource,
    LocalObjectStore,
    ObjectInfo,
    ObjectStore,
    ObjectStoreBase,
    StoreSource,
    TailRead,
)
from ._store_layout import (
    LAYOUT_KEY,
    LayoutMismatch,
    StoreLayout,
    agreed_layout,
    ensure_local_layout,
    read_store_layout,
    zones_digest,
)
from ._verify import DEFAULT_VERIFY_WINDOW, FileCheck, verify_files
from ._writer import ShardWriter

#: The installed distribution's version (read from its metadata on first use, so that
#: importing the package does not load ``importlib.metadata``).
__version__: str


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value = version("des-format")
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BIGFILES_PREFIX",
    "DEFAULT_BIGFILE_GRACE_SECONDS",
    "DEFAULT_BIG_FILE_THRESHOLD",
    "DEFAULT_BLOCK_MEMBER_MAX",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_DICT_MAX_FILE_SIZE",
    "DEFAULT_TAIL_SIZE",
    "DEFAULT_VERIFY_WINDOW",
    "FEATURE_BLOCKS",
    "FEATURE_DICTIONARY",
    "FORMAT_VERSION",
    "LAYOUT_KEY",
    "MAX_BLOCK_SIZE",
    "MAX_DICTIONARY_SIZE",
    "MIN_DICT_SAMPLES",
    "AsyncObjectStore",
    "AsyncOpenedFile",
    "AsyncShardRetriever",
    "BigFileSink",
    "ByteRange",
    "ByteSource",
    "BytesSource",
    "CacheStats",
    "ChecksumMismatch",
    "CoalescedRange",
    "Codec",
    "CodecNotInstalled",
    "CorruptShard",
    "DeleteResult",
    "DesFormatError",
    "DuplicateUid",
    "EditorCapabilities",
    "EntryDeleted",
    "EntryNotFound",
    "FileCheck",
    "FileDigest",
    "Footer",
    "Head",
    "Header",
    "IndexCache",
    "IndexEntry",
    "LayoutMismatch",
    "ListEntry",
    "LocalBigFileSink",
    "LocalFileSource",
    "LocalObjectStore",
    "LocalShardEditor",
    "Located",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreBase",
    "OpenedFile",
    "PayloadVerifier",
    "PreconditionFailed",
    "PreparedBlock",
    "PreparedPayload",
    "RangeNotSatisfiable",
    "ReadRange",
    "ReadTail",
    "RetrievalPipeline",
    "ShardEditor",
    "ShardIndex",
    "ShardReader",
    "ShardRetriever",
    "ShardWriter",
    "StorageUnavailable",
    "StoreError",
    "StoreLayout",
    "StoreSource",
    "StreamDecoder",
    "TailRead",
    "UnknownCodec",
    "UnsupportedFormatVersion",
    "WriteSummary",
    "__version__",
    "agreed_layout",
    "bigfile_key",
    "build_meta",
    "codec_available",
    "crc32",
    "crc32_backend",
    "decode_payload",
    "delete_entries",
    "ensure_local_layout",
    "entry_payload_key",
    "entry_to_json",
    "fill_byte",
    "hash_file",
    "is_head_key",
    "is_precompressed",
    "local_shard_lock",
    "parse_codec",
    "parse_footer",
    "parse_header",
    "part_key",
    "payload_overwritten",
    "plan_coalesced_ranges",
    "prepare_block",
    "prepare_payload",
    "read_index",
    "read_index_steps",
    "read_shard_index",
    "read_store_layout",
    "run_steps",
    "run_steps_async",
    "train_dictionary",
    "verify_files",
    "zones_digest",
]
