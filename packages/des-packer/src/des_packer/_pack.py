"""The packer's entry points: plan, open the destination, run the shards.

The work is split by job: ``_prepare`` reads, checksums and compresses work items (any
thread), ``_shards`` writes them shard by shard and publishes each one, ``_pipeline`` keeps
the workers ahead of the writer with the bytes in flight bounded, and ``_processes`` runs
that pipeline in several processes at once, each claiming whole shards. Whatever the number
of workers and processes, each shard gets the same bytes (R5); memory holds the plan (the
manifest's metadata) and at most ``max_inflight_bytes`` of file contents; big files are
streamed to a staging file, never held whole.

With ``block_size`` (``--block-size``), :func:`des_packer._blocks.plan_work` turns each shard's
files into work items, single files and solid blocks, from the manifest alone; a block is one
item, read and compressed by one worker and charged to the in-flight budget with all its
members' bytes, so a block adds at most ``block_size`` to the bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from ._dest import Destination, LocalDestination
from ._errors import OutputFailed, PackConfigError, describe_os_error
from ._manifest import ManifestEntry
from ._options import PackOptions
from ._pipeline import PackTuning, run_pipeline
from ._plan import PackPlan, plan_shards
from ._prepare import Preparer
from ._report import PackReport
from ._shards import ShardSink, default_workers
from ._sources import SourceReader

__all__ = ["PackTuning", "default_workers", "open_destination", "pack", "pack_plan"]


def open_destination(output: str, options: PackOptions) -> Destination:
    """A destination for ``output``: a directory, ``s3://bucket/prefix`` or zones."""
    from ._store_check import check_destination_layout

    check_destination_layout(output, options)  # the store's layout record, once per pack
    if options.zones_config or output.startswith("s3://"):
        from ._s3dest import open_s3_destination

        dest: Destination = open_s3_destination(output, options)
        return dest
    if "://" in output:
        raise PackConfigError(
            f"--output-dir {output!r}: unsupported scheme; give a directory or s3://bucket/prefix"
        )
    if not output:
        raise PackConfigError("--output-dir is empty; give a directory or s3://bucket/prefix")
    return LocalDestination(output, fsync=options.fsync)


def pack(
    entries: Iterable[ManifestEntry], output: str, options: PackOptions | None = None
) -> PackReport:
    """Plan ``entries`` and pack them into shards under ``output``.

    ``output`` is a directory or ``s3://bucket/prefix`` (or ignored for the bucket choice when
    ``options.zones_config`` names a zones file). Raises ``ManifestError`` (bad or duplicate
    entries, with ``on_error="fail"``), ``PackConfigError``, or ``PackAborted`` (a file failed
    with ``on_error="fail"``; shards finished before it stay complete and readable).
    """
    opts = options or PackOptions()
    opts.validate()
    plan = plan_shards(
        entries,
        n_bits=opts.n_bits,
        shard_range=opts.shard_range,
        on_duplicate="skip" if opts.on_error == "skip" else "fail",
    )
    return pack_plan(plan, output, opts)


def pack_plan(
    plan: PackPlan,
    output: str,
    options: PackOptions | None = None,
    *,
    tuning: PackTuning | None = None,
) -> PackReport:
    """Write the shards of ``plan`` (see :func:`pack`); ``tuning`` changes the pipeline's
    batch sizes (speed only, never the output)."""
    opts = options or PackOptions()
    opts.validate()
    try:
        dest = open_destination(output, opts)
    except OSError as exc:  # the layout record or the directory could not be written
        raise OutputFailed(describe_os_error(exc, output), PackReport()) from exc
    try:
        return _run(plan, dest, opts, tuning or PackTuning())
    finally:
        dest.close()


def process_count(opts: PackOptions, plan: PackPlan, dest: Destination) -> int:
    """How many processes pack ``plan``: ``opts.processes``, or with ``None`` one per CPU
    for a local destination (never more than there are shards); 1 where fork is missing or
    the destination is remote (its uploads wait on the network, threads suffice)."""
    from ._processes import fork_available

    if not isinstance(dest, LocalDestination) or not fork_available():
        return 1
    wanted = opts.processes if opts.processes is not None else (os.cpu_count() or 1)
    return max(1, min(wanted, len(plan.shards)))


def _run(plan: PackPlan, dest: Destination, opts: PackOptions, tuning: PackTuning) -> PackReport:
    started = time.monotonic()
    processes = process_count(opts, plan, dest)
    if processes > 1:
        from ._processes import pack_in_processes

        return pack_in_processes(
            plan, dest, opts, processes=processes, tuning=tuning, started=started
        )
    sources = SourceReader(endpoint_url=opts.s3_endpoint_url, region=opts.s3_region)
    sink = ShardSink(
        dest,
        opts,
        sources,
        files_total=plan.files,
        bytes_total=plan.bytes,
        progress=opts.progress,
        started=started,
    )
    sink.totals.failures.extend(plan.rejected)
    try:
        run_pipeline(
            plan.shards,
            sink,
            Preparer(dest, opts, sources),
            workers=opts.workers or default_workers(),
            max_inflight_bytes=opts.max_inflight_bytes,
            tuning=tuning,
        )
    except OSError as exc:  # writing the output failed: say where and how to fix it
        report = sink.totals.report(started)
        raise OutputFailed(describe_os_error(exc, dest.describe()), report) from exc
    finally:
        sink.shutdown()
    return sink.totals.report(started)
