"""A real browser (Debian's chromium, headless) on a page of another origin reads files from
des-http (a real server process): through CORS with a bearer token and a Range, through a
signed link without a token, and is refused once the link has expired. A page on an origin
not in DES_CORS_ORIGINS cannot read the answer at all.

The browser is required in CI (``.ci/run`` installs it and sets DES_REQUIRE_BROWSER=1, which
turns the skip below into a failure)."""

from __future__ import annotations

import hashlib
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from des_packer import PackOptions, pack, read_manifest
from des_routing import sign_link, signed_link_path
from des_testing import free_port, stop_process

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

KEY = "browser-test-link-key-0123456789abcdef"
TOKEN = "browser-read-token"
CREATED = "2024-06-01T08:00:00Z"
DATA = bytes(range(256)) * 3 + b"tail"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("DES_REQUIRE_BROWSER") == "1":
        pytest.fail("DES_REQUIRE_BROWSER=1 but no chromium: apt-get install -y chromium")
    pytest.skip("no chromium on PATH (apt-get install -y chromium); required in CI")


PAGE = """<!doctype html>
<html><body><pre id="out">pending</pre>
<script>
const SVC = %(svc)s;
async function hex(r) {
  const b = new Uint8Array(await r.arrayBuffer());
  return Array.from(b, x => x.toString(16).padStart(2, "0")).join("");
}
async function run() {
  const out = {};
  try {
    let r = await fetch(SVC + %(plain)s,
      {headers: {"Authorization": "Bearer %(token)s", "Range": "bytes=4-13"}});
    out.cors = {status: r.status, etag: r.headers.get("ETag"),
      range: r.headers.get("Content-Range"), length: r.headers.get("Content-Length"),
      body: await hex(r)};
    r = await fetch(SVC + %(plain)s);
    out.no_token = {status: r.status};
    r = await fetch(SVC + %(link)s);
    out.link = {status: r.status, length: r.headers.get("Content-Length"), body: await hex(r)};
    r = await fetch(SVC + %(expired)s);
    out.expired = {status: r.status, body: await r.text()};
  } catch (e) {
    out.error = String(e);
  }
  document.getElementById("out").textContent = JSON.stringify(out);
}
run();
</script></body></html>
"""


@contextmanager
def serve_dir(root: Path) -> Iterator[str]:
    """A static file server on 127.0.0.1 (the page's origin)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()), partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def des_http(tmp: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    log = tmp / "des-http.log"
    exe = Path(sys.executable).parent / "des-http"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"des-http exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"des-http did not answer /health:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)


def run_page(chromium: str, url: str, profile: Path) -> dict[str, Any]:
    """Load ``url`` in headless chromium, let its fetches finish, and return what it wrote."""
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    m = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert m, f"no result in the page (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    text = html.unescape(m.group(1))
    assert text != "pending", f"the page's fetches did not finish:\n{done.stderr}"
    result: dict[str, Any] = json.loads(text)
    return result


def test_browser_reads_through_cors_and_signed_links(tmp_path: Path) -> None:
    chromium = _chromium()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "photo.bin").write_bytes(DATA)
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps(
            [
                {
                    "uid": "img-1",
                    "created_at": CREATED,
                    "size_bytes": len(DATA),
                    "source_path": "src/photo.bin",
                    "content_type": "application/octet-stream",
                }
            ]
        )
    )
    base = tmp_path / "des"
    pack(read_manifest(manifest), str(base), PackOptions(n_bits=4))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()} page\n")
    pages = tmp_path / "pages"
    pages.mkdir()
    with serve_dir(pages) as page_origin, serve_dir(pages) as other_origin:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DES_", "AWS_"))}
        env.update(
            DES_BACKEND="local",
            DES_BASE_DIR=str(base),
            DES_N_BITS="4",
            DES_AUTH_TOKENS_FILE=str(tokens),
            DES_CORS_ORIGINS=page_origin,
            DES_LINK_KEY=KEY,
        )
        with des_http(tmp_path, env) as svc:
            key = KEY.encode()
            link = signed_link_path(key, "img-1", CREATED, int(time.time()) + 3600)
            expired_at = int(time.time()) - 60
            expired = (
                f"/files/img-1?created_at={CREATED}&expires={expired_at}"
                f"&sig={sign_link(key, 'img-1', '20240601', expired_at)}"
            )
            (pages / "index.html").write_text(
                PAGE
                % {
                    "svc": json.dumps(svc),
                    "plain": json.dumps(f"/files/img-1?created_at={CREATED}"),
                    "token": TOKEN,
                    "link": json.dumps(link),
                    "expired": json.dumps(expired),
                }
            )
            got = run_page(chromium, f"{page_origin}/index.html", tmp_path / "profile-1")
            assert "error" not in got, got
            assert got["cors"]["status"] == 206
            assert bytes.fromhex(got["cors"]["body"]) == DATA[4:14]
            assert got["cors"]["range"] == f"bytes 4-13/{len(DATA)}"
            assert got["cors"]["length"] == "10"
            assert got["cors"]["etag"].startswith('"des-')
            assert got["no_token"] == {"status": 401}
            assert got["link"]["status"] == 200
            assert bytes.fromhex(got["link"]["body"]) == DATA
            assert got["link"]["length"] == str(len(DATA))
            assert got["expired"]["status"] == 403
            assert "this link expired at" in json.loads(got["expired"]["body"])["detail"]
            # The same page from an origin not in DES_CORS_ORIGINS cannot read anything.
            got = run_page(chromium, f"{other_origin}/index.html", tmp_path / "profile-2")
            assert got.get("error") == "TypeError: Failed to fetch", got
            log = (tmp_path / "des-http.log").read_text()
            assert link.split("sig=")[1] not in log
