"""Preparing files for a shard, before any byte is written: uid and metadata checks, the
checksum, the codec decision and compression of one file (:func:`prepare_payload`) or of a
solid block of small files (:func:`prepare_block`), and hashing of big files. Pure CPU and
thread-safe, so packers run it in a pool while one writer streams the results."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._checksum import crc32
from ._codecs import (
    DEFAULT_DICT_MAX_FILE_SIZE,
    MAX_BLOCK_SIZE,
    Codec,
    _module,
    compress,
    is_precompressed,
    parse_codec,
)
from ._index import canonical_meta

_COPY_CHUNK = 1 << 20
_MAX_UID_BYTES = 4096


@dataclass(frozen=True, slots=True)
class PreparedPayload:
    """A file made ready for a shard: checksummed, compressed or kept raw (or a big file)."""

    uid: str
    size: int
    stored: bytes
    codec: Codec
    checksum: int
    meta: dict[str, Any] = field(default_factory=dict, hash=False)
    sha256: str | None = None  # set when the payload is a big file
    dictionary_crc: int | None = None  # CRC-32 of the dictionary used (codec ZSTD_DICT)
    block_offset: int = 0  # codec ZSTD_BLOCK: where the file starts in its block
    #: The canonical JSON of ``meta`` (:func:`canonical_meta`) when :func:`prepare_payload`
    #: made it, so the writer does not build it again; None otherwise. Not an argument:
    #: ``dataclasses.replace`` gives a copy without it, which the writer then builds.
    meta_json: bytes | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def is_bigfile(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True, slots=True)
class PreparedBlock:
    """Files compressed together as one solid block (FORMAT.md section 3.2), made by
    :func:`prepare_block`: ``stored`` is one zstd frame of the members' original bytes one
    after another; each member has codec ``ZSTD_BLOCK``, no stored bytes of its own, and
    its ``block_offset``."""

    stored: bytes
    members: tuple[PreparedPayload, ...]

    @property
    def size(self) -> int:
        """Original bytes of all members (the block's decompressed size)."""
        return sum(m.size for m in self.members)


@dataclass(frozen=True, slots=True)
class FileDigest:
    """What hashing a file in one streaming pass learns."""

    sha256: str
    checksum: int
    size: int


def build_meta(
    meta: dict[str, Any] | None, name: str | None = None, content_type: str | None = None
) -> dict[str, Any]:
    """The metadata object stored for a file (``name``/``content_type`` override ``meta``)."""
    return meta_with_json(meta, name, content_type)[0]


_json_str: Callable[[str], str] = json.encoder.encode_basestring


def meta_with_json(
    meta: dict[str, Any] | None, name: str | None = None, content_type: str | None = None
) -> tuple[dict[str, Any], bytes | None]:
    """:func:`build_meta` and the canonical JSON of its result (None when it is empty).

    The common case of a packer, a name and a content type (strings) and nothing else, is
    written directly: ``{"content_type":...,"name":...}`` is what :func:`canonical_meta`
    makes of it (keys sorted, the same string escapes)."""
    if not meta:
        if type(name) is str and type(content_type) is str:
            blob = _name_type_json(name, content_type)
            if blob is not None:
                return {"name": name, "content_type": content_type}, blob
    elif name is None and content_type is None and len(meta) == 2:
        n, c = meta.get("name"), meta.get("content_type")
        if type(n) is str and type(c) is str:
            blob = _name_type_json(n, c)
            if blob is not None:
                return dict(meta), blob
    out = dict(meta) if meta else {}
    if name is not None:
        out["name"] = name
    if content_type is not None:
        out["content_type"] = content_type
    if not out:
        return out, None
    try:
        return out, canonical_meta(out)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be a JSON object of plain values: {exc}") from None


def _name_type_json(name: str, content_type: str) -> bytes | None:
    """``canonical_meta({"name": name, "content_type": content_type})``, or None when a
    string cannot be encoded (a lone surrogate; the general path says what is wrong)."""
    try:
        return f'{{"content_type":{_json_str(content_type)},"name":{_json_str(name)}}}'.encode()
    except UnicodeEncodeError:
        return None


def check_uid(uid: str) -> bytes:
    """The UTF-8 bytes of a valid uid; ``ValueError`` naming the problem otherwise."""
    if not isinstance(uid, str) or not uid:
        raise ValueError(f"uid must be a non-empty string, got {uid!r}")
    try:
        raw = uid.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"uid {uid!r} is not encodable as UTF-8") from None
    if len(raw) > _MAX_UID_BYTES:
        raise ValueError(f"uid is {len(raw)} bytes long; the limit is {_MAX_UID_BYTES}")
    return raw


