"""Optional OpenTelemetry tracing of GET/HEAD /files (``DES_OTEL``), recorded with
opentelemetry-sdk's in-memory exporter: the span tree of cold and warm reads, one
``des.store`` span per store request the metrics count (local disk and moto's S3 server),
an incoming ``traceparent`` continued, and nothing at all when tracing is off."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from des_format import LocalObjectStore
from des_http import ConfigError, HttpSettings, create_app
from des_http_testkit import (
    N_BITS,
    RecordingStore,
    files_url,
    flip_byte,
    object_key,
    sample,
    write_dataset,
)
from des_routing import DesSettings
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

KINDS = ("tail", "index", "payload", "bigfile")
SERVER = "GET /files/{uid}"


class Traced:
    """A service with tracing on, its recorded spans and its store-request counters."""

    def __init__(self, settings: HttpSettings, store: Any = None) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.registry = CollectorRegistry()
        app = create_app(settings, store=store, registry=self.registry, tracer_provider=provider)
        self.client = TestClient(app, raise_server_exceptions=False)
        self.backend = str(settings.des.backend)

    def store_requests(self) -> int:
        total = 0.0
        for kind in KINDS:
            value = self.registry.get_sample_value(
                "des_s3_range_calls_total", {"backend": self.backend, "type": kind}
            )
            total += value or 0.0
        return int(total)

    def take(self) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans


def _local(base: Path, **http: Any) -> tuple[Traced, RecordingStore]:
    des = DesSettings(backend="local", base_dir=base, n_bits=N_BITS)
    store = RecordingStore(LocalObjectStore(base))
    return Traced(HttpSettings(des=des, otel=True, **http), store), store


def _one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _check_tree(
    spans: Sequence[ReadableSpan],
    *,
    payload: bool = True,
    server_name: str = SERVER,
    reread: bool = False,
) -> ReadableSpan:
    """One request's spans: the server span and its steps, each store request under the
    step it belongs to; returns the server span."""
    server = _one(spans, server_name)
    assert server.kind is SpanKind.SERVER
    assert server.context is not None
    assert {s.context.trace_id for s in spans if s.context} == {server.context.trace_id}
    steps = ["des.locate", "des.index"] + (["des.payload"] if payload else [])
    assert sorted(s.name for s in spans if s.name != "des.store") == sorted([server_name, *steps])
    for name in steps:
        assert _parent_id(_one(spans, name)) == server.context.span_id
    ids = {s.name: s.context.span_id for s in spans if s.context and s.name != "des.store"}
    for store in (s for s in spans if s.name == "des.store"):
        assert store.kind is SpanKind.CLIENT
        assert store.attributes is not None
        kind = store.attributes["des.store.kind"]
        if kind in ("payload", "bigfile"):
            steps_of = ["des.payload"]
        elif reread:  # a failed payload read re-reads the index (it may be stale)
            steps_of = ["des.index", "des.payload"]
        else:
            steps_of = ["des.index"]
        assert _parent_id(store) in [ids[s] for s in steps_of], kind
    return server


def _store_spans(spans: Sequence[ReadableSpan]) -> list[tuple[Any, Any]]:
    return sorted(
        (s.attributes["des.store.kind"], s.attributes["des.store.bytes"])
        for s in spans
        if s.name == "des.store" and s.attributes is not None
    )


def test_cold_and_warm_get_on_local_disk(dataset_dir: Path) -> None:
    traced, store = _local(dataset_dir, stream_threshold_bytes=64 << 10)
    before = 0
    # 2025 (200 kB, streamed) first: the shard's index is read once, by the first request
    for uid, round_ in (("2025", "cold"), ("2025", "warm"), ("1001", "warm")):
        wanted = sample(uid).data
        r = traced.client.get(files_url(uid))
        assert (r.status_code, r.content) == (200, wanted), (uid, round_)
        spans = traced.take()
        server = _check_tree(spans)
        assert server.attributes is not None
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["http.route"] == "/files/{uid}"
        assert server.status.status_code is StatusCode.UNSET
        payload = _one(spans, "des.payload")
        assert payload.attributes is not None
        assert payload.attributes["des.file.size"] == len(wanted)
        locate = _one(spans, "des.locate")
        assert locate.attributes is not None
        assert locate.attributes["des.shard_key"] == payload.attributes["des.shard_key"]
        counted = traced.store_requests()
        stored = _store_spans(spans)
        assert len(stored) == counted - before == len(store.calls), (uid, round_)
        kinds = [k for k, _ in stored]
        if round_ == "cold":
            assert "tail" in kinds, (uid, kinds)
        else:
            assert kinds == ["payload"], (uid, kinds)
        # each store span lies within its step (a streamed payload: reported at its end)
        for span in (s for s in spans if s.name == "des.store"):
            step = next(s for s in spans if s.context and s.context.span_id == _parent_id(span))
            assert step.start_time is not None
            assert step.end_time is not None
            assert span.start_time is not None
            assert span.end_time is not None
            assert step.start_time <= span.start_time <= span.end_time <= step.end_time
        before = counted
        store.calls.clear()


def test_tracing_sends_the_same_store_requests(dataset_dir: Path) -> None:
    des = DesSettings(backend="local", base_dir=dataset_dir, n_bits=N_BITS)
    calls = []
    for otel in (False, True):
        store = RecordingStore(LocalObjectStore(dataset_dir))
        app = create_app(HttpSettings(des=des, otel=otel), store=store)
        with TestClient(app) as client:
            for uid in ("1001", "1257", "1001", "2025", "1257"):
                assert client.get(files_url(uid)).content == sample(uid).data
            assert client.head(files_url("1513")).status_code == 200
            assert client.get(files_url("1513"), headers={"range": "bytes=0-9"}).status_code == 206
        calls.append(store.calls)
    assert calls[0] == calls[1]


def test_head_conditional_and_missing(dataset_dir: Path) -> None:
    traced, _ = _local(dataset_dir)
    url = files_url("1257")
    head = traced.client.head(url)
    assert head.status_code == 200
    _check_tree(traced.take(), payload=False, server_name="HEAD /files/{uid}")
    etag = head.headers["etag"]
    assert traced.client.get(url, headers={"if-none-match": etag}).status_code == 304
    _check_tree(traced.take(), payload=False)
    ranged = traced.client.get(url, headers={"range": "bytes=10-19"})
    assert (ranged.status_code, ranged.content) == (206, sample("1257").data[10:20])
    _check_tree(traced.take())  # one des.index (the stat), then des.payload
    missing = traced.client.get(files_url("999999"))
    assert missing.status_code == 404
    spans = traced.take()
    server = _check_tree(spans, payload=False)
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 404
    assert server.status.status_code is StatusCode.UNSET  # a 4xx is not the server's error
    index = _one(spans, "des.index")
    assert index.status.status_code is StatusCode.ERROR
    assert [e.name for e in index.events] == ["exception"]
    bad = traced.client.get("/files/1001?created_at=yesterday")
    assert bad.status_code == 400
    spans = traced.take()
    assert sorted(s.name for s in spans) == sorted([SERVER, "des.locate"])
    assert _one(spans, "des.locate").status.status_code is StatusCode.ERROR


def test_an_incoming_traceparent_is_continued(dataset_dir: Path) -> None:
    traced, _ = _local(dataset_dir)
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = traced.client.get(files_url("1001"), headers={"traceparent": f"00-{trace_id}-{span_id}-01"})
    assert r.status_code == 200
    spans = traced.take()
    server = _check_tree(spans)
    assert server.context is not None
    assert server.parent is not None
    assert server.context.trace_id == int(trace_id, 16)
    assert server.parent.span_id == int(span_id, 16)
    assert server.parent.is_remote
    # without one, each request starts its own trace
    traced.client.get(files_url("1001"))
    fresh = _one(traced.take(), SERVER)
    assert fresh.parent is None
    assert fresh.context is not None
    assert fresh.context.trace_id != int(trace_id, 16)


def test_nothing_is_recorded_when_tracing_is_off(dataset_dir: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    des = DesSettings(backend="local", base_dir=dataset_dir, n_bits=N_BITS)
    app = create_app(HttpSettings(des=des), tracer_provider=provider)
    with TestClient(app) as client:
        assert client.get(files_url("1001")).content == sample("1001").data
        assert client.head(files_url("1257")).status_code == 200
    assert exporter.get_finished_spans() == ()


def test_tracing_off_never_imports_the_tracing_module(dataset_dir: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from des_http import HttpSettings, create_app
        settings = HttpSettings.from_env()
        assert not settings.otel
        with TestClient(create_app(settings)) as client:
            r = client.get({files_url("1001")!r})
            assert r.status_code == 200, r.status_code
        print(sorted(m for m in sys.modules if m.startswith("des_http")))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DES_", "OTEL_"))}
    env.update(DES_BACKEND="local", DES_BASE_DIR=str(dataset_dir), DES_N_BITS=str(N_BITS))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "des_http._files" in out  # the request was served
    assert "des_http._tracing" not in out


def _env(**extra: str) -> dict[str, str]:
    return {"DES_BACKEND": "local", "DES_BASE_DIR": "/tmp", "DES_N_BITS": "8", **extra}


@pytest.mark.parametrize(
    ("extra", "on"),
    [
        ({}, False),
        ({"DES_OTEL": "1"}, True),
        ({"DES_OTEL": "off"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "DES_OTEL": "0"}, False),
        ({"DES_OTEL": "1", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_when_tracing_is_on(extra: dict[str, str], on: bool) -> None:
    assert HttpSettings.from_env(_env(**extra)).otel is on


def test_a_bad_des_otel_is_named() -> None:
    with pytest.raises(ConfigError, match="DES_OTEL: expected 1 or 0"):
        HttpSettings.from_env(_env(DES_OTEL="maybe"))


def test_cold_and_warm_get_on_s3(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    base = tmp_path / "shards"
    write_dataset(base)
    bucket = f"otel-{os.getpid()}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    for path in sorted(base.rglob("*")):
        if path.is_file():
            key = "des/" + path.relative_to(base).as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    des = DesSettings.from_env(
        {
            "DES_BACKEND": "s3",
            "DES_S3_BUCKET": bucket,
            "DES_S3_PREFIX": "des/",
            "DES_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "DES_S3_REGION": "us-east-1",
            "DES_N_BITS": str(N_BITS),
        }
    )
    traced = Traced(HttpSettings(des=des, otel=True, stream_threshold_bytes=64 << 10))
    before = 0
    for uid, round_ in (("2025", "cold"), ("2025", "warm"), ("1257", "warm")):
        r = traced.client.get(files_url(uid))
        assert (r.status_code, r.content) == (200, sample(uid).data), (uid, round_)
        spans = traced.take()
        _check_tree(spans)
        counted = traced.store_requests()
        stored = _store_spans(spans)
        assert len(stored) == counted - before, (uid, round_, stored)
        assert [k for k, _ in stored if k != "payload"] == ([] if round_ == "warm" else ["tail"])
        before = counted


def test_a_damaged_file_marks_its_spans_as_errors(tmp_path: Path) -> None:
    write_dataset(tmp_path, codec="none")
    s = sample("1513")
    shard = tmp_path / object_key(s)
    flip_byte(shard, shard.read_bytes().index(s.data[:64]) + 10)
    traced, _ = _local(tmp_path)
    r = traced.client.get(files_url("1513"))
    assert r.status_code == 500
    spans = traced.take()
    server = _check_tree(spans, reread=True)
    # the index read again inside des.payload after the failure, then the payload again
    assert [k for k, _ in _store_spans(spans)] == ["payload", "payload", "tail", "tail"]
    assert traced.store_requests() == 4
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 500
    assert server.status.status_code is StatusCode.ERROR
    payload = _one(spans, "des.payload")
    assert payload.status.status_code is StatusCode.ERROR
    assert payload.status.description == "ChecksumMismatch"
    assert [e.name for e in payload.events] == ["exception"]


def test_without_an_index_cache_the_lookup_is_inside_the_payload_step(dataset_dir: Path) -> None:
    des = DesSettings(backend="local", base_dir=dataset_dir, n_bits=N_BITS, index_cache_bytes=0)
    traced = Traced(HttpSettings(des=des, otel=True))
    for _ in range(2):  # no cache: both reads are cold
        r = traced.client.get(files_url("1257"))
        assert (r.status_code, r.content) == (200, sample("1257").data)
        spans = traced.take()
        assert sorted(s.name for s in spans if s.name != "des.store") == sorted(
            [SERVER, "des.locate", "des.payload"]
        )
        payload = _one(spans, "des.payload")
        assert payload.context is not None
        stores = [s for s in spans if s.name == "des.store"]
        assert {_parent_id(s) for s in stores} == {payload.context.span_id}
        assert [k for k, _ in _store_spans(spans)] == ["payload", "tail"]
    assert traced.store_requests() == 4


def test_tracing_asked_for_without_opentelemetry_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # FastAPI 0.165 itself needs opentelemetry-api, so it cannot be uninstalled here: the
    # look-up that finds it is made to find nothing instead (a unit test of the message).
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "opentelemetry" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"DES_OTEL: .*pip install 'des-http\[otel\]'"):
        HttpSettings.from_env(_env(DES_OTEL="1"))
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER: tracing needs"):
        HttpSettings.from_env(_env(OTEL_TRACES_EXPORTER="otlp"))
    assert not HttpSettings.from_env(_env()).otel  # not asked for: nothing looked up


# What an operator's start-up does (``opentelemetry-instrument`` works this way): a global SDK
# tracer provider set before the app is built, in every process, here writing each finished
# span as one JSON line to a file.
SITECUSTOMIZE = """
import os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

