"""The S3 features DES relies on, measured on each test server (docs/S3-COMPATIBILITY.md is
this file's table in prose). Where a server's behaviour differs, the expected answer is
written per server: a change of behaviour in a new server version fails here first.

"ignored" means the server performed the request as if the condition were not there.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

MiB = 1024 * 1024
STALE = '"0123456789abcdef0123456789abcdef"'

#: feature -> server -> expected outcome: an HTTP status for a refusal, "ok" or "ignored".
EXPECTED: dict[str, dict[str, Any]] = {
    "PutObject If-None-Match: * on an existing key": {"moto": 412, "seaweedfs": 412},
    "PutObject If-Match: stale ETag": {"moto": 412, "seaweedfs": 412},
    "PutObject If-Match on a missing key": {"moto": 404, "seaweedfs": 412},
    "CompleteMultipartUpload If-None-Match: * on an existing key": {"moto": 412, "seaweedfs": 412},
    "CompleteMultipartUpload If-Match: stale ETag": {"moto": "ignored", "seaweedfs": 412},
    "GetObject If-Match: stale ETag": {"moto": 412, "seaweedfs": 412},
    "UploadPartCopy CopySourceIfMatch: stale ETag": {"moto": "ignored", "seaweedfs": 412},
    "CopyObject CopySourceIfMatch: stale ETag": {"moto": "ignored", "seaweedfs": 412},
}


def _outcome(call: Any) -> Any:
    try:
        call()
    except ClientError as exc:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    return "ignored"


@pytest.fixture
def s3(s3_server: Any, direct: Any, bucket: str) -> tuple[str, Any, str]:
    direct.put_object(Bucket=bucket, Key="small", Body=b"x" * 100)
    direct.put_object(Bucket=bucket, Key="big", Body=bytes(range(256)) * (6 * MiB // 256))
    return s3_server.name, direct, bucket


def test_conditional_requests(s3: tuple[str, Any, str]) -> None:
    server, c, b = s3
    got: dict[str, Any] = {}

    got["PutObject If-None-Match: * on an existing key"] = _outcome(
        lambda: c.put_object(Bucket=b, Key="small", Body=b"y", IfNoneMatch="*")
    )
    got["PutObject If-Match: stale ETag"] = _outcome(
        lambda: c.put_object(Bucket=b, Key="small", Body=b"y", IfMatch=STALE)
    )
    got["PutObject If-Match on a missing key"] = _outcome(
        lambda: c.put_object(Bucket=b, Key="nothing", Body=b"y", IfMatch=STALE)
    )
    got["GetObject If-Match: stale ETag"] = _outcome(
        lambda: c.get_object(Bucket=b, Key="small", IfMatch=STALE, Range="bytes=0-9")
    )
    got["CopyObject CopySourceIfMatch: stale ETag"] = _outcome(
        lambda: c.copy_object(
            Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "small"}, CopySourceIfMatch=STALE
        )
    )
    for cond in ("If-None-Match", "If-Match"):
        upload = c.create_multipart_upload(Bucket=b, Key="small")["UploadId"]
        part = c.upload_part(Bucket=b, Key="small", UploadId=upload, PartNumber=1, Body=b"new")
        kwargs = {"IfNoneMatch": "*"} if cond == "If-None-Match" else {"IfMatch": STALE}
        name = (
            "CompleteMultipartUpload If-None-Match: * on an existing key"
            if cond == "If-None-Match"
            else "CompleteMultipartUpload If-Match: stale ETag"
        )
        got[name] = _outcome(
            lambda upload=upload, part=part, kwargs=kwargs: c.complete_multipart_upload(
                Bucket=b,
                Key="small",
                UploadId=upload,
                MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
                **kwargs,
            )
        )
        if got[name] == "ignored":
            c.put_object(Bucket=b, Key="small", Body=b"x" * 100)  # undo the overwrite
        else:
            c.abort_multipart_upload(Bucket=b, Key="small", UploadId=upload)
    upload = c.create_multipart_upload(Bucket=b, Key="big")["UploadId"]
    got["UploadPartCopy CopySourceIfMatch: stale ETag"] = _outcome(
        lambda: c.upload_part_copy(
            Bucket=b,
            Key="big",
            UploadId=upload,
            PartNumber=1,
            CopySource={"Bucket": b, "Key": "big"},
            CopySourceRange=f"bytes=0-{5 * MiB - 1}",
            CopySourceIfMatch=STALE,
        )
    )
    c.abort_multipart_upload(Bucket=b, Key="big", UploadId=upload)
    assert got == {feature: by_server[server] for feature, by_server in EXPECTED.items()}


def test_upload_part_copy_and_its_etag(s3: tuple[str, Any, str]) -> None:
    """UploadPartCopy of a range, completed with a new tail: byte-exact on both servers. The
    part's ETag is an MD5 on moto and ``<hex>-N`` (no MD5 of anything, unquoted) on SeaweedFS:
    DES treats ETags as opaque (test_upload.py, test_s3_large_append.py)."""
    server, c, b = s3
    big = c.get_object(Bucket=b, Key="big")["Body"].read()
    etag = c.head_object(Bucket=b, Key="big")["ETag"]
    upload = c.create_multipart_upload(Bucket=b, Key="big")["UploadId"]
    copied = c.upload_part_copy(
        Bucket=b,
        Key="big",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": b, "Key": "big"},
        CopySourceRange=f"bytes=0-{len(big) - 1}",
        CopySourceIfMatch=etag,
    )["CopyPartResult"]["ETag"]
    tail = c.upload_part(Bucket=b, Key="big", UploadId=upload, PartNumber=2, Body=b"tail")
    c.complete_multipart_upload(
        Bucket=b,
        Key="big",
        UploadId=upload,
        MultipartUpload={
            "Parts": [{"ETag": copied, "PartNumber": 1}, {"ETag": tail["ETag"], "PartNumber": 2}]
        },
        IfMatch=etag,
    )
    assert c.get_object(Bucket=b, Key="big")["Body"].read() == big + b"tail"
    text = copied.strip('"')
    if server == "seaweedfs":
        assert not copied.startswith('"')
        assert re.fullmatch(r"[0-9a-f]{32}-[0-9]+", text), copied
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", text), copied


def test_suffix_ranges(s3: tuple[str, Any, str]) -> None:
    """``bytes=-n`` gives the last n bytes, and the whole object when n is larger: 206 with a
    Content-Range naming the size (DES's first read of a shard)."""
    _server, c, b = s3
    last = c.get_object(Bucket=b, Key="small", Range="bytes=-10")
    assert (last["ContentRange"], last["Body"].read()) == ("bytes 90-99/100", b"x" * 10)
    whole = c.get_object(Bucket=b, Key="small", Range="bytes=-1000")
    assert whole["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert (whole["ContentRange"], len(whole["Body"].read())) == ("bytes 0-99/100", 100)
    with pytest.raises(ClientError) as info:
        c.get_object(Bucket=b, Key="small", Range="bytes=200-300")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_versioning_and_version_deletes(s3: tuple[str, Any, str]) -> None:
    """A versioned bucket keeps the old bytes as a noncurrent version; deleting by version id
    removes them (what des repack does); DeleteObjects removes several keys at once."""
    _server, c, b = s3
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    c.put_object(Bucket=b, Key="v", Body=b"old")
    c.put_object(Bucket=b, Key="v", Body=b"new")
    versions = c.list_object_versions(Bucket=b, Prefix="v")["Versions"]
    assert sorted(v["IsLatest"] for v in versions) == [False, True]
    (old,) = [v["VersionId"] for v in versions if not v["IsLatest"]]
    got = c.get_object(Bucket=b, Key="v", VersionId=old)["Body"].read()
    assert got == b"old"
    c.delete_object(Bucket=b, Key="v", VersionId=old)
    versions = c.list_object_versions(Bucket=b, Prefix="v")["Versions"]
    assert [v["IsLatest"] for v in versions] == [True]
    deleted = c.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "small"}, {"Key": "no"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["no", "small"]
