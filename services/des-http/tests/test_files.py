"""GET and HEAD /files/{uid}: bytes, headers, conditional and range requests, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from des_format import LocalFileSource, StorageUnavailable, read_index
from des_http_testkit import (
    DAY,
    OTHER_DAY,
    SAMPLES,
    Harness,
    MakeHarness,
    SampleFile,
    files_url,
    flip_byte,
    object_key,
    sample,
    write_dataset,
)

LIVE = [s for s in SAMPLES if not s.deleted]


def etag_of(base: Path, s: SampleFile) -> str:
    with LocalFileSource(base / object_key(s)) as src:
        entry = read_index(src).lookup(s.uid)
    assert entry is not None
    return entry.etag


def assert_problem(resp: object, status: int, slug: str) -> dict[str, object]:
    r = resp  # httpx.Response
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    assert r.headers["cache-control"] == "no-store"  # type: ignore[attr-defined]
    body = json.loads(r.content)  # type: ignore[attr-defined]
    assert body["type"] == f"urn:des:problem:{slug}"
    assert body["status"] == status
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("s", LIVE, ids=lambda s: f"{s.uid}@{s.created_at[:10]}")
def test_get_returns_original_bytes_and_cache_headers(
    harness: Harness, dataset_dir: Path, s: SampleFile
) -> None:
    r = harness.client.get(files_url(s.uid, s.created_at))
    assert r.status_code == 200
    assert r.content == s.data
    assert r.headers["content-length"] == str(len(s.data))
    assert r.headers["etag"] == etag_of(dataset_dir, s)
    assert r.headers["etag"].startswith('"')
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        ("1001", "text/plain"),  # stored content type
        ("1257", "image/png"),  # guessed from the stored name photo.png
        ("1513", "application/octet-stream"),  # no metadata at all
        ("doc-\u00e9t\u00e9", "text/markdown"),  # notes.md
    ],
)
def test_content_type_from_metadata_or_name(harness: Harness, uid: str, expected: str) -> None:
    r = harness.client.get(files_url(uid))
    assert r.headers["content-type"] == expected


def test_cache_control_is_configurable(make_harness: MakeHarness) -> None:
    h = make_harness(cache_control="private, max-age=60")
    r = h.client.get(files_url("1001"))
    assert r.headers["cache-control"] == "private, max-age=60"


def test_cold_read_at_most_three_requests_then_warm_read_exactly_one(harness: Harness) -> None:
    assert harness.client.get(files_url("1001")).status_code == 200
    cold = harness.store_requests()
    assert 2 <= cold <= 3
    assert harness.payload_reads() == 1
    assert harness.client.get(files_url("1513")).status_code == 200  # same shard, index cached
    assert harness.store_requests() == cold + 1
    assert harness.payload_reads() == 2


def test_if_none_match_answers_304_without_reading_the_payload(
    harness: Harness, dataset_dir: Path
) -> None:
    etag = etag_of(dataset_dir, sample("1257"))
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        r = harness.client.get(files_url("1257"), headers={"If-None-Match": header})
        assert r.status_code == 304, header
        assert r.content == b""
        assert r.headers["etag"] == etag
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert harness.payload_reads() == 0
    r = harness.client.get(files_url("1257"), headers={"If-None-Match": '"des-0-0"'})
    assert r.status_code == 200
    assert r.content == sample("1257").data


def test_head_answers_from_the_index_alone(harness: Harness) -> None:
    s = sample("2025")
    head = harness.client.head(files_url("2025"))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(s.data))
    assert harness.payload_reads() == 0
    assert harness.store_requests() >= 1
    get = harness.client.get(files_url("2025"))
    for name in ("etag", "content-type", "content-length", "cache-control", "accept-ranges"):
        assert head.headers[name] == get.headers[name]
    partial = harness.client.head(files_url("2025"), headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206
    assert partial.headers["content-range"] == f"bytes 10-19/{len(s.data)}"
    assert partial.headers["content-length"] == "10"
    assert harness.payload_reads() == 1  # only the GET read a payload


def test_head_of_missing_file_is_404_without_body(harness: Harness) -> None:
    r = harness.client.head(files_url("999999"))
    assert r.status_code == 404
    assert r.content == b""
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=100-", 100, 5000),
        ("bytes=-25", 4975, 5000),
        ("bytes=4990-99999", 4990, 5000),
        ("bytes=-99999", 0, 5000),
        ("BYTES = 7-7", 7, 8),
        ("bytes=4999-4999", 4999, 5000),
    ],
)
def test_single_range_is_206_with_content_range(
    harness: Harness, header: str, start: int, end: int
) -> None:
    data = sample("1257").data
    r = harness.client.get(files_url("1257"), headers={"Range": header})
    assert r.status_code == 206
    assert r.content == data[start:end]
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"
    assert r.headers["content-length"] == str(end - start)


@pytest.mark.parametrize("header", ["bytes=5000-", "bytes=9000-9100", "bytes=-0"])
def test_unsatisfiable_range_is_416_with_size(harness: Harness, header: str) -> None:
    r = harness.client.get(files_url("1257"), headers={"Range": header})
    body = assert_problem(r, 416, "range-not-satisfiable")
    assert r.headers["content-range"] == "bytes */5000"
    assert body["detail"] == "the requested range lies outside the file (5000 bytes)"


def test_any_range_of_an_empty_file_is_416(harness: Harness) -> None:
    r = harness.client.get(files_url("1769"), headers={"Range": "bytes=0-0"})
    assert_problem(r, 416, "range-not-satisfiable")
    assert r.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize(
    "header",
    ["bytes=0-1,5-6", "bytes=abc", "bytes=5-2", "items=0-1", "bytes=", "bytes=--1", "0-1"],
)
def test_several_or_malformed_ranges_get_the_whole_file(harness: Harness, header: str) -> None:
    r = harness.client.get(files_url("1257"), headers={"Range": header})
    assert r.status_code == 200
    assert r.content == sample("1257").data
    assert "content-range" not in r.headers


def test_if_range_honoured_only_for_the_current_strong_etag(
    harness: Harness, dataset_dir: Path
) -> None:
    data = sample("1257").data
    etag = etag_of(dataset_dir, sample("1257"))
    rng = {"Range": "bytes=0-3"}
    same = harness.client.get(files_url("1257"), headers={**rng, "If-Range": etag})
    assert (same.status_code, same.content) == (206, data[:4])
    for stale in ('"des-00000000-0"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        r = harness.client.get(files_url("1257"), headers={**rng, "If-Range": stale})
        assert (r.status_code, r.content) == (200, data), stale


def test_large_files_are_streamed_and_ranges_still_exact(make_harness: MakeHarness) -> None:
    h = make_harness(stream_threshold_bytes=1024)
    data = sample("2025").data
    r = h.client.get(files_url("2025"))
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-length"] == str(len(data))
    r = h.client.get(files_url("2025"), headers={"Range": "bytes=150000-150099"})
    assert (r.status_code, r.content) == (206, data[150000:150100])
    assert h.metric("des_bytes_served_total") == len(data) + 100


def test_big_files_come_from_the_bigfiles_object(make_harness: MakeHarness, tmp_path: Path) -> None:
    write_dataset(tmp_path, big_file_threshold=100_000)
    assert list((tmp_path / "20240305" / "_bigFiles").iterdir())
    h = make_harness(base_dir=tmp_path, stream_threshold_bytes=4096)
    r = h.client.get(files_url("2025"))
    assert (r.status_code, r.content) == (200, sample("2025").data)
    assert h.metric("des_s3_range_calls_total", type="bigfile") >= 1
    assert h.metric("des_s3_range_calls_total", type="payload") == 0


def test_same_uid_on_two_days_are_two_files(harness: Harness) -> None:
    assert harness.client.get(files_url("1001", DAY)).content == sample("1001", DAY).data
    other = harness.client.get(files_url("1001", OTHER_DAY)).content
    assert other == sample("1001", OTHER_DAY).data


@pytest.mark.parametrize(
    ("created_at", "slug"),
    [
        ("yesterday", "invalid-created-at"),
        ("2024-13-01T00:00:00Z", "invalid-created-at"),
        ("", "invalid-created-at"),
    ],
)
def test_bad_created_at_is_400_naming_the_format(
    harness: Harness, created_at: str, slug: str
) -> None:
    r = harness.client.get(files_url("1001", created_at))
    body = assert_problem(r, 400, slug)
    assert "2024-01-01T00:00:00Z" in str(body["detail"])
    assert body["instance"] == "/files/1001"


def test_missing_created_at_is_400(harness: Harness) -> None:
    body = assert_problem(harness.client.get("/files/1001"), 400, "invalid-request")
    assert "created_at" in str(body["detail"])


def test_bad_uid_is_400(harness: Harness) -> None:
    body = assert_problem(harness.client.get(files_url("bad\x01uid")), 400, "invalid-uid")
    assert "control character" in str(body["detail"])
    assert_problem(harness.client.get(files_url("x" * 1025)), 400, "invalid-uid")


def test_unknown_uid_and_missing_shard_are_404(harness: Harness) -> None:
    r = harness.client.get(files_url("2537"))  # shard E9 exists, the uid is not in it
    body = assert_problem(r, 404, "not-found")
    assert body["title"] == "File not found"
    assert body["detail"] == "no file with this uid is stored for this created_at"
    assert str(harness.settings.des.base_dir) not in r.text  # no server paths in answers
    assert_problem(harness.client.get(files_url("4097")), 404, "not-found")  # shard 01: none
    assert_problem(harness.client.get(files_url("1001", "2030-01-01T00:00:00Z")), 404, "not-found")


def test_deleted_file_is_410(harness: Harness) -> None:
    body = assert_problem(harness.client.get(files_url("2281")), 410, "deleted")
    assert body["detail"] == "the file with this uid was deleted"
    assert harness.metric("des_retrievals_total", status="410") == 1


def test_storage_unreachable_is_503_with_retry_after(make_harness: MakeHarness) -> None:
    h = make_harness(retry_after_seconds=7)
    h.store.fail = StorageUnavailable("connection refused", key="x")
    r = h.client.get(files_url("1001"))
    body = assert_problem(r, 503, "storage-unavailable")
    assert r.headers["retry-after"] == "7"
    assert "connection refused" not in str(body["detail"])
    assert h.metric("des_retrievals_total", status="503") == 1


def test_corrupt_payload_is_never_served(make_harness: MakeHarness, tmp_path: Path) -> None:
    write_dataset(tmp_path, codec="none")
    s = sample("1513")
    shard = tmp_path / object_key(s)
    raw = shard.read_bytes()
    flip_byte(shard, raw.index(s.data[:64]) + 10)
    h = make_harness(base_dir=tmp_path)
    r = h.client.get(files_url("1513"))
    assert_problem(r, 500, "checksum-mismatch")
    assert s.data[:64] not in r.content


def test_errors_carry_the_request_id(harness: Harness) -> None:
    r = harness.client.get(files_url("999999"), headers={"X-Request-ID": "req-42"})
    body = assert_problem(r, 404, "not-found")
    assert r.headers["x-request-id"] == "req-42"
    assert body["request_id"] == "req-42"


def test_unknown_route_and_method_are_problem_json(harness: Harness) -> None:
    assert_problem(harness.client.get("/nope"), 404, "not-found")
    r = harness.client.put(files_url("1001"), content=b"x")  # DELETE is a route (deletion)
    assert_problem(r, 405, "method-not-allowed")


def test_storage_is_never_touched_from_the_event_loop_thread(make_harness: MakeHarness) -> None:
    h = make_harness(stream_threshold_bytes=1024)
    h.client.get(files_url("1001"))
    h.client.head(files_url("1257"))
    h.client.get(files_url("2025"))  # streamed
    h.client.post("/files/batch", json={"items": [{"uid": "1513", "created_at": DAY}]})
    h.client.get("/ready")
    assert h.store.calls
    assert "MainThread" not in h.store.threads
    assert all(t.startswith(("des-io", "AnyIO worker thread")) for t in h.store.threads)


def test_corrupt_streamed_file_is_cut_short_never_served_whole(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    write_dataset(tmp_path, codec="none")
    s = sample("2025")
    shard = tmp_path / object_key(s)
    flip_byte(shard, shard.read_bytes().index(s.data[:64]) + 150_000)
    h = make_harness(base_dir=tmp_path, stream_threshold_bytes=1024)
    # The payload is one 1 MiB read chunk: it is checked before the answer starts (headers
    # leave only once the first chunk is read and, for a file that fits, verified).
    r = h.client.get(files_url("2025"))
    assert_problem(r, 500, "checksum-mismatch")
    assert s.data[:64] not in r.content
    part = h.client.get(files_url("2025"), headers={"Range": "bytes=0-99"})
    assert_problem(part, 500, "checksum-mismatch")