_out = open(os.environ["TEST_SPANS_FILE"], "a", buffering=1)
_provider = TracerProvider()
_provider.add_span_processor(
    SimpleSpanProcessor(
        ConsoleSpanExporter(out=_out, formatter=lambda s: s.to_json(indent=None) + "\\n")
    )
)
trace.set_tracer_provider(_provider)
"""


@pytest.mark.heavy  # the service end to end: left out of tools/test --quick
def test_the_real_server_exports_a_continued_trace(tmp_path: Path) -> None:
    import json
    import time
    import urllib.request

    from des_testing import free_port, stop_process

    data = tmp_path / "data"
    write_dataset(data)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    spans_file = tmp_path / "spans.jsonl"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DES_", "OTEL_"))}
    env.update(
        DES_BACKEND="local",
        DES_BASE_DIR=str(data),
        DES_N_BITS=str(N_BITS),
        DES_OTEL="1",
        DES_LOG_LEVEL="WARNING",
        TEST_SPANS_FILE=str(spans_file),
        PYTHONPATH=os.pathsep.join([str(hook), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["des-http", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        trace_id, span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        request = urllib.request.Request(
            base + files_url("2025"), headers={"traceparent": f"00-{trace_id}-{span_id}-01"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            assert (r.status, r.read()) == (200, sample("2025").data)
        with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
            metrics = r.read().decode()
    finally:
        stop_process(proc)
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("des_s3_range_calls_total{")
    )
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    ours = [s for s in spans if s["context"]["trace_id"] == "0x" + trace_id]
    by_name = {s["name"]: s for s in ours}
    server = by_name["GET /files/{uid}"]
    assert server["kind"] == "SpanKind.SERVER"
    assert server["parent_id"] == "0x" + span_id
    assert server["attributes"]["http.response.status_code"] == 200
    for step in ("des.locate", "des.index", "des.payload"):
        assert by_name[step]["parent_id"] == server["context"]["span_id"], step
    stores = [s for s in ours if s["name"] == "des.store"]
    assert len(stores) == counted > 0
    assert sorted(s["attributes"]["des.store.kind"] for s in stores) == ["payload", "tail"]