def prepare_payload(
    uid: str,
    data: bytes,
    *,
    name: str | None = None,
    content_type: str | None = None,
    meta: dict[str, Any] | None = None,
    codec: str | Codec = "zstd",
    level: int | None = None,
    big_file_threshold: int | None = None,
    dictionary: bytes | None = None,
    dict_max_file_size: int = DEFAULT_DICT_MAX_FILE_SIZE,
    _checked: bool = False,
) -> PreparedPayload:
    """Checksum ``data`` and decide how to store it. Pure CPU and thread-safe.

    Stored raw when the codec is ``none``, when the file's own name or content type marks it
    as already compressed, or when compression does not make it smaller. Above
    ``big_file_threshold`` the payload is marked as a big file (sha256 computed, kept raw).
    With the codec zstd and a shard ``dictionary``, files of at most ``dict_max_file_size``
    bytes are compressed with the dictionary (``Codec.ZSTD_DICT``); add them only to a
    writer holding the same dictionary.
    """
    if not _checked:
        check_uid(uid)
    chosen = codec if type(codec) is Codec else parse_codec(codec)
    if chosen is Codec.ZSTD_BLOCK:  # refused whatever the data (even empty or big)
        raise ValueError("solid blocks are made by prepare_block")
    if type(data) is not bytes:
        data = bytes(data)
    full_meta, meta_json = meta_with_json(meta, name, content_type)
    crc = crc32(data)
    size = len(data)
    if big_file_threshold is not None and size > big_file_threshold:
        sha = hashlib.sha256(data).hexdigest()
        out = PreparedPayload(uid, size, data, Codec.NONE, crc, full_meta, sha)
        object.__setattr__(out, "meta_json", meta_json)
        return out
    stored = data
    if chosen is not Codec.NONE and data:
        fname = name if name is not None else full_meta.get("name")
        ctype = content_type if content_type is not None else full_meta.get("content_type")
        if is_precompressed(
            fname if isinstance(fname, str) else None, ctype if isinstance(ctype, str) else None
        ):
            chosen = Codec.NONE
        else:
            use_dict = (
                dictionary is not None and chosen is Codec.ZSTD and size <= dict_max_file_size
            )
            if use_dict:
                chosen = Codec.ZSTD_DICT
            elif chosen is Codec.ZSTD_DICT:
                raise ValueError("codec zstd_dict is chosen by giving a dictionary")
            packed = compress(chosen, data, level, dictionary=dictionary if use_dict else None)
            if len(packed) < size:
                stored = packed
            else:
                chosen = Codec.NONE
    else:
        chosen = Codec.NONE
    dict_crc = crc32(dictionary) if chosen is Codec.ZSTD_DICT and dictionary else None
    out = PreparedPayload(uid, size, stored, chosen, crc, full_meta, None, dict_crc)
    object.__setattr__(out, "meta_json", meta_json)
    return out


def prepare_block(
    files: Sequence[tuple[str, bytes, dict[str, Any]]],
    *,
    level: int | None = None,
) -> list[PreparedPayload | PreparedBlock]:
    """Compress ``files`` (``(uid, data, metadata)``, the metadata as :func:`build_meta`
    makes it) together as one solid block. Pure CPU and thread-safe.

    Files that are empty or already compressed (by their metadata's ``name`` or
    ``content_type``) are prepared alone, as :func:`prepare_payload` would; so is everything
    when fewer than two files are left or when the block's frame would not be smaller than
    its members' bytes. The result holds the block (if any) first, then the files prepared
    alone, in the order given. The members' total size must not exceed ``MAX_BLOCK_SIZE``.
    """
    members: list[tuple[str, bytes, dict[str, Any]]] = []
    alone: list[tuple[str, bytes, dict[str, Any]]] = []
    for uid, data, meta in files:
        check_uid(uid)
        name, ctype = meta.get("name"), meta.get("content_type")
        if data and not is_precompressed(
            name if isinstance(name, str) else None, ctype if isinstance(ctype, str) else None
        ):
            members.append((uid, bytes(data), meta))
        else:
            alone.append((uid, bytes(data), meta))
    out: list[PreparedPayload | PreparedBlock] = []
    total = sum(len(d) for _, d, _ in members)
    if total > MAX_BLOCK_SIZE:
        raise ValueError(f"a solid block holds at most {MAX_BLOCK_SIZE} bytes, got {total}")
    frame = b""
    if len(members) > 1:
        frame = compress(Codec.ZSTD, b"".join(d for _, d, _ in members), level)
    if len(members) > 1 and len(frame) < total:
        prepared: list[PreparedPayload] = []
        pos = 0
        for uid, data, meta in members:
            full_meta, meta_json = meta_with_json(meta)
            member = PreparedPayload(
                uid, len(data), b"", Codec.ZSTD_BLOCK, crc32(data), full_meta, block_offset=pos
            )
            object.__setattr__(member, "meta_json", meta_json)
            prepared.append(member)
            pos += len(data)
        out.append(PreparedBlock(frame, tuple(prepared)))
    else:
        alone = [(uid, bytes(data), meta) for uid, data, meta in files]
    for uid, data, meta in alone:
        out.append(
            prepare_payload(uid, data, meta=meta, codec=Codec.ZSTD, level=level, _checked=True)
        )
    return out


def block_frame_size(stored: bytes) -> int:
    """The content size a solid block's zstd frame declares (-1: none, or not a frame)."""
    zstd = _module(Codec.ZSTD)
    try:
        return int(zstd.frame_content_size(stored))
    except zstd.ZstdError:
        return -1


def hash_file(path: str | os.PathLike[str]) -> FileDigest:
    """sha256, CRC-32 and size of a file, read in 1 MiB chunks (never held whole)."""
    sha = hashlib.sha256()
    crc = 0
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_COPY_CHUNK):
            sha.update(chunk)
            crc = crc32(chunk, crc)
            size += len(chunk)
    return FileDigest(sha.hexdigest(), crc, size)
