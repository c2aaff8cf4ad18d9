"""Upload plans: which bytes go into which multipart part. Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from des_format import ByteRange

MIN_PART_SIZE = 5 * 1024 * 1024  # S3: every part but the last is at least 5 MiB
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024  # S3: at most 5 GiB per part (and per copied range)
MAX_PARTS = 10_000


@dataclass(frozen=True, slots=True)
class PartSpec:
    """One part of a multipart upload, in order: a server-side copy of a range of the existing
    object (``copy``), or bytes sent by the client: a downloaded range of the existing object
    (``old``) followed by a range of the local file (``local``).
    """

    number: int
    copy: ByteRange | None = None
    old: ByteRange | None = None
    local: ByteRange | None = None

    @property
    def size(self) -> int:
        return sum(r.length for r in (self.copy, self.old, self.local) if r is not None)


@dataclass(frozen=True, slots=True)
class UploadPlan:
    """``parts`` empty means one single PUT of ``old`` (downloaded) + the local file."""

    parts: tuple[PartSpec, ...]
    old: ByteRange | None = None

    @property
    def multipart(self) -> bool:
        return bool(self.parts)


def _check_part_size(part_size: int) -> None:
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise ValueError(
            f"part_size must be within {MIN_PART_SIZE}..{MAX_PART_SIZE} bytes (S3's limits), "
            f"got {part_size}"
        )


def plan_ranges(size: int, part_size: int) -> tuple[ByteRange, ...]:
    """Split ``[0, size)`` into consecutive ranges of ``part_size`` (the last may be shorter)."""
    return tuple(ByteRange(s, min(size, s + part_size)) for s in range(0, size, part_size))


def plan_upload(size: int, part_size: int) -> UploadPlan:
    """A new object from a local file of ``size`` bytes: one PUT up to ``part_size``,
    multipart above. Raises ValueError when S3's 10,000-part limit would be passed.
    """
    _check_part_size(part_size)
    if size <= part_size:
        return UploadPlan(())
    ranges = plan_ranges(size, part_size)
    _check_count(len(ranges), size, part_size)
    return UploadPlan(tuple(PartSpec(i + 1, local=r) for i, r in enumerate(ranges)))


def plan_append(old_size: int, tail_size: int, part_size: int) -> UploadPlan:
    """The object ``old + tail`` from the existing object (``old_size`` bytes, in S3) and a
    local tail file.

    - ``old_size >= 5 MiB``: the existing object is copied server-side (ranges of at most
      5 GiB, each a part), then the tail is uploaded in parts of ``part_size``.
    - smaller: S3 cannot copy it as a non-last part, so it is downloaded; old + tail go up as
      one PUT when they fit in ``part_size``, else the first part is old + the start of the
      tail.
    """
    _check_part_size(part_size)
    if old_size < 0 or tail_size < 0:
        raise ValueError("sizes must be >= 0")
    parts: list[PartSpec] = []
    if old_size >= MIN_PART_SIZE:
        for r in plan_ranges(old_size, MAX_PART_SIZE):
            parts.append(PartSpec(len(parts) + 1, copy=r))
        # A copied range must itself be >= 5 MiB unless it is the last part: fold a short
        # final copy range into the previous one (still <= 5 GiB + 5 MiB is not allowed, so
        # split the last two evenly instead).
        if len(parts) >= 2:
            last = parts[-1].copy
            assert last is not None
            if last.length < MIN_PART_SIZE and tail_size > 0:
                prev = parts[-2].copy
                assert prev is not None
                mid = (prev.start + last.end) // 2
                parts[-2] = PartSpec(parts[-2].number, copy=ByteRange(prev.start, mid))
                parts[-1] = PartSpec(parts[-1].number, copy=ByteRange(mid, last.end))
        for r in plan_ranges(tail_size, part_size):
            parts.append(PartSpec(len(parts) + 1, local=r))
        _check_count(len(parts), old_size + tail_size, part_size)
        return UploadPlan(tuple(parts))
    old = ByteRange(0, old_size)
    if old_size + tail_size <= part_size:
        return UploadPlan((), old=old)
    first = part_size - old_size
    parts.append(PartSpec(1, old=old, local=ByteRange(0, first)))
    for r in plan_ranges(tail_size - first, part_size):
        parts.append(PartSpec(len(parts) + 1, local=ByteRange(first + r.start, first + r.end)))
    _check_count(len(parts), old_size + tail_size, part_size)
    return UploadPlan(tuple(parts), old=old)


def _check_count(count: int, size: int, part_size: int) -> None:
    if count > MAX_PARTS:
        raise ValueError(
            f"{size} bytes in parts of {part_size} bytes need {count} parts, more than S3's "
            f"{MAX_PARTS}; use a larger part_size"
        )
