"""des-format's ObjectStore conformance tests, run against S3ObjectStore over HTTP (moto)."""

from __future__ import annotations

from typing import Any

import pytest
from des_format import ObjectStore
from des_format.testing import ObjectStoreConformance
from des_storage_s3 import S3ObjectStore


class TestS3ObjectStore(ObjectStoreConformance):
    @pytest.fixture(autouse=True)
    def _s3(self, client: Any, direct: Any, bucket: str) -> None:
        self.client = client
        self.direct = direct
        self.bucket = bucket

    def make_store(self) -> tuple[ObjectStore, Any]:
        def put(key: str, data: bytes) -> None:
            self.direct.put_object(Bucket=self.bucket, Key=f"conf/{key}", Body=data)

        return S3ObjectStore(self.client, self.bucket, "conf"), put


class TestS3ObjectStoreNoPrefix(TestS3ObjectStore):
    def make_store(self) -> tuple[ObjectStore, Any]:
        def put(key: str, data: bytes) -> None:
            self.direct.put_object(Bucket=self.bucket, Key=key, Body=data)

        return S3ObjectStore(self.client, self.bucket), put
