"""Bad input at the server (scenario 7): the one-process web server (`python -m
dexsite.serve`: Procfile.dev's `web`, the Procfile's `ws`) refuses a request body past DATA_UPLOAD_MAX_MEMORY_SIZE before it
reads it, by its Content-Length or, chunked, as soon as it passes the limit; and
WebSocket messages past dexsite.serve.WS_MAX_MESSAGE_BYTES as they arrive."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from django.conf import settings
from django.db import connection

from dexsite.serve import WS_MAX_MESSAGE_BYTES

ROOT = Path(__file__).resolve().parents[2]
LIMIT = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
pytestmark = [
    # The tests read and write nothing; the web process needs the test database.
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the web process runs on the test PostgreSQL"
    ),
]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    """A web process on the test database: (host, port, pid)."""
    db = connection.settings_dict
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        DEBUG="true",
    )
    env.pop("REDIS_URL", None)
    argv = [sys.executable, "-m", "dexsite.serve", "-b", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        [*argv, "dexsite.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/markets", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the web process did not start") from None
            time.sleep(0.2)
    yield "127.0.0.1", port, proc.pid
    proc.terminate()
    proc.wait(timeout=10)


def head(host: str, **headers: str) -> bytes:
    lines = [
        "POST /api/v1/auth/token HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(sock: socket.socket) -> bytes:
    """The server's answer on `sock`: its head and its body (by its Content-Length), read
    as they arrive, whatever the client still has in flight."""
    got = b""
    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < _length(got):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _length(raw: bytes) -> int:
    for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def refusal(raw: bytes) -> dict:
    status = raw.partition(b"\r\n")[0]
    assert status.startswith(b"HTTP/1.1 413 "), raw[:200]
    return json.loads(raw.partition(b"\r\n\r\n")[2])["error"]


def test_a_body_declared_too_large_is_refused_before_a_byte_of_it_is_sent(server):
    host, port, _ = server
    with socket.create_connection((host, port), timeout=10) as sock:
        # 300 MB announced, none sent, and a client that waits to be invited.
        sock.sendall(head(host, Content_Length="300000000", Expect="100-continue"))
        raw = answer(sock)
    assert not raw.startswith(b"HTTP/1.1 100")
    error = refusal(raw)
    assert error["code"] == "PAYLOAD_TOO_LARGE" and str(LIMIT) in error["message"]


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(server):
    """An endless chunked upload: the answer comes once the server has read past the
    limit, while the client is still sending; the web process holds none of it."""
    host, port, pid = server
    rss_before = rss_kib(pid)
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    sent = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head(host, Transfer_Encoding="chunked"))
        # Until the server answers; 256 MiB unanswered fails the test.
        while not select.select([sock], [], [], 0)[0]:
            assert sent < 256 * 2**20, "no answer to an endless body"
            sock.sendall(chunk)
            sent += len(chunk)
        raw = answer(sock)
    assert refusal(raw)["code"] == "PAYLOAD_TOO_LARGE"
    # What the server read past the limit, and what the kernel's buffers held on the
    # way: megabytes, not the gigabyte a client could send.
    assert sent < 32 * 2**20, sent
    assert rss_kib(pid) - rss_before < 16 * 1024


def test_bodies_within_the_limit_reach_the_application(server):
    host, port, _ = server
    body = json.dumps({"username": "nobody", "password": "x" * (LIMIT - 100)}).encode()
    assert len(body) <= LIMIT
    json_type = {"Content-Type": "application/json"}
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as http:
        # Whole, then chunked (a generator has no length), on one connection.
        for content in (body, iter([body[: LIMIT // 2], body[LIMIT // 2 :]])):
            r = http.post("/api/v1/auth/token", content=content, headers=json_type)
            # Django parsed the whole of it, and found the password too long.
            assert r.status_code == 400, r.text
            assert r.json()["error"]["field"] == "password", r.text


def test_a_websocket_message_past_the_server_limit_ends_the_socket(server):
    host, port, _ = server

    async def scenario() -> None:
        async with websockets.connect(f"ws://{host}:{port}/ws/", compression=None) as ws:
            await ws.send(json.dumps({"action": "ping", "pad": "x" * WS_MAX_MESSAGE_BYTES}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1009  # message too big
        # Under it, the consumer's own limit: told why, closed with 4008.
        async with websockets.connect(f"ws://{host}:{port}/ws/", compression=None) as ws:
            await ws.send(json.dumps({"action": "ping", "pad": "x" * 5000}))
            said = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert said["code"] == "MESSAGE_TOO_LARGE"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 4008

    asyncio.run(scenario())


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")
