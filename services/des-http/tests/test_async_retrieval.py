"""open_async_retriever: the retriever the service awaits, per backend.

On S3 (moto over HTTP, every request through the counting proxy) it is des-format's async
driver over obstore, and each read costs exactly the requests the blocking path costs (cold 2,
warm 1 with If-Match), reported to the same observer kinds. On a local directory it is the
blocking driver, with the same bytes and errors.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    AsyncShardRetriever,
    EntryNotFound,
    IndexCache,
    ShardRetriever,
    ShardWriter,
)
from des_http import HttpSettings
from des_http._readers import open_async_retriever
from des_http._threaded import ThreadedRetriever
from des_routing import DesSettings
from des_storage_s3 import open_store
from des_testing import FaultProxy, S3Server
from des_testing.s3server import ACCESS_KEY, REGION, SECRET_KEY

KEY = "20240101/A7.des"
FILES = {f"u{i:03d}": (f"file {i} " * (1 + i % 50)).encode() for i in range(200)}


def write_shard(path: Path) -> None:
    with path.open("wb") as out:
        w = ShardWriter(out, codec="zstd")
        for uid, data in FILES.items():
            w.add(uid, data)
        w.close()


async def collect(retriever: Any, uid: str) -> bytes:
    opened = await retriever.open(KEY, uid)
    try:
        return b"".join([c async for c in opened.aiter_bytes()])
    finally:
        await opened.aclose()


def test_s3_reads_cost_what_the_blocking_path_costs(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bucket = f"des-http-{uuid.uuid4().hex[:12]}"
    direct = s3_server.client()
    direct.create_bucket(Bucket=bucket)
    write_shard(tmp_path / "s.des")
    direct.put_object(Bucket=bucket, Key=f"des/{KEY}", Body=(tmp_path / "s.des").read_bytes())
    with FaultProxy(s3_server.endpoint_url) as proxy:
        settings = DesSettings(
            backend="s3",
            s3_bucket=bucket,
            s3_prefix="des",
            s3_endpoint_url=proxy.url,
            s3_region=REGION,
        )
        async_kinds: list[str] = []
        sync_kinds: list[str] = []
        ar = open_async_retriever(settings, observer=lambda k, n: async_kinds.append(k))
        assert isinstance(ar, AsyncShardRetriever)
        sr = ShardRetriever(
            open_store(settings),
            cache=IndexCache(1 << 20),
            observer=lambda k, n: sync_kinds.append(k),
        )

        async def scenario(r: Any) -> list[Any]:
            out: list[Any] = []
            for uid in ("u007", "u008", "u199"):  # cold, then warm
                proxy.clear()
                out.append(await collect(r, uid))
                out.append([(x.range, x.status) for x in proxy.snapshot()])
            proxy.clear()
            out.append((await r.stat(KEY, "u100")).size)
            out.append(proxy.count())
            got = {u: v async for u, v in r.read_many(KEY, ["u001", "u002", "u003"])}
            out.append(got)
            with pytest.raises(EntryNotFound):
                await r.stat(KEY, "missing")
            return out

        async def blocking(r: ShardRetriever) -> list[Any]:
            return await scenario(ThreadedRetriever(r, HttpSettings(des=settings)))

        got_async = asyncio.run(scenario(ar))
        got_sync = asyncio.run(blocking(sr))
    assert got_async == got_sync
    assert got_async[0] == FILES["u007"]
    assert len(got_async[1]) == 2  # cold: tail + payload
    assert len(got_async[3]) == 1  # warm: the payload alone
    assert got_async[7] == 0  # stat under a warm index: no request
    assert got_async[8] == {u: FILES[u] for u in ("u001", "u002", "u003")}
    assert async_kinds == sync_kinds
    assert async_kinds[:3] == ["tail", "payload", "payload"]


def test_local_backend_reads_through_the_blocking_driver(tmp_path: Path) -> None:
    path = tmp_path / KEY
    path.parent.mkdir(parents=True)
    write_shard(path)
    kinds: list[str] = []
    r = open_async_retriever(
        DesSettings(backend="local", base_dir=tmp_path), observer=lambda k, n: kinds.append(k)
    )
    assert isinstance(r, ThreadedRetriever)
    from des_http import HttpSettings

    wrapped = open_async_retriever(
        HttpSettings(des=DesSettings(backend="local", base_dir=tmp_path))
    )
    assert isinstance(wrapped, ThreadedRetriever)

    async def go() -> None:
        assert await collect(r, "u010") == FILES["u010"]
        assert await collect(r, "u011") == FILES["u011"]
        assert (await r.stat(KEY, "u012")).size == len(FILES["u012"])
        with pytest.raises(EntryNotFound):
            await r.open(KEY, "missing")

    asyncio.run(go())
    assert kinds[:3] == ["tail", "payload", "payload"]
