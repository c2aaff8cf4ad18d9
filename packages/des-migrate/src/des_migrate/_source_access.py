"""The migrated files' sources: checking S3 sources, re-reading a source to compare it with
its packed copy, deleting sources once their rows are archived."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ._config import S3SourceConfig
from ._source_db import FileRow
from ._verifier import brief

__all__ = ["SourceAccess"]

log = logging.getLogger("des_migrate")


class SourceAccess:
    """Local paths and ``s3://`` URIs of one configuration's sources."""

    def __init__(self, s3: S3SourceConfig, *, read_chunk: int = 1 << 20) -> None:
        self._s3 = s3
        self._read_chunk = read_chunk
        self._s3_client: Any = None

    def _iter_file(self, path: str) -> Iterator[bytes]:
        with open(path, "rb") as fh:
            while chunk := fh.read(self._read_chunk):
                yield chunk

    def check_s3_source(self, row: FileRow) -> str | None:
        loc = row.location
        if not self._s3.enabled:
            return f"source {loc} is on S3 but packer.s3_source.enabled is false"
        try:
            size = self.s3_size(loc)
        except FileNotFoundError:
            return f"source {loc} does not exist"
        except Exception as exc:  # noqa: BLE001  (a per-file failure, reported with its reason)
            return f"cannot read source {loc}: {brief(exc)}"
        if size != row.size_bytes:
            return f"source {loc} has {size} bytes, the table says {row.size_bytes}"
        return None

    def client(self) -> Any:
        """The S3 client for s3:// sources (made on first use)."""
        if self._s3_client is None:
            from des_storage_s3 import ClientSettings, make_client

            s3 = self._s3
            self._s3_client = make_client(
                ClientSettings(region_name=s3.region_name, endpoint_url=s3.endpoint_url)
            )
        return self._s3_client

    def s3_size(self, uri: str) -> int:
        bucket, _, key = uri[len("s3://") :].partition("/")
        client = self.client()
        s3 = self._s3
        attempt = 0
        while True:
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                return int(head["ContentLength"])
            except Exception as exc:
                code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise FileNotFoundError(uri) from None
                attempt += 1
                if attempt > s3.max_retries:
                    raise
                time.sleep(s3.retry_delay_seconds * attempt)

    def compare_with_source(self, row: FileRow, packed_crc: int) -> str | None:
        """A file an earlier run packed must still equal its source before it is marked."""
        if row.location.startswith("s3://"):
            data_iter: Iterable[bytes] = [self.read_s3(row.location)]
        else:
            data_iter = self._iter_file(row.location)
        from des_format import crc32

        try:
            crc = 0
            for chunk in data_iter:
                crc = crc32(chunk, crc)
        except OSError as exc:
            return f"cannot re-read source {row.location}: {exc.strerror}"
        if crc != packed_crc:
            return (
                f"shard already holds uid with CRC-32 {packed_crc:08x} but the source has "
                f"{crc:08x}; resolve by hand"
            )
        return None

    def read_s3(self, uri: str) -> bytes:
        bucket, _, key = uri[len("s3://") :].partition("/")
        body = self.client().get_object(Bucket=bucket, Key=key)["Body"]
        return bytes(body.read())

    def delete(self, items: Sequence[tuple[str, str]]) -> tuple[int, bool]:
        deleted = 0
        complete = True
        for uid, location in items:
            try:
                if location.startswith("s3://"):
                    bucket, _, key = location[len("s3://") :].partition("/")
                    self.client().delete_object(Bucket=bucket, Key=key)
                else:
                    os.unlink(location)
            except FileNotFoundError:
                continue
            except Exception as exc:  # noqa: BLE001  (a source left behind is only a warning)
                log.warning("could not delete source %s of %s: %s", location, uid, exc)
                complete = False
                continue
            deleted += 1
            log.info("deleted source %s (uid %s, archived and verified)", location, uid)
        return deleted, complete
