"""Packing options (a frozen value) and their validation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._errors import PackConfigError

__all__ = [
    "CODECS",
    "DEFAULT_BIG_FILE_THRESHOLD",
    "DEFAULT_BLOCK_MEMBER_MAX",
    "DEFAULT_MAX_INFLIGHT_BYTES",
    "PackOptions",
    "ProgressEvent",
]

CODECS = ("none", "zstd", "lz4")
#: Same value as ``des_format.DEFAULT_BIG_FILE_THRESHOLD`` (a test keeps them equal).
DEFAULT_BIG_FILE_THRESHOLD = 10 * 1024 * 1024
DEFAULT_MAX_INFLIGHT_BYTES = 64 * 1024 * 1024
#: Same value as ``des_format.DEFAULT_DICT_MAX_FILE_SIZE``.
DEFAULT_DICT_MAX_FILE_SIZE = 4 * 1024
#: Bytes of small files read per shard to train its dictionary (about 100x a 16 KiB
#: dictionary, zstd's own rule of thumb), taken in uid order.
DICT_SAMPLE_BYTES = 2 * 1024 * 1024
#: Same values as ``des_format.DEFAULT_BLOCK_MEMBER_MAX`` and ``des_format.MAX_BLOCK_SIZE``.
DEFAULT_BLOCK_MEMBER_MAX = 64 * 1024
MAX_BLOCK_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """Reported after each file and each shard: running totals of the whole run."""

    files_done: int
    bytes_done: int
    files_total: int
    bytes_total: int
    shard_key: str | None = None
    shard_status: str | None = None


@dataclass(frozen=True, slots=True)
class PackOptions:
    """How to pack.

    ``max_shard_size``: a shard object larger than this rolls its payloads over into
    continuation parts. ``workers``: threads reading, checksumming and compressing (default:
    the CPU count). ``on_error``: ``"fail"`` stops at the first bad file,
    ``"skip"`` leaves it out and lists it in ``PackReport.failures``. ``shard_range``:
    inclusive shard indexes to pack (others are left to other packers). ``zones_config``: a
    zones file; each shard goes to its zone's bucket. ``max_inflight_bytes`` bounds the bytes
    read but not yet written. ``dictionary``: train a zstd dictionary per shard from its files
    of at most ``dict_max_file_size`` bytes (when it has at least 64 of them) and compress
    those files with it (codec zstd only); a shard that already has a dictionary keeps it.
    ``block_size``: when above 0, compress small files of one content type and extension
    together in solid blocks of up to this many bytes (files of at most ``block_member_max``
    bytes; codec zstd only, not with ``dictionary``; see ``_blocks.py`` for the rule). 0: one
    frame per file. ``processes``: packing processes, each writing whole shards (Linux, local
    destinations; ``None``: one per CPU; 1, the library's default, packs in this process
    only). ``workers`` are then shared among them. The output is the same either way.
    """

    n_bits: int = 8
    codec: str = "zstd"
    level: int | None = 3
    max_shard_size: int = 1 << 30
    workers: int | None = None
    big_file_threshold: int = DEFAULT_BIG_FILE_THRESHOLD
    bigfiles_prefix: str = "_bigFiles"
    on_error: str = "fail"
    shard_range: tuple[int, int] | None = None
    zones_config: str | None = None
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    fsync: bool = True
    progress: Callable[[ProgressEvent], None] | None = None
    dictionary: bool = False
    dict_max_file_size: int = DEFAULT_DICT_MAX_FILE_SIZE
    block_size: int = 0
    block_member_max: int = DEFAULT_BLOCK_MEMBER_MAX
    processes: int | None = 1

    def validate(self) -> None:
        """Raise ``PackConfigError`` naming the option at fault."""
        from des_routing import RoutingError, locate_shard

        if self.codec not in CODECS:
            raise PackConfigError(f"unknown codec {self.codec!r}; use one of: {', '.join(CODECS)}")
        try:
            locate_shard("probe", "2024-01-01T00:00:00Z", self.n_bits)
        except RoutingError as exc:
            raise PackConfigError(f"invalid --n-bits {self.n_bits}: {exc}") from None
        if self.max_shard_size < 1:
            raise PackConfigError(
                f"--max-shard-size must be a positive number of bytes, got {self.max_shard_size}"
            )
        if self.big_file_threshold < 1:
            raise PackConfigError(
                "--big-file-threshold must be a positive number of bytes, "
                f"got {self.big_file_threshold}"
            )
        if self.workers is not None and self.workers < 1:
            raise PackConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.processes is not None and self.processes < 1:
            raise PackConfigError(f"--processes must be at least 1, got {self.processes}")
        if self.on_error not in ("fail", "skip"):
            raise PackConfigError(f"--on-error must be fail or skip, got {self.on_error!r}")
        if self.dictionary and self.codec != "zstd":
            raise PackConfigError(f"--dict needs --codec zstd, got --codec {self.codec}")
        if not 1 <= self.dict_max_file_size <= 1 << 20:
            raise PackConfigError(
                f"--dict-max-file-size must be 1..1048576 bytes, got {self.dict_max_file_size}"
            )
        self._validate_blocks()
        if self.max_inflight_bytes < 1:
            raise PackConfigError("max_inflight_bytes must be positive")
        if self.shard_range is not None:
            lo, hi = self.shard_range
            top = (1 << self.n_bits) - 1
            if not 0 <= lo <= hi <= top:
                raise PackConfigError(
                    f"--shard-range {lo}-{hi} must satisfy 0 <= A <= B <= {top} "
                    f"for --n-bits {self.n_bits}"
                )

    def _validate_blocks(self) -> None:
        size, member = self.block_size, self.block_member_max
        if size < 0:
            raise PackConfigError(
                f"--block-size must be 0 (off) or a positive number of bytes, got {size}"
            )
        if size > MAX_BLOCK_SIZE:
            raise PackConfigError(
                f"--block-size must be at most {MAX_BLOCK_SIZE} bytes (4 MiB), got {size}"
            )
        if member < 1:
            raise PackConfigError(
                f"--block-member-max must be a positive number of bytes, got {member}"
            )
        if size == 0:
            return
        if self.codec != "zstd":
            raise PackConfigError(f"--block-size needs --codec zstd, got --codec {self.codec}")
        if self.dictionary:
            raise PackConfigError("--block-size cannot be combined with --dict; choose one of them")
        if member > size:
            raise PackConfigError(
                f"--block-member-max ({member}) must not be larger than --block-size ({size})"
            )
