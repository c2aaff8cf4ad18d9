"""A TCP forwarder on 127.0.0.1 that adds a fixed delay to each request sent through it.

This kernel has no netem, so S3 latency is simulated here: every chunk a client sends is
forwarded to the upstream ``--delay-ms`` after it arrived (order kept per connection), and
answers flow back at once. An HTTP/1.1 request is one chunk (or a few, sent together), so each
S3 request through the proxy takes ``--delay-ms`` more. asyncio (uvloop when installed) with
no parsing keeps its CPU per request low; it runs as its own process, so its CPU never counts
in the numbers of the client measured through it.

    python tools/bench/delay_proxy.py --upstream 127.0.0.1:8333 --port 9000 --delay-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def pipe_delayed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def sender() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
        with contextlib.suppress(OSError):
            writer.write_eof()

    task = asyncio.create_task(sender())
    try:
        while True:
            data = await reader.read(1 << 16)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await task
    finally:
        task.cancel()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await reader.read(1 << 16)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


async def serve(host: str, port: int, upstream: tuple[str, int], delay: float) -> None:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*upstream)
        except OSError:
            cw.close()
            return
        try:
            await asyncio.gather(pipe_delayed(cr, uw, delay), pipe(ur, cw))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            uw.close()
            cw.close()

    server = await asyncio.start_server(handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="host:port to forward to")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port, (host, int(port)), args.delay_ms / 1000))


if __name__ == "__main__":
    main()
