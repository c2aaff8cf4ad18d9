"""Terminal output of des-pack: progress (a bar on a terminal, log lines otherwise) and the
summary. No typer here."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ._options import ProgressEvent
from ._report import PackReport

__all__ = ["ProgressDisplay", "format_bytes", "format_summary"]


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_summary(report: PackReport) -> str:
    secs = report.elapsed_seconds
    rate = report.bytes_in / secs if secs > 0 else 0.0
    rows = [
        ("files packed", str(report.files)),
        ("bytes in", f"{report.bytes_in} ({format_bytes(report.bytes_in)})"),
        ("bytes out", f"{report.bytes_out} ({format_bytes(report.bytes_out)})"),
        ("ratio", f"{report.ratio:.2f}x"),
        ("shards written", str(report.shards_written)),
        ("shards appended", str(report.shards_appended)),
        ("shards skipped", f"{report.shards_skipped} (already complete)"),
        ("already present", str(len(report.duplicates))),
        ("failed", str(len(report.failures))),
        ("time", f"{secs:.2f} s ({format_bytes(rate)}/s)"),
    ]
    if report.blocks:
        rows.insert(4, ("solid blocks", f"{report.blocks} ({report.block_files} files)"))
    lines = [f"{name + ':':<17}{value}" for name, value in rows]
    return "\n".join(lines)


class ProgressDisplay:
    """Receives ``ProgressEvent``s: a rich bar on a terminal, plain lines per shard otherwise."""

    def __init__(self, stream: TextIO | None = None, *, bar: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self._progress: Any = None
        self._task: Any = None
        self._started = time.monotonic()
        self._last_line = -1e9

    def __enter__(self) -> ProgressDisplay:
        if self.bar:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )
            except ImportError:  # pragma: no cover - rich comes with typer
                self.bar = False
                return self
            self._progress = Progress(
                TextColumn("{task.fields[files]} files"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("pack", total=None, files="0")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=event.bytes_done,
                total=event.bytes_total,
                files=f"{event.files_done}/{event.files_total}",
            )
            return
        if event.shard_key is not None:
            now = time.monotonic()
            last = event.files_done >= event.files_total
            if event.shard_status == "written" and not last and now - self._last_line < 1.0:
                return
            self._last_line = now
            elapsed = now - self._started
            print(
                f"des-pack: {event.shard_status} {event.shard_key} "
                f"[{event.files_done}/{event.files_total} files, "
                f"{format_bytes(event.bytes_done)}/{format_bytes(event.bytes_total)}, "
                f"{elapsed:.1f} s]",
                file=self.stream,
                flush=True,
            )
