"""Codec registry: ids, lazy library imports, per-thread codec objects, the store-raw rule.

zstd (``zstandard``) and lz4 (``lz4.frame``) are optional extras. Their libraries are imported
on first use; a missing one raises :class:`CodecNotInstalled` naming the extra to install.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from enum import IntEnum
from types import ModuleType
from typing import Any

from ._errors import CodecNotInstalled, CorruptShard, UnknownCodec


class Codec(IntEnum):
    """How a payload is stored. The value is the id written in the index."""

    NONE = 0
    ZSTD = 1
    LZ4 = 2
    #: zstd with the shard's own dictionary (only in shards with the dictionary feature bit).
    ZSTD_DICT = 3
    #: a member of a solid block: one zstd frame holding several files one after another
    #: (only in shards with the solid-block feature bit; FORMAT.md section 3.2).
    ZSTD_BLOCK = 4

    @property
    def label(self) -> str:
        """The codec's name as users write it: ``"none"``, ``"zstd"`` or ``"lz4"``."""
        return self.name.lower()


# The codecs users can ask for by name (ZSTD_DICT is chosen by giving a dictionary).
CODEC_NAMES: dict[str, Codec] = {c.label: c for c in (Codec.NONE, Codec.ZSTD, Codec.LZ4)}
DEFAULT_LEVELS: dict[Codec, int] = {
    Codec.NONE: 0,
    Codec.ZSTD: 3,
    Codec.LZ4: 0,
    Codec.ZSTD_DICT: 3,
    Codec.ZSTD_BLOCK: 3,
}
_EXTRAS = {
    Codec.ZSTD: ("zstandard", "zstd"),
    Codec.LZ4: ("lz4.frame", "lz4"),
    Codec.ZSTD_DICT: ("zstandard", "zstd"),
    Codec.ZSTD_BLOCK: ("zstandard", "zstd"),
}
#: Largest decompressed solid block a reader accepts and a writer makes (FORMAT.md 3.2): a
#: damaged or forged frame header cannot make a reader allocate more than this.
MAX_BLOCK_SIZE = 4 << 20
#: des-pack's solid blocks: members up to this size, blocks up to ``DEFAULT_BLOCK_SIZE``.
DEFAULT_BLOCK_SIZE = 128 << 10
DEFAULT_BLOCK_MEMBER_MAX = 64 << 10
#: Largest shard dictionary a writer stores: footer (48) + directory (<= 32 KiB) + dictionary
#: block (<= 16 KiB + 4) always fit in the default 64 KiB tail read.
MAX_DICTIONARY_SIZE = 16 * 1024
#: Files up to this size are compressed with the shard dictionary by default.
DEFAULT_DICT_MAX_FILE_SIZE = 4 * 1024
#: Fewest samples a dictionary is trained from (fewer: no dictionary).
MIN_DICT_SAMPLES = 64

