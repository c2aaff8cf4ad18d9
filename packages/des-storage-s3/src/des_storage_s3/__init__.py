"""DES on S3: range-read object store, multipart shard upload, multi-zone store, S3 source
reader.
"""

from ._astore import (
    AsyncMultiZoneObjectStore,
    AsyncS3ObjectStore,
    make_obstore,
    open_async_store,
)
from ._client import ClientSettings, make_client
from ._edit import S3ShardEditor, open_editor
from ._errors import (
    S3AccessDenied,
    S3ObjectNotFound,
    S3PreconditionFailed,
    S3ProtocolError,
    S3RangeNotSatisfiable,
    S3RequestError,
    S3StoreError,
    S3Unavailable,
    ShardExists,
    translate_error,
)
from ._http import ContentRange, parse_content_range, serialize_range, serialize_suffix_range
from ._metrics import S3Metrics, metrics_for, range_call_observer
from ._open import S3Retriever, open_retriever, open_shard_store, open_store
from ._plan import (
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    PartSpec,
    UploadPlan,
    plan_append,
    plan_ranges,
    plan_upload,
)
from ._retry import (
    NO_RETRY,
    RetryPolicy,
    call_with_retry,
    is_retryable,
    plan_retry,
    plan_retry_delay,
)
from ._source_reader import S3SourceReader, S3Uri, parse_s3_uri
from ._store import S3ObjectStore, join_key
from ._upload import DEFAULT_PART_SIZE, S3ShardStore, ShardChanged, UploadResult, multipart_etag
from ._zones import (
    MultiZoneObjectStore,
    MultiZoneShardStore,
    zone_client_settings,
    zone_index_of_key,
    zone_of_key,
)

#: The installed distribution's version (read from its metadata on first use, so that
#: importing the package does not load ``importlib.metadata``).
__version__: str


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value = version("des-storage-s3")
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "NO_RETRY",
    "AsyncMultiZoneObjectStore",
    "AsyncS3ObjectStore",
    "ClientSettings",
    "ContentRange",
    "MultiZoneObjectStore",
    "MultiZoneShardStore",
    "PartSpec",
    "RetryPolicy",
    "S3AccessDenied",
    "S3Metrics",
    "S3ObjectNotFound",
    "S3ObjectStore",
    "S3PreconditionFailed",
    "S3ProtocolError",
    "S3RangeNotSatisfiable",
    "S3RequestError",
    "S3Retriever",
    "S3ShardEditor",
    "S3ShardStore",
    "S3SourceReader",
    "S3StoreError",
    "S3Unavailable",
    "S3Uri",
    "ShardChanged",
    "ShardExists",
    "UploadPlan",
    "UploadResult",
    "__version__",
    "call_with_retry",
    "is_retryable",
    "join_key",
    "make_client",
    "make_obstore",
    "metrics_for",
    "multipart_etag",
    "open_async_store",
    "open_editor",
    "open_retriever",
    "open_shard_store",
    "open_store",
    "parse_content_range",
    "parse_s3_uri",
    "plan_append",
    "plan_ranges",
    "plan_retry",
    "plan_retry_delay",
    "plan_upload",
    "range_call_observer",
    "serialize_range",
    "serialize_suffix_range",
    "translate_error",
    "zone_client_settings",
    "zone_index_of_key",
    "zone_of_key",
]
