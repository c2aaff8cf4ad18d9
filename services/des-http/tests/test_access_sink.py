"""The access lines written under the service's own logging (``configure_logging``): the same
JSON as the ``logging`` path's formatter, one write per event-loop turn, nothing lost."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from des_http import _logging
from des_http._logging import (
    ACCESS_LOGGER,
    PIPE_BUF,
    AccessSink,
    JsonFormatter,
    format_ts,
    log_access,
    whole_line_chunks,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.sizes: list[int] = []

    def write(self, text: str) -> int:
        self.writes += 1
        self.sizes.append(len(text.encode()))
        return super().write(text)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def both_routes() -> Any:
    """log_access through the sink and through logging, for the same request."""
    logger = logging.getLogger(ACCESS_LOGGER)
    handler = Records()
    saved = (logger.level, list(logger.handlers), logger.propagate, _logging._route.sink)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]
        logger.propagate = saved[2]
        _logging._route.sink = saved[3]


_text = st.text(max_size=40)


# the fixture's handler is shared by the examples: each pops the one record it adds
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
    path=_text,
    query=st.binary(max_size=60),
    client=_text,
    principal=st.none() | _text,
    status=st.integers(0, 599),
    sent=st.integers(0, 2**63),
    error=st.none() | st.sampled_from([ValueError("x"), KeyError("y")]),
)
def test_a_sink_line_is_the_formatters_line(
    both_routes: Records,
    method: str,
    path: str,
    query: bytes,
    client: str,
    principal: str | None,
    status: int,
    sent: int,
    error: BaseException | None,
) -> None:
    state: dict[str, Any] = {} if principal is None else {"principal": principal}
    scope = {
        "method": method,
        "path": path,
        "query_string": query,
        "client": (client, 5000),
        "state": state,
    }
    started = time.perf_counter()
    stream = CountingStream()
    _logging._route.sink = AccessSink(stream)
    log_access(scope, "r-1", status=status, sent=sent, started=started, error=error)
    _logging._route.sink = None
    log_access(scope, "r-1", status=status, sent=sent, started=started, error=error)
    line = stream.getvalue()  # no loop runs: written at once
    assert line.endswith("\n")
    assert line.count("\n") == 1
    got = json.loads(line)
    assert len(both_routes.records) == 1  # the sink route logged nothing through logging
    want = json.loads(JsonFormatter().format(both_routes.records.pop()))
    assert list(got) == list(want)  # the same keys in the same order
    for parsed in (got, want):
        parsed.pop("ts")
        parsed.pop("duration_ms")
    assert got == want


def test_timestamps_match_isoformat_in_milliseconds() -> None:
    for ns in (0, 1_000_500_000, 1_733_616_000_999_999_999, 1_733_616_001_000_000_000):
        second, rest = divmod(ns, 10**9)
        moment = datetime.fromtimestamp(second, UTC).replace(microsecond=rest // 1000)
        assert format_ts.of_ns(ns) == moment.isoformat(timespec="milliseconds")
    assert format_ts(1733616001.25) == "2024-12-08T00:00:01.250+00:00"


def test_lines_of_one_loop_turn_leave_in_one_write_at_its_end() -> None:
    stream = CountingStream()
    sink = AccessSink(stream)

    async def main() -> None:
        for i in range(5):
            sink.append(f'{{"n":{i}}}')
        assert stream.writes == 0  # held until the turn ends
        await asyncio.sleep(0)
        assert stream.writes == 1
        sink.append('{"n":5}')
        await asyncio.sleep(0)
        assert stream.writes == 2

    asyncio.run(main())
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["n"] for line in lines] == [0, 1, 2, 3, 4, 5]
    assert all(line["ts"].endswith("+00:00") for line in lines)


def test_pending_lines_are_written_by_flush() -> None:
    stream = CountingStream()
    sink = AccessSink(stream)

    async def main() -> None:
        sink.append('{"n":1}')
        sink.flush()  # as at exit, before the loop ran again

    asyncio.run(main())
    assert json.loads(stream.getvalue())["n"] == 1
    sink.flush()
    assert stream.writes == 1


@given(st.lists(st.text(min_size=0, max_size=3000).filter(lambda t: "\n" not in t), max_size=40))
def test_gathered_lines_leave_in_whole_lines_of_at_most_a_pipe_buffer(lines: list[str]) -> None:
    """Each write of the gathered lines fits one atomic pipe write (the workers share
    stdout), holds whole lines only, and together they are the lines in order."""
    chunks = whole_line_chunks(lines) if lines else []
    assert "".join(chunks) == "".join(line + "\n" for line in lines)
    for chunk in chunks:
        assert chunk.endswith("\n")
        size = len(chunk.encode("utf-8", "surrogatepass"))
        assert size <= PIPE_BUF or chunk.count("\n") == 1  # a longer line goes alone


def test_many_lines_of_one_turn_leave_in_pipe_sized_writes() -> None:
    stream = CountingStream()
    sink = AccessSink(stream)

    async def main() -> None:
        for i in range(100):
            sink.append(f'{{"n":{i},"pad":"{"x" * 200}"}}')
        await asyncio.sleep(0)

    asyncio.run(main())
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(100))
    # 100 lines of ~260 bytes: 15 to a write of at most 4 KiB
    assert stream.writes == 7
    assert max(stream.sizes) <= PIPE_BUF


def test_a_character_the_stream_cannot_encode_is_escaped_not_lost() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
    sink = AccessSink(stream)
    sink.append('{"path":"/files/caf\u00e9"}')  # no loop: written at once
    sink.append('{"path":"/files/plain"}')
    lines = raw.getvalue().decode("ascii").splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(',"path":"/files/caf\\u00e9"}')  # a JSON escape: same text once read
    assert json.loads(lines[0])["path"] == "/files/caf\u00e9"
    assert json.loads(lines[1])["path"] == "/files/plain"
