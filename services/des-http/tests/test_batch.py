"""POST /files/batch: a multipart/mixed stream with one status per item, coalesced reads."""

from __future__ import annotations

import json
from urllib.parse import quote

from des_http_testkit import DAY, OTHER_DAY, Harness, MakeHarness, parse_multipart, sample


def post(h: Harness, items: list[dict[str, str]]) -> list[tuple[dict[str, str], bytes]]:
    r = h.client.post("/files/batch", json={"items": items})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("multipart/mixed; boundary=")
    assert r.headers["cache-control"] == "no-store"
    return parse_multipart(r.content, r.headers["content-type"])


def test_batch_returns_every_file_with_a_status(harness: Harness) -> None:
    wanted = [("1001", DAY), ("1257", DAY), ("doc-\u00e9t\u00e9", DAY), ("1001", OTHER_DAY)]
    parts = post(harness, [{"uid": u, "created_at": c} for u, c in wanted])
    assert len(parts) == len(wanted)
    seen = set()
    for headers, body in parts:
        idx = int(headers["x-des-item"])
        uid, created_at = wanted[idx]
        assert headers["x-des-uid"] == quote(uid, safe="")
        assert headers["x-des-status"] == "200"
        assert headers["content-type"] == "application/octet-stream"
        assert body == sample(uid, created_at).data
        seen.add(idx)
    assert seen == {0, 1, 2, 3}
    assert harness.metric("des_retrievals_total", status="200") == 4
    assert harness.metric("des_bytes_served_total") == sum(
        len(sample(u, c).data) for u, c in wanted
    )


def test_batch_items_in_one_shard_are_read_with_one_coalesced_request(harness: Harness) -> None:
    uids = ["1001", "1257", "1513", "2025"]  # one shard, adjacent payloads
    parts = post(harness, [{"uid": u, "created_at": DAY} for u in uids])
    assert [h["x-des-item"] for h, _ in parts] == ["0", "1", "2", "3"]
    assert [b for _, b in parts] == [sample(u).data for u in uids]
    assert harness.metric("des_s3_range_calls_total", type="payload") == 1


def test_batch_reports_each_failure_in_its_own_part(harness: Harness) -> None:
    items = [
        {"uid": "1001", "created_at": DAY},
        {"uid": "2281", "created_at": DAY},  # deleted
        {"uid": "2537", "created_at": DAY},  # not in the shard
        {"uid": "4097", "created_at": DAY},  # no such shard
        {"uid": "1001", "created_at": "not a date"},
        {"uid": "1001", "created_at": DAY},  # the same file twice
    ]
    parts = post(harness, items)
    by_item = {int(h["x-des-item"]): (h, b) for h, b in parts}
    assert sorted(by_item) == [0, 1, 2, 3, 4, 5]
    expected = {0: "200", 1: "410", 2: "404", 3: "404", 4: "400", 5: "200"}
    assert {i: h["x-des-status"] for i, (h, _) in by_item.items()} == expected
    for i in (1, 2, 3, 4):
        headers, body = by_item[i]
        assert headers["content-type"] == "application/problem+json"
        problem = json.loads(body)
        assert problem["status"] == int(expected[i])
    assert json.loads(by_item[4][1])["type"] == "urn:des:problem:invalid-created-at"
    assert by_item[5][1] == sample("1001").data


def test_batch_longer_than_the_limit_is_413(make_harness: MakeHarness) -> None:
    h = make_harness(max_batch_items=3)
    items = [{"uid": "1001", "created_at": DAY}] * 4
    r = h.client.post("/files/batch", json={"items": items})
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert json.loads(r.content)["detail"] == (
        "the batch lists 4 items but at most 3 are accepted (DES_MAX_BATCH_ITEMS); "
        "split it into several requests"
    )
    assert h.payload_reads() == 0


def test_malformed_batch_bodies_are_400(harness: Harness) -> None:
    for body in (
        b"not json",
        b"[]",
        b'{"items": []}',
        b'{"items": [{"uid": "1"}]}',
        b'{"items": [{"uid": "1", "created_at": "x", "extra": 1}]}',
    ):
        r = harness.client.post(
            "/files/batch", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, body
        assert r.headers["content-type"] == "application/problem+json"
        assert json.loads(r.content)["type"] == "urn:des:problem:invalid-request"


def test_large_batch_items_are_streamed_in_their_part(make_harness: MakeHarness) -> None:
    h = make_harness(stream_threshold_bytes=1024)
    uids = ["1001", "2025", "1257", "2281"]  # 2025 (200,000 bytes) is streamed
    parts = post(h, [{"uid": u, "created_at": DAY} for u in uids])
    by_item = {int(hd["x-des-item"]): (hd, body) for hd, body in parts}
    assert sorted(by_item) == [0, 1, 2, 3]
    for i in (0, 1, 2):
        assert by_item[i][0]["x-des-status"] == "200"
        assert by_item[i][1] == sample(uids[i]).data
    assert by_item[3][0]["x-des-status"] == "410"
    assert h.metric("des_bytes_served_total") == sum(len(sample(u).data) for u in uids[:3])
