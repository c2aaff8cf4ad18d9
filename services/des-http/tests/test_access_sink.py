"""The access lines written under the service's own logging (``configure_logging``): the same
JSON as the ``logging`` path's formatter, one write per event-loop turn, nothing lost."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

from des_http._logging import ACCESS_LOGGER, AccessSink, JsonFormatter, format_ts
from hypothesis import given, settings
from hypothesis import strategies as st


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


_text = st.text(max_size=40)
_fields = st.fixed_dictionaries(
    {
        "event": st.just("access"),
        "request_id": st.text("0123456789abcdef", min_size=32, max_size=32),
        "method": st.sampled_from(["GET", "HEAD", "POST"]),
        "path": _text,
        "query": _text,
        "status": st.integers(100, 599),
        "bytes": st.integers(0, 2**63),
        "duration_ms": st.floats(0, 1e6, allow_nan=False),
        "client": _text,
    },
    optional={"principal": _text, "error": _text},
)


@settings(max_examples=200)
@given(fields=_fields, created=st.floats(0, 4e9, allow_nan=False))
def test_a_sink_line_is_the_formatters_line(fields: dict[str, Any], created: float) -> None:
    stream = CountingStream()
    sink = AccessSink(stream)
    try:
        record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "access", None, None)
        record.created = created
        record.fields = fields
        expected = JsonFormatter().format(record)
        sink.write(fields)  # no loop runs: written at once
        line = stream.getvalue()
        assert line.endswith("\n")
        assert line.count("\n") == 1
        got = json.loads(line)
        want = json.loads(expected)
        assert list(got) == list(want)  # the same keys in the same order
        got.pop("ts")
        want.pop("ts")
        assert got == want
    finally:
        sink.flush()


def test_timestamps_match_isoformat_in_milliseconds() -> None:
    from datetime import UTC, datetime

    for created in (0.0, 1.0005, 1733616000.999, 1733616001.0, 1733616001.1234):
        want = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert format_ts(created) == want


def test_lines_of_one_loop_turn_leave_in_one_write_at_its_end() -> None:
    stream = CountingStream()
    sink = AccessSink(stream)

    async def main() -> None:
        for i in range(5):
            sink.write({"event": "access", "n": i})
        assert stream.writes == 0  # held until the turn ends
        await asyncio.sleep(0)
        assert stream.writes == 1
        sink.write({"event": "access", "n": 5})
        await asyncio.sleep(0)
        assert stream.writes == 2

    asyncio.run(main())
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["n"] for line in lines] == [0, 1, 2, 3, 4, 5]
    assert {(line["logger"], line["level"]) for line in lines} == {(ACCESS_LOGGER, "info")}


def test_pending_lines_are_written_by_flush() -> None:
    stream = CountingStream()
    sink = AccessSink(stream)

    async def main() -> None:
        sink.write({"event": "access", "n": 1})
        sink.flush()  # as at exit, before the loop ran again

    asyncio.run(main())
    assert json.loads(stream.getvalue())["n"] == 1
    sink.flush()
    assert stream.writes == 1