# Extensions of formats that are already compressed: compressing them again wastes CPU.
_COMPRESSED_EXTENSION_TEXT = """
    jpg jpeg jpe jfif png gif webp avif heic heif jxl jp2
    gz tgz zip bz2 tbz2 xz txz zst zstd lz4 lzma 7z rar br cab arj lz
    mp3 mp4 m4a m4v aac ogg oga ogv opus flac wma wmv mov avi mkv webm flv 3gp mpg mpeg
    pdf docx xlsx pptx odt ods odp epub jar apk ipa whl woff woff2 dmg
"""
COMPRESSED_EXTENSIONS: frozenset[str] = frozenset(_COMPRESSED_EXTENSION_TEXT.split())
# Content types of compressed formats (prefix match for the families).
COMPRESSED_CONTENT_TYPE_PREFIXES: tuple[str, ...] = ("image/", "video/", "audio/", "font/woff")
UNCOMPRESSED_IMAGE_TYPES: frozenset[str] = frozenset(
    {"image/svg+xml", "image/bmp", "image/x-ms-bmp", "image/tiff", "image/x-portable-pixmap"}
)
COMPRESSED_CONTENT_TYPES: frozenset[str] = frozenset(
    {
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-bzip2",
        "application/x-xz",
        "application/zstd",
        "application/x-7z-compressed",
        "application/x-rar-compressed",
        "application/vnd.rar",
        "application/pdf",
        "application/java-archive",
        "application/epub+zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    }
)


def parse_codec(value: str | int | Codec) -> Codec:
    """A codec from its name (``"zstd"``), id (``1``) or member; ``UnknownCodec`` otherwise."""
    if isinstance(value, Codec):
        return value
    if isinstance(value, str):
        try:
            return CODEC_NAMES[value.strip().lower()]
        except KeyError:
            raise UnknownCodec(
                f"unknown codec {value!r}; choose one of: {', '.join(CODEC_NAMES)}"
            ) from None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Codec(value)
        except ValueError:
            raise UnknownCodec(f"unknown codec id {value}") from None
    raise UnknownCodec(f"unknown codec {value!r}")


def is_precompressed(name: str | None = None, content_type: str | None = None) -> bool:
    """True when the file's own name or content type marks it as already compressed."""
    if name:
        dot = name.rfind(".")
        # the extension of the last path component (after the last "/" or "\\")
        if (
            dot > name.rfind("/")
            and dot > name.rfind("\\")
            and name[dot + 1 :].lower() in COMPRESSED_EXTENSIONS
        ):
            return True
    if content_type:
        known = _CONTENT_TYPES.get(content_type)
        if known is None:
            known = _compressed_content_type(content_type)
            if len(_CONTENT_TYPES) < 1024:  # a handful of distinct values in practice
                _CONTENT_TYPES[content_type] = known
        return known
    return False


_CONTENT_TYPES: dict[str, bool] = {}  # content type -> _compressed_content_type (a cache)


def _compressed_content_type(content_type: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in COMPRESSED_CONTENT_TYPES:
        return True
    return ctype not in UNCOMPRESSED_IMAGE_TYPES and ctype.startswith(
        COMPRESSED_CONTENT_TYPE_PREFIXES
    )


_modules: dict[Codec, ModuleType] = {}
_local = threading.local()


def codec_available(codec: Codec) -> bool:
    """Whether the library behind ``codec`` can be imported (always true for none)."""
    if codec is Codec.NONE:
        return True
    try:
        _module(codec)
    except CodecNotInstalled:
        return False
    return True


def _module(codec: Codec) -> ModuleType:
    if codec is Codec.ZSTD_DICT or codec is Codec.ZSTD_BLOCK:
        codec = Codec.ZSTD
    mod = _modules.get(codec)
    if mod is not None:
        return mod
    import importlib

    modname, extra = _EXTRAS[codec]
    try:
        mod = importlib.import_module(modname)
    except ImportError:
        raise CodecNotInstalled(codec.label, extra) from None
    _modules[codec] = mod
    return mod


def _zstd_compressor(level: int) -> Any:
    cache: dict[int, Any] | None = getattr(_local, "zc", None)
    if cache is None:
        cache = _local.zc = {}
    comp = cache.get(level)
    if comp is None:
        zstd = _module(Codec.ZSTD)
        comp = cache[level] = zstd.ZstdCompressor(
            level=level, write_content_size=True, write_checksum=False
        )
    return comp


def _zstd_decompressor(dictionary: bytes | None = None) -> Any:
    if dictionary is None:
        dec = getattr(_local, "zd", None)
        if dec is None:
            dec = _local.zd = _module(Codec.ZSTD).ZstdDecompressor()
        return dec
    cache: OrderedDict[bytes, Any] | None = getattr(_local, "zdd", None)
    if cache is None:
        cache = _local.zdd = OrderedDict()
    dec = cache.get(dictionary)
    if dec is None:
        zstd = _module(Codec.ZSTD)
        dec = zstd.ZstdDecompressor(dict_data=_zstd_dict(zstd, dictionary))
        cache[dictionary] = dec
        if len(cache) > _DICT_CACHE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(dictionary)
    return dec


_DICT_CACHE = 8  # per thread: compressors/decompressors of the last few shard dictionaries


def _zstd_dict(zstd: Any, dictionary: bytes) -> Any:
    try:
        return zstd.ZstdCompressionDict(dictionary)
    except zstd.ZstdError as exc:  # pragma: no cover - zstandard accepts any bytes as raw content
        raise CorruptShard(f"the shard dictionary cannot be loaded: {exc}") from None


def _zstd_dict_compressor(level: int, dictionary: bytes) -> Any:
    cache: OrderedDict[tuple[int, bytes], Any] | None = getattr(_local, "zcd", None)
    if cache is None:
        cache = _local.zcd = OrderedDict()
    key = (level, dictionary)
    comp = cache.get(key)
    if comp is None:
        zstd = _module(Codec.ZSTD)
        comp = zstd.ZstdCompressor(
            level=level,
            dict_data=_zstd_dict(zstd, dictionary),
            write_content_size=True,
            write_checksum=False,
            write_dict_id=False,
        )
        cache[key] = comp
        if len(cache) > _DICT_CACHE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return comp


def _need_dictionary(dictionary: bytes | None, uid: str) -> bytes:
    if dictionary is None:
        raise CorruptShard(
            f"payload of {uid!r} is compressed with the shard dictionary, but the shard has none"
        )
    return dictionary


_DICT_K = 256  # fastcover segment size
_DICT_D = 8  # fastcover dmer size


def train_dictionary(samples: Sequence[bytes], max_size: int | None = None) -> bytes | None:
    """Train a zstd dictionary from ``samples`` (in the order given), or None when there are
    fewer than ``MIN_DICT_SAMPLES`` non-empty samples or zstd finds nothing to learn.

    ``max_size`` defaults to 1/32 of the sample bytes, within 1..16 KiB (a 16 KiB dictionary
    only pays for itself over about half a MiB of small files). Deterministic: the same
    samples in the same order and the same ``max_size`` give the same bytes (fixed fastcover
    parameters k=256, d=8, one thread, no parameter search)."""
    if max_size is None:
        total = sum(len(s) for s in samples)
        max_size = max(1024, min(MAX_DICTIONARY_SIZE, total // 32))
    if not 256 <= max_size <= MAX_DICTIONARY_SIZE:
        raise ValueError(
            f"dictionary size must be 256..{MAX_DICTIONARY_SIZE} bytes, got {max_size}"
        )
    usable = [bytes(s) for s in samples if s]
    if len(usable) < MIN_DICT_SAMPLES:
        return None
    zstd = _module(Codec.ZSTD)
    try:
        # Fixed fastcover parameters (no parameter search): one thread, the same bytes for
        # the same samples, and ~100x faster than the search for a few % less gain.
        trained = zstd.train_dictionary(max_size, usable, k=_DICT_K, d=_DICT_D)
    except zstd.ZstdError:
        return None
    raw = bytes(trained.as_bytes())
    return raw if 0 < len(raw) <= max_size else None


def compress(
    codec: Codec, data: bytes, level: int | None = None, *, dictionary: bytes | None = None
) -> bytes:
    """Compress ``data`` with ``codec`` (``Codec.NONE`` returns it unchanged).
    ``Codec.ZSTD_DICT`` needs the shard's ``dictionary``."""
    if codec is Codec.NONE:
        return data
    lvl = DEFAULT_LEVELS[codec] if level is None else level
    if codec is Codec.ZSTD_BLOCK:  # a block is one plain zstd frame of its members' bytes
        codec = Codec.ZSTD
    if codec is Codec.ZSTD_DICT:
        if dictionary is None:
            raise ValueError("codec zstd_dict needs a dictionary")
        return bytes(_zstd_dict_compressor(lvl, dictionary).compress(data))
    if codec is Codec.ZSTD:
        return bytes(_zstd_compressor(lvl).compress(data))
    lz4f = _module(Codec.LZ4)
    return bytes(
        lz4f.compress(data, compression_level=lvl, store_size=True, content_checksum=False)
    )


def decompress(
    codec: Codec, data: bytes, size: int, *, uid: str = "", dictionary: bytes | None = None
) -> bytes:
    """Decompress a stored payload that must expand to exactly ``size`` bytes
    (``dictionary``: the shard's, for ``Codec.ZSTD_DICT``). A block member is decoded
    with :func:`decompress_block` instead."""
    if codec is Codec.ZSTD_BLOCK:
        raise ValueError("a solid block member is decoded with decompress_block")
    if codec is Codec.NONE:
        out = data
    elif codec is Codec.ZSTD or codec is Codec.ZSTD_DICT:
        zdict = _need_dictionary(dictionary, uid) if codec is Codec.ZSTD_DICT else None
        zstd = _module(Codec.ZSTD)
        try:
            # A frame header that declares another size is refused before anything is
            # allocated: a forged frame must not make the reader expand past ``size``.
            declared = zstd.frame_content_size(data)
            _check_declared(declared, size, uid)
            if declared >= 0 and size <= _ONE_SHOT_LIMIT:
                out = _zstd_decompressor(zdict).decompress(data, max_output_size=max(size, 1))
            else:
                # No size in the frame (or a huge one): one-shot decompression would allocate
                # the index's size up front, so expand in bounded steps instead.
                out = _zstd_bounded(zstd, data, size, zdict)
        except zstd.ZstdError as exc:
            raise CorruptShard(f"payload of {uid!r} is not a valid zstd frame: {exc}") from None
    else:
        lz4f = _module(Codec.LZ4)
        try:
            declared = lz4f.get_frame_info(data)["content_size"]
            if declared:  # 0 = not stored in the frame
                _check_declared(declared, size, uid)
            # Bounded: at most one byte more than the index allows is ever produced, and a
            # huge size (a damaged index) is not allocated up front.
            if size <= _ONE_SHOT_LIMIT:
                out = lz4f.LZ4FrameDecompressor().decompress(data, max_length=size + 1)
            else:
                out = _lz4_bounded(lz4f, data, size)
        except (RuntimeError, ValueError, OverflowError) as exc:
            raise CorruptShard(f"payload of {uid!r} is not a valid lz4 frame: {exc}") from None
    if len(out) != size:
        raise CorruptShard(f"payload of {uid!r} expands to {len(out)} bytes, index says {size}")
    return bytes(out)


_ONE_SHOT_LIMIT = 64 << 20


def decompress_block(data: bytes, need: int, *, uid: str = "") -> bytes:
    """The whole decompressed contents of a solid block (FORMAT.md section 3.2): ``data`` is
    the block's stored bytes, one zstd frame that declares its content size (anything after
    the frame, such as the skippable frame a delete pads with, is ignored). ``need`` is how
    many bytes the member being read needs (its block offset plus its size); a frame that
    declares fewer, or more than ``MAX_BLOCK_SIZE``, is ``CorruptShard`` before anything is
    allocated."""
    zstd = _module(Codec.ZSTD)
    try:
        declared = zstd.frame_content_size(data)
        if declared < 0:
            raise CorruptShard(f"solid block of {uid!r} does not declare its size")
        if declared > MAX_BLOCK_SIZE:
            raise CorruptShard(
                f"solid block of {uid!r} declares {declared} bytes; the limit is {MAX_BLOCK_SIZE}"
            )
        if declared < need:
            raise CorruptShard(
                f"solid block of {uid!r} declares {declared} bytes, the entry needs {need}"
            )
        out = _zstd_decompressor().decompress(data, max_output_size=max(declared, 1))
    except zstd.ZstdError as exc:
        raise CorruptShard(f"solid block of {uid!r} is not a valid zstd frame: {exc}") from None
    if len(out) != declared:
        raise CorruptShard(f"solid block of {uid!r} expands to {len(out)} bytes, not {declared}")
    return bytes(out)


def _zstd_bounded(zstd: Any, data: bytes, size: int, dictionary: bytes | None = None) -> bytes:
    """Decompress one frame in 1 MiB steps, stopping once it passes ``size`` bytes."""
    dec = (
        zstd.ZstdDecompressor()
        if dictionary is None
        else zstd.ZstdDecompressor(dict_data=_zstd_dict(zstd, dictionary))
    )
    reader = dec.stream_reader(data, read_across_frames=False)
    parts: list[bytes] = []
    total = 0
    while total <= size:
        chunk = reader.read(1 << 20)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


def _lz4_bounded(lz4f: Any, data: bytes, size: int) -> bytes:
    """Decompress one lz4 frame in 1 MiB steps, stopping once it passes ``size`` bytes."""
    dec = lz4f.LZ4FrameDecompressor()
    parts: list[bytes] = []
    total = 0
    chunk = dec.decompress(data, max_length=1 << 20)
    while chunk:
        parts.append(chunk)
        total += len(chunk)
        if total > size or dec.eof:
            break
        chunk = dec.decompress(b"", max_length=1 << 20)
    return b"".join(parts)


def _check_declared(declared: int, size: int, uid: str) -> None:
    if declared >= 0 and declared != size:
        raise CorruptShard(
            f"payload of {uid!r} declares {declared} bytes in its frame header, index says {size}"
        )


def iter_decompress(
    codec: Codec,
    chunks: Iterator[bytes],
    size: int,
    *,
    uid: str = "",
    dictionary: bytes | None = None,
) -> Iterator[bytes]:
    """Decompress a stream of stored chunks, yielding original bytes in pieces of at most
    :data:`STREAM_STEP`; checks the total size (``dictionary``: the shard's, for
    ``Codec.ZSTD_DICT``)."""
    decoder = StreamDecoder(codec, size, uid=uid, dictionary=dictionary)
    for chunk in chunks:
        yield from decoder.pieces(chunk)
    decoder.finish()


#: Largest piece of original bytes a streamed decompression yields at once (``pieces``).
STREAM_STEP = 256 << 10
#: Compressed bytes decompressed at once by ``pieces``: what one slice expands to is all a
#: stream holds beyond the piece being sent (text at 100:1, 400 KiB; a declared size caps it).
_ZSTD_SLICE = 4096


def _split(data: bytes, step: int) -> Iterator[bytes]:
    if len(data) <= step:
        if data:
            yield data
        return
    view = memoryview(data)
    for i in range(0, len(data), step):
        yield bytes(view[i : i + step])


class StreamDecoder:
    """Decompression pushed one stored chunk at a time (no I/O): :meth:`pieces` (and
    :meth:`feed`, joined) give the original bytes each chunk gives, never more than ``size``
    in all (``CorruptShard`` the
    moment a frame expands past it); :meth:`finish` checks the frame ended and the total is
    ``size``. A solid block member is decoded whole, with :func:`decompress_block`."""

    def __init__(
        self, codec: Codec, size: int, *, uid: str = "", dictionary: bytes | None = None
    ) -> None:
        if codec is Codec.ZSTD_BLOCK:
            raise ValueError("a solid block member is decoded whole, with decompress_block")
        self.codec = codec
        self.size = size
        self.uid = uid
        self.total = 0
        self._errors: tuple[type[BaseException], ...] = ()
        self._dobj: Any = None
        self._zstd: Any = None
        self._head = b""  # zstd: bytes before the frame header is complete
        self._checked = codec is not Codec.ZSTD and codec is not Codec.ZSTD_DICT
        self._slice = 0  # zstd frame without a declared size: input fed this many bytes at a time
        if codec is Codec.ZSTD or codec is Codec.ZSTD_DICT:
            zstd = self._zstd = _module(Codec.ZSTD)
            if codec is Codec.ZSTD_DICT:
                zd = _zstd_dict(zstd, _need_dictionary(dictionary, uid))
                self._dobj = zstd.ZstdDecompressor(dict_data=zd).decompressobj()
            else:
                self._dobj = zstd.ZstdDecompressor().decompressobj()
            self._errors = (zstd.ZstdError,)
        elif codec is Codec.LZ4:
            self._dobj = _module(Codec.LZ4).LZ4FrameDecompressor()
            self._errors = (RuntimeError, ValueError, OverflowError)

    def feed(self, chunk: bytes) -> bytes:
        """Original bytes from one stored chunk (:meth:`pieces`, joined)."""
        return b"".join(self.pieces(chunk))

    def pieces(self, chunk: bytes) -> Iterator[bytes]:
        """Original bytes from one stored chunk, in pieces of at most :data:`STREAM_STEP`,
        decompressed as they are asked for: a stream holds one piece and what one slice of
        input expands to, whatever the compression ratio and the client's pace.

        Expansion is bounded by the entry's size: a zstd frame must declare exactly ``size``
        (libzstd stops a frame at its declared size) and is fed :data:`_ZSTD_SLICE` bytes at
        a time, or, declaring none, 256 bytes at a time, checked after each; lz4 is asked for
        at most one byte past ``size``."""
        if self._dobj is None:
            self._count(len(chunk))
            yield from _split(bytes(chunk), STREAM_STEP)
        elif self._zstd is not None:
            if not self._checked:
                chunk = self._check_header(chunk)
            step = self._slice or _ZSTD_SLICE
            view = memoryview(chunk)
            for i in range(0, len(view), step):
                out = self._zstd_feed(view[i : i + step])
                self._count(len(out))
                yield from _split(out, STREAM_STEP)
        else:
            data = chunk
            while True:
                try:
                    out = bytes(
                        self._dobj.decompress(
                            data, max_length=min(STREAM_STEP, self.size - self.total + 1)
                        )
                    )
                except self._errors as exc:
                    raise CorruptShard(
                        f"payload of {self.uid!r} is not a valid {self.codec.label} frame: {exc}"
                    ) from None
                self._count(len(out))
                if out:
                    yield out
                if self._dobj.eof or self._dobj.needs_input:
                    return
                data = b""

    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self.size:
            raise CorruptShard(f"payload of {self.uid!r} expands past its size {self.size}")

    def _check_header(self, chunk: bytes) -> bytes:
        """Hold bytes until the zstd frame header is complete, then refuse a frame declaring
        another size than the entry's (before anything is decompressed)."""
        data = self._head + bytes(chunk)
        try:
            declared = int(self._zstd.frame_content_size(data))
        except self._zstd.ZstdError:
            if len(data) < 18:  # the longest frame header: wait for more bytes
                self._head = data
                return b""
            raise CorruptShard(f"payload of {self.uid!r} is not a valid zstd frame") from None
        self._head = b""
        self._checked = True
        _check_declared(declared, self.size, self.uid)
        if declared < 0:
            self._slice = 256
        return data

    def _zstd_feed(self, data: bytes | memoryview) -> bytes:
        try:
            if not self._slice:
                return bytes(self._dobj.decompress(data))
            parts: list[bytes] = []
            total = self.total
            for i in range(0, len(data), self._slice):
                part = bytes(self._dobj.decompress(data[i : i + self._slice]))
                total += len(part)
                if total > self.size:
                    raise CorruptShard(f"payload of {self.uid!r} expands past its size {self.size}")
                parts.append(part)
            return b"".join(parts)
        except self._errors as exc:
            raise CorruptShard(
                f"payload of {self.uid!r} is not a valid {self.codec.label} frame: {exc}"
            ) from None

    def finish(self) -> None:
        if self._head:  # a stored payload shorter than a zstd frame header
            raise CorruptShard(f"payload of {self.uid!r} is not a valid zstd frame")
        if self._dobj is not None and not self._dobj.eof:
            raise CorruptShard(
                f"payload of {self.uid!r} ends in the middle of a {self.codec.label} frame"
            )
        if self.total != self.size:
            raise CorruptShard(
                f"payload of {self.uid!r} expands to {self.total} bytes, index says {self.size}"
            )
