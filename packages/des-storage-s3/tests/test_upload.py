"""Shard uploads against moto over HTTP: conditional create, multipart, abort, append, replace."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from des_format import PreconditionFailed
from des_storage_s3 import (
    MIN_PART_SIZE,
    RetryPolicy,
    S3ShardStore,
    S3Unavailable,
    ShardChanged,
    ShardExists,
    multipart_etag,
)
from des_testing import FaultProxy

MiB = 1024 * 1024
KEY = "20240101/A7.des"


@pytest.fixture
def shards(client: Any, bucket: str, fast_retry: RetryPolicy) -> S3ShardStore:
    return S3ShardStore(client, bucket, "des/", part_size=MIN_PART_SIZE, retry=fast_retry)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def get(direct: Any, bucket: str, key: str) -> bytes:
    data: bytes = direct.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def no_pending_uploads(direct: Any, bucket: str) -> bool:
    return "Uploads" not in direct.list_multipart_uploads(Bucket=bucket)


def test_small_shard_is_one_conditional_put(
    shards: S3ShardStore, tmp_path: Path, proxy: FaultProxy, direct: Any, bucket: str, data_of: Any
) -> None:
    data = data_of(1000)
    proxy.clear()
    res = shards.put_shard(write(tmp_path, "s.des", data), KEY)
    assert (res.key, res.s3_key, res.size, res.parts) == (KEY, "des/" + KEY, 1000, 0)
    reqs = proxy.snapshot()
    assert [(r.method, r.headers.get("If-None-Match")) for r in reqs] == [("PUT", "*")]
    assert get(direct, bucket, "des/" + KEY) == data
    assert res.etag == direct.head_object(Bucket=bucket, Key="des/" + KEY)["ETag"]


def test_published_shard_is_never_overwritten(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str
) -> None:
    shards.put_shard(write(tmp_path, "a", b"first"), KEY)
    with pytest.raises(ShardExists) as info:
        shards.put_shard(write(tmp_path, "b", b"second"), KEY)
    assert isinstance(info.value, PreconditionFailed)
    assert str(info.value).startswith(f"s3://{bucket}/des/{KEY} already exists;")
    assert get(direct, bucket, "des/" + KEY) == b"first"


def test_multipart_upload_streams_parts_in_parallel(
    shards: S3ShardStore, tmp_path: Path, proxy: FaultProxy, direct: Any, bucket: str, data_of: Any
) -> None:
    data = data_of(11 * MiB)
    proxy.clear()
    res = shards.put_shard(write(tmp_path, "big.des", data), KEY)
    assert (res.size, res.parts) == (11 * MiB, 3)
    assert get(direct, bucket, "des/" + KEY) == data
    reqs = proxy.snapshot()
    parts = sorted((r.query, r.bytes_in) for r in reqs if r.method == "PUT")
    assert [n for _, n in parts] == [5 * MiB, 5 * MiB, 1 * MiB]
    assert reqs[0].method == "POST"  # create
    complete = reqs[-1]
    assert complete.method == "POST"
    assert complete.headers.get("If-None-Match") == "*"
    assert no_pending_uploads(direct, bucket)


def test_multipart_create_only_refuses_existing_and_aborts(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str, data_of: Any
) -> None:
    direct.put_object(Bucket=bucket, Key="des/" + KEY, Body=b"published")
    with pytest.raises(ShardExists):
        shards.put_shard(write(tmp_path, "big.des", data_of(11 * MiB)), KEY)
    assert get(direct, bucket, "des/" + KEY) == b"published"
    assert no_pending_uploads(direct, bucket)


def test_failed_parts_are_retried(
    shards: S3ShardStore, tmp_path: Path, proxy: FaultProxy, direct: Any, bucket: str, data_of: Any
) -> None:
    data = data_of(11 * MiB, seed=3)
    proxy.inject("error500", times=2, match=lambda m, p, h: "partNumber=2" in p)
    proxy.inject("reset", times=1, match=lambda m, p, h: "partNumber=3" in p)
    shards.put_shard(write(tmp_path, "big.des", data), KEY)
    assert get(direct, bucket, "des/" + KEY) == data
    faults = sorted(r.fault for r in proxy.snapshot() if r.fault)
    assert faults == ["error500", "error500", "reset"]


def test_interrupted_upload_leaves_no_object_and_no_parts(
    shards: S3ShardStore, tmp_path: Path, proxy: FaultProxy, direct: Any, bucket: str, data_of: Any
) -> None:
    proxy.inject("error500", times=100, match=lambda m, p, h: "partNumber=2" in p)
    with pytest.raises(S3Unavailable, match="gave up after 4 attempts"):
        shards.put_shard(write(tmp_path, "big.des", data_of(11 * MiB)), KEY)
    assert "Contents" not in direct.list_objects_v2(Bucket=bucket)
    assert no_pending_uploads(direct, bucket)
    assert any(r.method == "DELETE" and "uploadId=" in r.query for r in proxy.snapshot())


def test_keyboard_interrupt_aborts_the_upload(
    client: Any, tmp_path: Path, direct: Any, bucket: str, data_of: Any
) -> None:
    calls = {"n": 0}
    real = client.upload_part

    def flaky(**kw: Any) -> Any:
        calls["n"] += 1
        if kw["PartNumber"] == 2:
            raise KeyboardInterrupt
        return real(**kw)

    client.upload_part = flaky
    shards = S3ShardStore(client, bucket, part_size=MIN_PART_SIZE, max_concurrency=1)
    with pytest.raises(KeyboardInterrupt):
        shards.put_shard(write(tmp_path, "big.des", data_of(11 * MiB)), KEY)
    assert "Contents" not in direct.list_objects_v2(Bucket=bucket)
    assert no_pending_uploads(direct, bucket)


def test_replace_shard_is_conditional(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str, proxy: FaultProxy
) -> None:
    first = shards.put_shard(write(tmp_path, "a", b"v1"), KEY)
    proxy.clear()
    second = shards.replace_shard(write(tmp_path, "b", b"v2"), KEY, first.etag)
    assert get(direct, bucket, "des/" + KEY) == b"v2"
    put = [r for r in proxy.snapshot() if r.method == "PUT"]
    assert [r.headers.get("If-Match") for r in put] == [first.etag]
    with pytest.raises(ShardChanged, match="changed: its ETag is"):
        shards.replace_shard(write(tmp_path, "c", b"v3"), KEY, first.etag)
    assert get(direct, bucket, "des/" + KEY) == b"v2"
    shards.replace_shard(write(tmp_path, "d", b"v4"), KEY, second.etag)
    assert get(direct, bucket, "des/" + KEY) == b"v4"


def test_replace_missing_shard(shards: S3ShardStore, tmp_path: Path) -> None:
    with pytest.raises(ShardChanged, match="no longer exists"):
        shards.replace_shard(write(tmp_path, "a", b"v1"), KEY, '"abc"')


def test_append_to_small_shard_downloads_and_puts_once(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str, proxy: FaultProxy
) -> None:
    first = shards.put_shard(write(tmp_path, "a", b"old-bytes|"), KEY)
    proxy.clear()
    res = shards.append_shard(KEY, write(tmp_path, "tail", b"new-tail"), first.etag)
    assert get(direct, bucket, "des/" + KEY) == b"old-bytes|new-tail"
    assert (res.size, res.parts) == (18, 0)
    reqs = proxy.snapshot()
    assert [(r.method, r.headers.get("If-Match")) for r in reqs] == [
        ("HEAD", None),
        ("GET", first.etag),
        ("PUT", first.etag),
    ]


def test_append_to_large_shard_copies_server_side(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str, proxy: FaultProxy, data_of: Any
) -> None:
    old = data_of(6 * MiB, seed=1)
    first = shards.put_shard(write(tmp_path, "a", old), KEY)
    tail = data_of(300_000, seed=2)
    proxy.clear()
    res = shards.append_shard(KEY, write(tmp_path, "tail", tail), first.etag)
    assert get(direct, bucket, "des/" + KEY) == old + tail
    assert (res.size, res.parts) == (len(old) + len(tail), 2)
    reqs = proxy.snapshot()
    copy = [r for r in reqs if "x-amz-copy-source" in {k.lower() for k in r.headers}]
    assert len(copy) == 1
    hdrs = {k.lower(): v for k, v in copy[0].headers.items()}
    assert hdrs["x-amz-copy-source-if-match"] == first.etag
    assert hdrs["x-amz-copy-source-range"] == f"bytes=0-{len(old) - 1}"
    assert copy[0].bytes_in == 0  # the old bytes never travel through the client
    sent = sum(r.bytes_in for r in reqs if r.method == "PUT")
    assert sent == len(tail)
    complete = reqs[-1]
    assert (complete.method, complete.headers.get("If-Match")) == ("POST", first.etag)


def test_append_with_stale_etag_is_refused(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str
) -> None:
    first = shards.put_shard(write(tmp_path, "a", b"v1"), KEY)
    direct.put_object(Bucket=bucket, Key="des/" + KEY, Body=b"someone else's v2")
    with pytest.raises(ShardChanged):
        shards.append_shard(KEY, write(tmp_path, "tail", b"+tail"), first.etag)
    assert get(direct, bucket, "des/" + KEY) == b"someone else's v2"


def test_append_race_during_upload_is_detected(
    shards: S3ShardStore,
    tmp_path: Path,
    direct: Any,
    bucket: str,
    proxy: FaultProxy,
    data_of: Any,
) -> None:
    """Another writer replaces the shard while our tail parts are uploading: the append must
    not complete (moto ignores If-Match on CompleteMultipartUpload; the re-check catches it).
    """
    old = data_of(6 * MiB, seed=1)
    first = shards.put_shard(write(tmp_path, "a", old), KEY)

    def other_writer(method: str, path: str, headers: dict[str, str]) -> bool:
        if method == "PUT" and "partNumber=2" in path:
            direct.put_object(Bucket=bucket, Key="des/" + KEY, Body=b"other writer")
        return False

    proxy.inject("slowdown", match=other_writer)
    with pytest.raises(ShardChanged, match="changed: its ETag is"):
        shards.append_shard(KEY, write(tmp_path, "tail", b"+tail"), first.etag)
    assert get(direct, bucket, "des/" + KEY) == b"other writer"
    assert no_pending_uploads(direct, bucket)


def test_bigfile_uploaded_once_per_hash(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str, proxy: FaultProxy
) -> None:
    key = "20240101/_bigFiles/" + "ab" * 32
    path = write(tmp_path, "big", b"big file bytes")
    assert shards.put_bigfile(path, key) is True
    proxy.clear()
    assert shards.put_bigfile(path, key) is False
    assert [r.method for r in proxy.snapshot()] == ["HEAD"]
    assert get(direct, bucket, "des/" + key) == b"big file bytes"


def test_append_small_shard_with_large_tail_sends_old_bytes_in_part_one(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str, proxy: FaultProxy, data_of: Any
) -> None:
    old = data_of(1 * MiB, seed=4)
    first = shards.put_shard(write(tmp_path, "a", old), KEY)
    tail = data_of(10 * MiB, seed=5)
    proxy.clear()
    res = shards.append_shard(KEY, write(tmp_path, "tail", tail), first.etag)
    assert get(direct, bucket, "des/" + KEY) == old + tail
    assert res.parts == 3
    sent = sorted(r.bytes_in for r in proxy.snapshot() if r.method == "PUT")
    assert sent == [1 * MiB, 5 * MiB, 5 * MiB]  # part 1 = 1 MiB old + 4 MiB of tail
    gets = [r for r in proxy.snapshot() if r.method == "GET"]
    assert [(g.range, g.headers.get("If-Match")) for g in gets] == [
        (f"bytes=0-{MiB - 1}", first.etag)
    ]


def test_multipart_replace_is_conditional(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str, proxy: FaultProxy, data_of: Any
) -> None:
    first = shards.put_shard(write(tmp_path, "a", b"v1"), KEY)
    big = data_of(11 * MiB, seed=6)
    proxy.clear()
    res = shards.replace_shard(write(tmp_path, "big", big), KEY, first.etag)
    assert res.parts == 3
    assert get(direct, bucket, "des/" + KEY) == big
    complete = proxy.snapshot()[-1]
    assert (complete.method, complete.headers.get("If-Match")) == ("POST", first.etag)
    with pytest.raises(ShardChanged):
        shards.replace_shard(write(tmp_path, "big2", big[::-1]), KEY, first.etag)
    assert get(direct, bucket, "des/" + KEY) == big
    assert no_pending_uploads(direct, bucket)


@pytest.mark.parametrize("kind", ["reset", "truncate"])  # not sent / completed but answer cut
def test_lost_complete_answer_is_retried_and_recognised(
    shards: S3ShardStore,
    tmp_path: Path,
    direct: Any,
    bucket: str,
    proxy: FaultProxy,
    data_of: Any,
    kind: str,
) -> None:
    data = data_of(11 * MiB, seed=7)
    is_complete = lambda m, p, h: m == "POST" and "uploadId=" in p  # noqa: E731
    proxy.inject(kind, match=is_complete, keep_fraction=0.3)
    res = shards.put_shard(write(tmp_path, "big", data), KEY)
    assert get(direct, bucket, "des/" + KEY) == data
    assert res.etag == direct.head_object(Bucket=bucket, Key="des/" + KEY)["ETag"]
    assert [
        r.fault for r in proxy.snapshot() if is_complete(r.method, r.path + "?" + r.query, {})
    ] == [
        kind,
        None,
    ]
    assert no_pending_uploads(direct, bucket)


def test_completed_upload_answering_no_such_upload_is_recognised(
    client: Any, tmp_path: Path, direct: Any, bucket: str, data_of: Any, fast_retry: RetryPolicy
) -> None:
    """Real S3 may answer a repeated CompleteMultipartUpload with 404 NoSuchUpload once the
    first one succeeded: the write's token in the object's metadata tells that it is ours.
    """
    from botocore.exceptions import ClientError, ConnectionClosedError

    real = client.complete_multipart_upload
    calls: list[str] = []

    def lossy(**kw: Any) -> Any:
        calls.append("complete")
        if len(calls) == 1:
            real(**kw)
            raise ConnectionClosedError(endpoint_url="http://127.0.0.1")
        raise ClientError(
            {
                "Error": {"Code": "NoSuchUpload", "Message": "gone"},
                "ResponseMetadata": {"HTTPStatusCode": 404},
            },
            "CompleteMultipartUpload",
        )

    client.complete_multipart_upload = lossy
    shards = S3ShardStore(client, bucket, part_size=MIN_PART_SIZE, retry=fast_retry)
    data = data_of(11 * MiB, seed=8)
    res = shards.put_shard(write(tmp_path, "big", data), KEY)
    assert calls == ["complete", "complete"]
    assert get(direct, bucket, KEY) == data
    assert res.etag == direct.head_object(Bucket=bucket, Key=KEY)["ETag"]
    # Someone else's object under the key is not mistaken for ours.
    direct.delete_object(Bucket=bucket, Key=KEY)
    calls.clear()

    def other(**kw: Any) -> Any:
        calls.append("complete")
        if len(calls) == 1:
            direct.put_object(Bucket=bucket, Key=KEY, Body=b"other writer")
            raise ConnectionClosedError(endpoint_url="http://127.0.0.1")
        return real(**kw)

    client.complete_multipart_upload = other
    with pytest.raises(ShardExists):
        shards.put_shard(write(tmp_path, "big", data), KEY)
    assert get(direct, bucket, KEY) == b"other writer"
    assert no_pending_uploads(direct, bucket)


def test_multipart_etag_is_aws_form_and_refuses_non_md5_part_etags() -> None:
    """The AWS formula, for information: DES never needs it. A part ETag that is not an MD5
    (SeaweedFS answers UploadPartCopy with ``<hex>-N``) is a clear ValueError, not fromhex's."""
    md5s = [hashlib.md5(b"a").hexdigest(), hashlib.md5(b"b").hexdigest()]
    digest = hashlib.md5(b"".join(bytes.fromhex(m) for m in md5s)).hexdigest()
    assert multipart_etag(f'"{m}"' for m in md5s) == f'"{digest}-2"'
    with pytest.raises(ValueError, match=r"part ETag 'c132dd4841b20ff72ef18c5eae27dba7-2' is not"):
        multipart_etag(["c132dd4841b20ff72ef18c5eae27dba7-2"])


def test_lost_put_answer_is_retried_and_recognised(
    shards: S3ShardStore, tmp_path: Path, direct: Any, bucket: str, proxy: FaultProxy
) -> None:
    """A create-only PUT whose answer is lost is retried; the retry's 412 is recognised as
    this write's own object by its token (no false ShardExists), another write's is not."""
    proxy.clear()
    proxy.inject("lost_answer", method="PUT")
    res = shards.put_shard(write(tmp_path, "s", b"mine" * 100), KEY)
    assert get(direct, bucket, "des/" + KEY) == b"mine" * 100
    assert res.etag == direct.head_object(Bucket=bucket, Key="des/" + KEY)["ETag"]
    assert [(r.method, r.fault) for r in proxy.snapshot()] == [
        ("PUT", "lost_answer"),  # done by the server, answer lost
        ("PUT", None),  # the retry: 412, the object exists
        ("HEAD", None),  # it carries this write's token: success
    ]
    # Someone else's object is still refused (the retry's HEAD finds another token).
    with pytest.raises(ShardExists):
        shards.put_shard(write(tmp_path, "s", b"mine" * 100), KEY)
