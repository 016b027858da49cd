"""End to end through the router, as production serves the site: nginx on
deploy/nginx.conf in front of the Procfile's `http` role (granian, WSGI) and `ws` role
(uvicorn), and the `matcher` role they hand orders to, on the test PostgreSQL and Redis.
An order placed over HTTP through the router reaches its trader's WebSocket, also
through the router, as an `orderUpdate` and a `fill`."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import httpx
import pytest
import websockets
from django.conf import settings
from django.db import connection

from trust import procs

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not getattr(settings, "REDIS_URL", None),
        reason="the roles share state only through PostgreSQL and Redis",
    ),
    pytest.mark.skipif(
        procs.nginx_path() is None,
        reason="nginx is not installed (Debian's package: make install-nginx)",
    ),
]


@pytest.fixture
def site(tmp_path):
    """A market, two funded traders, and the site with its matcher: (site, traders)."""
    procs.market_create()
    traders = [procs.trader_create(f"router{i}", Decimal("1000000")) for i in range(2)]
    db = connection.settings_dict
    db_url = (
        f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    prefix = f"e2erouter{uuid.uuid4().hex[:10]}"
    # As production behind one proxy: client addresses from the entry nginx adds.
    env = procs.server_env(db_url, prefix, REDIS_URL=settings.REDIS_URL, NUM_PROXIES="1")
    with procs.servers(env, tmp_path, 1, "router") as (web,):
        yield web, traders
    connection.close()


def order(side: str) -> dict[str, str]:
    return {
        "market": procs.SYMBOL,
        "mode": "REAL",
        "side": side,
        "type": "LIMIT",
        "price": str(procs.MID),
        "qty": "0.01",
    }


def test_an_order_over_http_reaches_its_traders_socket_through_the_router(site):
    web, [(_alice, alice_key), (bob, bob_key)] = site
    host = f"127.0.0.1:{web.port}"

    async def scenario() -> tuple[dict, list[dict]]:
        async with httpx.AsyncClient(base_url=f"http://{host}") as http:
            r = await http.post(
                "/api/v1/trade", json=order("SELL"), headers={"Authorization": f"Token {alice_key}"}
            )
            assert r.status_code == 201, r.text
            async with websockets.connect(
                f"ws://{host}/ws/?traderId={bob.trader_id}",
                additional_headers={"Authorization": f"Token {bob_key}"},
                # The site's own origin, as the router passes Host and the scheme on.
                origin=f"http://{host}",
            ) as ws:
                subscribed = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert subscribed["type"] == "subscribed", subscribed
                r = await http.post(
                    "/api/v1/trade",
                    json=order("BUY"),
                    headers={"Authorization": f"Token {bob_key}"},
                )
                assert r.status_code == 201, r.text
                placed = r.json()
                got: list[dict] = []
                kinds: set[str] = set()
                while not {"orderUpdate", "fill"} <= kinds:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    got.append(msg)
                    if msg.get("id") == placed["id"] or msg.get("orderId") == placed["id"]:
                        kinds.add(msg["type"])
        return placed, got

    placed, got = asyncio.run(scenario())
    assert placed["status"] == "FILLED"
    assert all(m["channel"] == f"trader.{bob.trader_id}" for m in got)
    update = next(m for m in got if m["type"] == "orderUpdate" and m["id"] == placed["id"])
    assert update["status"] == "FILLED"
    fill = next(m for m in got if m["type"] == "fill")
    assert fill["orderId"] == placed["id"] and fill["qty"] == "0.01"


def test_the_router_refuses_a_foreign_origin_and_an_oversized_body(site):
    web, [(_alice, alice_key), _] = site
    host = f"127.0.0.1:{web.port}"

    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(f"ws://{host}/ws/", origin="https://evil.example"):
                pass

    asyncio.run(scenario())
    # Refused by nginx before it is passed on, in the API's error shape.
    body = b'{"pad": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + b'"}'
    r = httpx.post(
        f"http://{host}/api/v1/trade",
        content=body,
        headers={"Authorization": f"Token {alice_key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    def chunks():  # no Content-Length: refused as it passes the limit
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    r = httpx.post(
        f"http://{host}/api/v1/trade",
        content=chunks(),
        headers={"Authorization": f"Token {alice_key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and "content-length" not in r.request.headers


def test_the_router_stamps_when_it_passed_a_request_on(site):
    """The `http` role refuses a request that waited past REQUEST_QUEUE_TIMEOUT from the
    router's X-Request-Start stamp: the router replaces a stamp a client sent."""
    web, [(_alice, alice_key), _] = site
    r = httpx.get(
        f"{web.url}/api/v1/balances?mode=REAL",
        headers={"Authorization": f"Token {alice_key}", "X-Request-Start": "t=1000000000.000"},
    )
    assert r.status_code == 200, r.text
