"""Writing shards to S3: create-only publish, conditional replace, append (R6), big files.

Every write is conditional, so two writers never silently lose each other's files:

- :meth:`S3ShardStore.put_shard` publishes with ``If-None-Match: *`` (PUT, or
  CompleteMultipartUpload): an existing object is never overwritten (:class:`ShardExists`).
- :meth:`S3ShardStore.replace_shard` and :meth:`S3ShardStore.append_shard` only complete
  while the object still has ``expected_etag`` (:class:`ShardChanged` otherwise): If-Match on
  PUT and CompleteMultipartUpload, CopySourceIfMatch on UploadPartCopy, plus a HEAD re-check
  right before completing, for servers that ignore the conditional headers on multipart
  requests (moto 5.2 does).

A write whose answer was lost on the way back is retried; when the retry finds the object
already there (412, or 404 NoSuchUpload for a completed multipart upload), the write is
recognised as this one's by a random token it stored in the object's metadata
(``x-amz-meta-des-write``), never by the form of an ETag: servers differ there (a multipart
ETag is not always an MD5 of anything, nor is one under SSE-KMS). Integrity rests on DES's own
checksums; an ETag is only an opaque version tag to compare for equality.

Multipart uploads stream from disk (one part in memory per worker), upload parts in parallel,
retry failed parts under the retry policy, and are aborted on any failure (including
KeyboardInterrupt), so no partial object and no orphaned parts remain.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from des_format import ByteRange, ObjectInfo

from ._errors import (
    S3ObjectNotFound,
    S3PreconditionFailed,
    S3StoreError,
    ShardExists,
    translate_error,
)
from ._plan import MIN_PART_SIZE, PartSpec, UploadPlan, plan_append, plan_upload
from ._retry import RetryPolicy, call_with_retry
from ._store import join_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("des_storage_s3")

DEFAULT_PART_SIZE = 16 * 1024 * 1024
WRITE_ID_META = "des-write"  # user metadata key (x-amz-meta-des-write) naming the write


class ShardChanged(S3PreconditionFailed):
    """A conditional overwrite found the object changed (or gone) since ``expected_etag``."""


@dataclass(frozen=True, slots=True)
class UploadResult:
    """What a write published: the store key, the S3 key, the new ETag, size and part count
    (0 for a single PUT).
    """

    key: str
    s3_key: str
    etag: str
    size: int
    parts: int


class S3ShardStore:
    """Writes shard objects, continuation parts and big files into one bucket/prefix."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        plan_upload(0, part_size)  # validates part_size
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._draw = draw

    def s3_key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def parts(self) -> Mapping[str, S3ShardStore]:
        """``{"": self}``: one bucket and prefix (a multi-zone store has one part per zone)."""
        return {"": self}

    def describe(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.s3_key(key)}" if key else f"s3://{self.bucket}"

    # -- public writes -------------------------------------------------------------------------

    def put_shard(self, local_path: str | os.PathLike[str], key: str) -> UploadResult:
        """Publish a finished shard (or continuation part) file under ``key``, create-only.

        Raises :class:`ShardExists` when an object is already there.
        """
        path = Path(local_path)
        size = path.stat().st_size
        return self._write(path, key, plan_upload(size, self.part_size), size, cond=("*", None))

    def replace_shard(
        self, local_path: str | os.PathLike[str], key: str, expected_etag: str
    ) -> UploadResult:
        """Overwrite ``key`` with a local file, only if it still has ``expected_etag``."""
        path = Path(local_path)
        size = path.stat().st_size
        s3_key = self.s3_key(key)
        self._require_etag(s3_key, expected_etag)
        return self._write(
            path, key, plan_upload(size, self.part_size), size, cond=(None, expected_etag)
        )

    def append_shard(
        self, key: str, tail_path: str | os.PathLike[str], expected_etag: str
    ) -> UploadResult:
        """Rebuild ``key`` as its current bytes followed by the bytes of ``tail_path``.

        The existing object is copied server-side when it is at least 5 MiB, otherwise
        downloaded (pinned with If-Match); the result is published only if the object is
        still ``expected_etag``.
        """
        path = Path(tail_path)
        tail_size = path.stat().st_size
        s3_key = self.s3_key(key)
        info = self._require_etag(s3_key, expected_etag)
        plan = plan_append(info.size, tail_size, self.part_size)
        return self._write(
            path,
            key,
            plan,
            info.size + tail_size,
            cond=(None, expected_etag),
            source_etag=expected_etag,
        )

    def put_bigfile(self, path: str | os.PathLike[str], key: str) -> bool:
        """Upload a big file under its content-addressed ``key`` once.

        Returns False (and sends nothing but one HEAD) when the object already exists,
        True when this call uploaded it. A concurrent upload of the same hash counts as
        already there.
        """
        s3_key = self.s3_key(key)
        if self._head(s3_key) is not None:
            return False
        try:
            self.put_shard(path, key)
        except ShardExists:
            return False
        return True

    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag of ``key``, or None when it does not exist."""
        return self._head(self.s3_key(key))

    # -- internals -----------------------------------------------------------------------------

    def _call(
        self, fn: Callable[[], Any], s3_key: str, op: str, br: ByteRange | None = None
    ) -> Any:
        def translate(exc: BaseException) -> S3StoreError:
            return translate_error(exc, bucket=self.bucket, key=s3_key, byte_range=br, operation=op)

        return call_with_retry(
            fn, self.retry, translate=translate, sleep=self._sleep, draw=self._draw
        )

    def _head(self, s3_key: str) -> ObjectInfo | None:
        def go() -> ObjectInfo:
            resp = self.client.head_object(Bucket=self.bucket, Key=s3_key)
            return ObjectInfo(int(resp["ContentLength"]), resp["ETag"])

        try:
            info: ObjectInfo = self._call(go, s3_key, "HEAD")
        except S3ObjectNotFound:
            return None
        return info

    def _require_etag(self, s3_key: str, expected_etag: str) -> ObjectInfo:
        info = self._head(s3_key)
        if info is None:
            raise ShardChanged(
                f"s3://{self.bucket}/{s3_key} no longer exists (expected ETag {expected_etag}); "
                "re-read it and start again",
                bucket=self.bucket,
                key=s3_key,
            )
        if _norm(info.etag) != _norm(expected_etag):
            raise ShardChanged(
                f"s3://{self.bucket}/{s3_key} changed: its ETag is {info.etag}, expected "
                f"{expected_etag}; another writer replaced it, re-read it and start again",
                bucket=self.bucket,
                key=s3_key,
            )
        return info

    def _conditional_error(
        self,
        exc: S3PreconditionFailed | S3ObjectNotFound,
        s3_key: str,
        cond: tuple[str | None, str | None],
    ) -> S3StoreError:
        if_none_match, if_match = cond
        if if_none_match == "*":
            return ShardExists(
                f"s3://{self.bucket}/{s3_key} already exists; published shards are never "
                "overwritten (use append or replace with the ETag you read)",
                bucket=self.bucket,
                key=s3_key,
                code=exc.code,
                status=exc.status,
            )
        return ShardChanged(
            f"s3://{self.bucket}/{s3_key} changed while it was being rewritten (expected ETag "
            f"{if_match}); another writer got there first, re-read it and start again",
            bucket=self.bucket,
            key=s3_key,
            code=exc.code,
            status=exc.status,
        )

    def _write(
        self,
        path: Path,
        key: str,
        plan: UploadPlan,
        size: int,
        *,
        cond: tuple[str | None, str | None],
        source_etag: str | None = None,
    ) -> UploadResult:
        s3_key = self.s3_key(key)
        if_none_match, if_match = cond
        old = b""
        if plan.old is not None and plan.old.length > 0:
            old = self._download(s3_key, plan.old, source_etag)
        try:
            if not plan.multipart:
                data = old + path.read_bytes()
                etag = self._put(s3_key, data, if_none_match, if_match)
                return UploadResult(key, s3_key, etag, len(data), 0)
            etag = self._multipart(
                path=path, s3_key=s3_key, plan=plan, old=old, cond=cond, source_etag=source_etag
            )
        except (S3PreconditionFailed, S3ObjectNotFound) as exc:
            if isinstance(exc, ShardChanged | ShardExists):
                raise
            if isinstance(exc, S3ObjectNotFound) and if_match is None:
                raise
            raise self._conditional_error(exc, s3_key, cond) from exc
        return UploadResult(key, s3_key, etag, size, len(plan.parts))

    def _download(self, s3_key: str, br: ByteRange, etag: str | None) -> bytes:
        def go() -> bytes:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": s3_key,
                "Range": f"bytes={br.start}-{br.end - 1}",
            }
            if etag is not None:
                kwargs["IfMatch"] = etag
            resp = self.client.get_object(**kwargs)
            data: bytes = resp["Body"].read()
            if len(data) != br.length:
                raise S3PreconditionFailed(
                    f"s3://{self.bucket}/{s3_key} is {len(data)} bytes, expected {br.length}",
                    bucket=self.bucket,
                    key=s3_key,
                )
            return data

        result: bytes = self._call(go, s3_key, "GET", br)
        return result

    def _put(
        self, s3_key: str, data: bytes, if_none_match: str | None, if_match: str | None
    ) -> str:
        token = uuid.uuid4().hex
        tries: list[int] = []

        def go() -> str:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": s3_key,
                "Body": data,
                "Metadata": {WRITE_ID_META: token},
            }
            if if_none_match is not None:
                kwargs["IfNoneMatch"] = if_none_match
            if if_match is not None:
                kwargs["IfMatch"] = if_match
            tries.append(1)
            try:
                resp = self.client.put_object(**kwargs)
            except Exception as exc:
                mine = self._written_by(exc, s3_key, token, retried=len(tries) > 1)
                if mine is not None:
                    return mine
                raise
            return str(resp["ETag"])

        result: str = self._call(go, s3_key, "PUT")
        return result

    def _written_by(
        self, exc: BaseException, s3_key: str, token: str, *, retried: bool
    ) -> str | None:
        """The ETag of the object at ``s3_key`` when a retried write failed with 412 or 404
        because its first try had already succeeded (its answer was lost): the object then
        carries this write's ``token``. None otherwise (the error stands)."""
        if not retried:
            return None
        err = translate_error(exc, bucket=self.bucket, key=s3_key, operation="write")
        if not isinstance(err, S3ObjectNotFound | S3PreconditionFailed):
            return None

        def go() -> tuple[str, str]:
            resp = self.client.head_object(Bucket=self.bucket, Key=s3_key)
            return str(resp["ETag"]), str(resp.get("Metadata", {}).get(WRITE_ID_META, ""))

        try:
            etag, found = self._call(go, s3_key, "HEAD")
        except S3ObjectNotFound:
            return None
        return etag if found == token else None

    def _multipart(
        self,
        *,
        path: Path,
        s3_key: str,
        plan: UploadPlan,
        old: bytes,
        cond: tuple[str | None, str | None],
        source_etag: str | None,
    ) -> str:
        if_none_match, if_match = cond
        token = uuid.uuid4().hex
        upload_id: str = self._call(
            lambda: str(
                self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=s3_key, Metadata={WRITE_ID_META: token}
                )["UploadId"]
            ),
            s3_key,
            "CreateMultipartUpload",
        )
        try:
            etags = self._upload_parts(
                path=path,
                s3_key=s3_key,
                upload_id=upload_id,
                plan=plan,
                old=old,
                source_etag=source_etag,
            )
            if if_match is not None:
                # Re-check right before completing: moto (and older S3-compatible servers)
                # ignore If-Match on CompleteMultipartUpload.
                self._require_etag(s3_key, if_match)

            def complete() -> str:
                kwargs: dict[str, Any] = {
                    "Bucket": self.bucket,
                    "Key": s3_key,
                    "UploadId": upload_id,
                    "MultipartUpload": {
                        "Parts": [{"ETag": e, "PartNumber": n} for n, e in sorted(etags.items())]
                    },
                }
                if if_none_match is not None:
                    kwargs["IfNoneMatch"] = if_none_match
                if if_match is not None:
                    kwargs["IfMatch"] = if_match
                tries.append(1)
                try:
                    resp = self.client.complete_multipart_upload(**kwargs)
                except Exception as exc:
                    # A retry after an answer lost on the way back: the upload may already
                    # be complete (404 NoSuchUpload, or 412 because "our" object now exists).
                    # It is ours if the object carries this upload's token.
                    mine = self._written_by(exc, s3_key, token, retried=len(tries) > 1)
                    if mine is not None:
                        return mine
                    raise
                return str(resp["ETag"])

            tries: list[int] = []
            result: str = self._call(complete, s3_key, "CompleteMultipartUpload")
            return result
        except BaseException:
            self._abort(s3_key, upload_id)
            raise

    def _abort(self, s3_key: str, upload_id: str) -> None:
        try:
            self._call(
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=s3_key, UploadId=upload_id
                ),
                s3_key,
                "AbortMultipartUpload",
            )
        except S3ObjectNotFound:
            pass  # already gone
        except S3StoreError as exc:
            log.error(
                "could not abort multipart upload %s of s3://%s/%s: %s; a bucket lifecycle "
                "rule (AbortIncompleteMultipartUpload) will remove its parts",
                upload_id,
                self.bucket,
                s3_key,
                exc,
            )

    def _upload_parts(
        self,
        *,
        path: Path,
        s3_key: str,
        upload_id: str,
        plan: UploadPlan,
        old: bytes,
        source_etag: str | None,
    ) -> dict[int, str]:
        etags: dict[int, str] = {}
        lock = threading.Lock()
        stop = threading.Event()
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

        def one(part: PartSpec) -> None:
            if stop.is_set():
                return
            if part.copy is not None:
                rng = part.copy

                def copy() -> str:
                    kwargs: dict[str, Any] = {
                        "Bucket": self.bucket,
                        "Key": s3_key,
                        "UploadId": upload_id,
                        "PartNumber": part.number,
                        "CopySource": {"Bucket": self.bucket, "Key": s3_key},
                        "CopySourceRange": f"bytes={rng.start}-{rng.end - 1}",
                    }
                    if source_etag is not None:
                        kwargs["CopySourceIfMatch"] = source_etag
                    resp = self.client.upload_part_copy(**kwargs)
                    return str(resp["CopyPartResult"]["ETag"])

                etag: str = self._call(copy, s3_key, "UploadPartCopy", rng)
            else:
                chunks: list[bytes] = []
                if part.old is not None:
                    chunks.append(old[part.old.start : part.old.end])
                if part.local is not None:
                    data = os.pread(fd, part.local.length, part.local.start)
                    if len(data) != part.local.length:
                        raise OSError(f"{path} shrank while being uploaded")
                    chunks.append(data)
                body = b"".join(chunks)

                def send() -> str:
                    resp = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=s3_key,
                        UploadId=upload_id,
                        PartNumber=part.number,
                        Body=body,
                    )
                    return str(resp["ETag"])

                etag = self._call(send, s3_key, "UploadPart", part.local)
            with lock:
                etags[part.number] = etag

        try:
            workers = min(self.max_concurrency, len(plan.parts))
            with ThreadPoolExecutor(workers, thread_name_prefix="des-s3-upload") as pool:
                futures: list[Future[None]] = [pool.submit(one, p) for p in plan.parts]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        stop.set()
                        for other in futures:
                            other.cancel()
                        break
                wait(futures)
                for f in futures:
                    if not f.cancelled():
                        f.result()
        finally:
            os.close(fd)
        if len(etags) != len(plan.parts):
            raise S3StoreError(
                f"multipart upload of s3://{self.bucket}/{s3_key} lost parts",
                bucket=self.bucket,
                key=s3_key,
            )
        return etags


def multipart_etag(part_etags: Iterable[str]) -> str:
    """The ETag AWS S3 gives an object completed from parts with these ETags:
    ``"md5(md5(part1) + md5(part2) + ...)-N"``, for parts whose ETags are MD5 digests.

    Informational only: DES itself never derives or checks an ETag (other servers answer
    other forms, e.g. SeaweedFS's UploadPartCopy ``<hex>-N``). Raises ValueError, naming the
    ETag, when a part ETag is not an MD5 digest.
    """
    digests = []
    for e in part_etags:
        text = _norm(e)
        if len(text) != 32 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(f"part ETag {e!r} is not an MD5 digest (32 hex digits)")
        digests.append(bytes.fromhex(text))
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'  # noqa: S324


def _norm(etag: str | None) -> str:
    return (etag or "").strip().strip('"')


__all__ = ["DEFAULT_PART_SIZE", "MIN_PART_SIZE", "S3ShardStore", "ShardChanged", "UploadResult"]
