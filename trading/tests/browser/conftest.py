"""One real server for the browser tests: the web role (`dexsite.serve`) in a subprocess on the pytest test
database (PostgreSQL) and a Redis of its own, Debian's Chromium driven by Playwright.

The module's data lives for the whole module (seeded once, flushed at the end), so the
server's per-process caches (engine books, system account ids) stay valid; every test
makes its own traders through the public API.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "a-long-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_redis(url: str) -> str:
    # A database of its own for the resume buffer and the throttle cache; the channel
    # layer's pub/sub is kept apart by CHANNEL_LAYER_PREFIX.
    parts = urlparse(url)
    return urlunparse(parts._replace(path="/14"))


class Server:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=20)
        self.env: dict[str, str] = {}

    def signup(self, prefix: str = "bot") -> dict:
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        r = self.http.post("/api/v1/auth/signup", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        body = r.json()
        body["username"] = name
        return body

    def token(self, username: str) -> str:
        r = self.http.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def call(self, method: str, path: str, token: str, **kw) -> httpx.Response:
        return self.http.request(
            method, f"/api/v1/{path}", headers={"Authorization": f"Token {token}"}, **kw
        )

    def order(self, token: str, **order) -> dict:
        body = {"mode": "PAPER", "type": "LIMIT", **order}
        r = self.call("POST", "trade", token, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def batch(self, token: str, orders: list[dict]) -> list[dict]:
        orders = [{"mode": "PAPER", "type": "LIMIT", **o} for o in orders]
        r = self.call("POST", "trade/batch", token, json={"orders": orders})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert not [x for x in results if "error" in x], results
        return results

    def faucet(self, token: str) -> None:
        r = self.call("POST", "paper/faucet", token)
        assert r.status_code == 200, r.text


def signup_in_page(page, base: str, prefix: str) -> str:
    """A new trader signed up (and so logged in) through the page; returns the name."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    page.goto(f"{base}/accounts/signup/")
    page.fill("#id_username", name)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{base}/")
    return name


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    yield from run_server(django_db_blocker)


def run_server(django_db_blocker, extra_env: dict | None = None):
    """Start the server (with `extra_env` added to its environment), yield it, then stop
    it and flush the database. `Server.env` is its environment, for other processes."""
    if connection.vendor != "postgresql" or not getattr(settings, "REDIS_URL", None):
        pytest.skip("the browser tests run a server on the test PostgreSQL database and Redis")
    missing = [
        d
        for d in ("lightweight-charts", "ethers")
        if not (ROOT / "node_modules" / d / "dist").is_dir()
    ]
    assert not missing, f"node_modules/{missing} missing: run `npm ci` (make test does)"
    with django_db_blocker.unblock():
        call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115
        connections.close_all()
    db = connection.settings_dict
    run_id = uuid.uuid4().hex[:10]
    env = dict(
        os.environ,
        DATABASE_URL=(
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        REDIS_URL=own_redis(settings.REDIS_URL),
        CHANNEL_LAYER_PREFIX=f"browser{run_id}",
        CACHE_KEY_PREFIX=f"browser{run_id}",
        DEBUG="true",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
        # Each test signs traders up and logs them in from 127.0.0.1.
        THROTTLE_RATE_SIGNUP="10000/hour",
        THROTTLE_RATE_LOGIN_IP="10000/hour",
        THROTTLE_RATE_LOGIN_ACCOUNT="10000/hour",
        **(extra_env or {}),
    )
    # The resume buffer outlives a run; an old run's deltas must not be replayed.
    redis_client = redis.Redis.from_url(env["REDIS_URL"])
    for key in redis_client.scan_iter("dex:deltas:*"):
        redis_client.delete(key)
    redis_client.close()
    port = free_port()
    (ROOT / ".pytest_cache").mkdir(exist_ok=True)  # a fresh clone has none yet
    log = open(ROOT / ".pytest_cache" / "browser-server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dexsite.serve",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "dexsite.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 40
    while True:
        try:
            httpx.get(f"{base}/api/v1/markets", timeout=2)
            break
        except httpx.HTTPError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                # The seeded rows are committed: leave the database as the next
                # module expects it.
                with django_db_blocker.unblock():
                    call_command("flush", interactive=False, verbosity=0)
                raise RuntimeError("the server did not start; see .pytest_cache/browser-server.log")
            time.sleep(0.2)
    srv = Server(base)
    srv.env = env
    try:
        yield srv
    finally:
        srv.http.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)
            # Django keeps a connection per context, and Playwright's greenlets make
            # contexts of their own: the per-test ones are out of reach here. The
            # server is gone, so what is left on the test database is ours to close.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            connections.close_all()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; Django then
    # refuses database calls here unless told that this thread is not async code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield b
            b.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def screenshots_dir(tmp_path_factory) -> Path:
    """Where the layout screenshots go: docs/screenshots/ when SCREENSHOTS=1 (make
    screenshots), else a temporary folder so a test run leaves the tree clean."""
    if os.environ.get("SCREENSHOTS") == "1":
        path = ROOT / "docs" / "screenshots"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")
