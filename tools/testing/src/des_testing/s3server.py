"""An S3 server (moto's server mode) run as its own process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


class DesTestingError(RuntimeError):
    """Base of every error des_testing raises: a test server that is missing or does not
    start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: Which server this is ("moto" or "seaweedfs"), for tests that differ by server.
    name: str = "moto"

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
        """Forget every bucket and object (moto's reset endpoint)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _Exited(DesTestingError):
    """The server process exited while starting (e.g. its free port was taken meanwhile)."""


#: How many times a server on a free port is started before giving up (another process, e.g.
#: another pytest-xdist worker's server, may take the port between its choice and its use).
START_ATTEMPTS = 3


def start_s3_server(port: int | None = None, timeout: float = 60.0) -> S3Server:
    """Start ``moto_server`` on 127.0.0.1 (on ``port``, else a free port, tried again on a
    new port if the server exits while starting) and wait until it answers."""
    if port is not None:
        return _start_moto(port, timeout)
    for attempt in range(START_ATTEMPTS):
        try:
            return _start_moto(free_port(), timeout)
        except _Exited:
            if attempt == START_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _start_moto(port: int, timeout: float) -> S3Server:
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    server = S3Server(port, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _Exited(f"moto_server exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(f"{server.endpoint_url}/moto-api/", timeout=1).read()
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    server.stop()
    raise DesTestingError(f"moto_server did not answer on port {port} within {timeout} s")


def delete_bucket(client: Any, bucket: str) -> None:
    """Delete ``bucket`` with every object version, delete marker and pending upload in it
    (a test's cleanup; works on any S3 server)."""
    from botocore.exceptions import ClientError

    try:
        for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            if doomed:
                client.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise
