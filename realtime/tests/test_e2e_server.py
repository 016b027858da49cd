"""End to end: two real web processes (the Procfile's launcher, `python -m
dexsite.serve`: uvicorn) and the matcher they hand orders to, on one Redis and one
PostgreSQL, real WebSocket clients, orders
over REST, forms posted as browsers post them.
Both processes must deliver the same events in the same order."""

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import websockets
from django.conf import settings
from django.db import connection

from accounts.services import token_for
from trading.tests.factories import MarketFactory, UserFactory, fund

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not getattr(settings, "REDIS_URL", None),
        reason="two processes share state only through PostgreSQL and Redis",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def servers():
    db = connection.settings_dict
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        REDIS_URL=settings.REDIS_URL,
        DEBUG="true",
        # Throttle counters of this run only: the forms below sign accounts up.
        CACHE_KEY_PREFIX=f"e2e{uuid.uuid4().hex[:10]}",
        THROTTLE_RATE_SIGNUP="1000/hour",
        # As the Procfile runs them: the web processes hand orders to one matcher.
        MATCHER="redis",
        MATCHER_PREFIX=f"e2e{uuid.uuid4().hex[:10]}",
    )
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dexsite.serve",
                "-b",
                "127.0.0.1",
                "-p",
                str(p),
                "dexsite.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for p in ports
    ]
    procs.append(
        subprocess.Popen(
            [sys.executable, "manage.py", "runmatcher"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    )
    deadline = time.time() + 30
    for p in ports:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{p}/api/v1/markets", timeout=1)
                break
            except httpx.HTTPError:
                if time.time() > deadline:
                    raise RuntimeError("the web process did not start") from None
                time.sleep(0.2)
    yield [f"127.0.0.1:{p}" for p in ports]
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=10)
    connection.close()


async def collect(url: str, ready: asyncio.Event, until_seq: int, trades: int, out: list):
    """Read depth and trade messages until the book reached `until_seq` and `trades`
    trades were printed. `ready` is set once the socket is subscribed: the server
    says so after its process has joined the market's group."""
    async with websockets.connect(url) as ws:
        seq = seen_trades = 0
        while seq < until_seq or seen_trades < trades:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 15))
            if msg["type"] == "subscribed":
                ready.set()
            if msg["type"] in ("depth", "trade"):
                out.append(msg)
            if msg["type"] == "depth":
                seq = msg["seq"]
            elif msg["type"] == "trade":
                seen_trades += 1


def test_two_processes_deliver_the_same_events_in_the_same_order(servers):
    MarketFactory()
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "1000000")
    fund(bob, "1000000")
    tokens = [token_for(alice), token_for(bob)]
    a, b = servers
    n_orders = 12

    async def scenario():
        got_a, got_b = [], []
        ready_a, ready_b = asyncio.Event(), asyncio.Event()
        url = "/ws/?market=BTC-PERP&mode=PAPER"
        # Each pair of orders makes two deltas (the ask rests, the bid takes it).
        ta = asyncio.create_task(collect(f"ws://{a}{url}", ready_a, n_orders * 2, n_orders, got_a))
        tb = asyncio.create_task(collect(f"ws://{b}{url}", ready_b, n_orders * 2, n_orders, got_b))
        await asyncio.wait_for(ready_a.wait(), 15)
        await asyncio.wait_for(ready_b.wait(), 15)
        async with httpx.AsyncClient() as http:
            for i in range(n_orders):
                # Alternate the process that takes the order: commits come from both.
                host = (a, b)[i % 2]
                for who, side in ((0, "SELL"), (1, "BUY")):
                    r = await http.post(
                        f"http://{host}/api/v1/trade",
                        headers={"Authorization": f"Token {tokens[who]}"},
                        json={
                            "market": "BTC-PERP",
                            "mode": "PAPER",
                            "side": side,
                            "type": "LIMIT",
                            "price": str(64000 + i),
                            "qty": "0.01",
                        },
                    )
                    assert r.status_code == 201, r.text
            depth = (await http.get(f"http://{a}/api/v1/markets/BTC-PERP/depth?mode=PAPER")).json()
        await asyncio.wait_for(asyncio.gather(ta, tb), 30)
        return got_a, got_b, depth

    got_a, got_b, depth = asyncio.run(scenario())
    strip = lambda msgs: [{k: v for k, v in m.items() if k != "ts"} for m in msgs]  # noqa: E731
    assert strip(got_a) == strip(got_b)
    deltas = [m for m in got_a if m["type"] == "depth"]
    assert deltas[0]["snapshot"] is True
    seqs = [m["seq"] for m in deltas]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "contiguous seq"
    assert len([m for m in got_a if m["type"] == "trade"]) == n_orders
    assert depth["seq"] == seqs[-1] and depth["bids"] == [] and depth["asks"] == []
    assert all(
        m["px"] == str(Decimal(64000 + i))
        for i, m in enumerate(m for m in got_a if m["type"] == "trade")
    )


def test_real_handshakes_origin_and_auth(servers):
    MarketFactory()
    alice, bob = UserFactory(), UserFactory()
    host = servers[0]
    alice_token = token_for(alice)

    async def scenario():
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(f"ws://{host}/ws/", origin="https://evil.example"):
                pass
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(
                f"ws://{host}/ws/", additional_headers={"Authorization": "Token nope"}
            ):
                pass
        async with websockets.connect(
            f"ws://{host}/ws/", additional_headers={"Authorization": f"Token {alice_token}"}
        ) as ws:
            await ws.send(json.dumps({"action": "subscribe", "channel": f"trader.{bob.trader_id}"}))
            msg = json.loads(await ws.recv())
            assert msg["code"] == "FORBIDDEN"
            await ws.send(
                json.dumps({"action": "subscribe", "channel": f"trader.{alice.trader_id}"})
            )
            assert json.loads(await ws.recv())["type"] == "subscribed"

    asyncio.run(scenario())


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_a_form_posted_through_the_web_process_reaches_django_whole(servers, encoding):
    """The server hands POST bodies to the application as they came: a sign-up form,
    posted either way a browser posts forms, creates the account it names."""
    from accounts.models import User

    username = f"form-{encoding}-{uuid.uuid4().hex[:6]}"
    base = f"http://{servers[0]}"
    with httpx.Client(base_url=base, timeout=10) as http:
        page = http.get("/accounts/signup/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        fields = {
            "csrfmiddlewaretoken": token,
            "username": username,
            "password1": "a long and unusual passphrase 7",
            "password2": "a long and unusual passphrase 7",
        }
        if encoding == "urlencoded":
            answer = http.post("/accounts/signup/", data=fields)
        else:
            # httpx sends multipart/form-data when there are files.
            answer = http.post(
                "/accounts/signup/", data=fields, files={"note": ("n.txt", b"x", "text/plain")}
            )
    assert answer.status_code == 302, answer.text[:500]
    assert answer.headers["location"] == "/"
    assert "sessionid" in answer.cookies
    assert User.objects.filter(username=username).exists()


def test_a_socket_closed_for_flooding_ends_cleanly_and_cancels_its_orders(servers):
    """Past the message rate limit the server says why and closes the socket with an
    application close code (4008): the socket
    ends cleanly, and `cancelOnDisconnect` cancels the trader's resting order."""
    from trading.models import Order

    MarketFactory()
    alice = UserFactory()
    fund(alice, "1000000")
    token = token_for(alice)
    host = servers[0]

    async def scenario():
        async with websockets.connect(
            f"ws://{host}/ws/?cancelOnDisconnect=true&mode=PAPER",
            additional_headers={"Authorization": f"Token {token}"},
        ) as ws:
            async with httpx.AsyncClient() as http:
                r = await http.post(
                    f"http://{host}/api/v1/trade",
                    headers={"Authorization": f"Token {token}"},
                    json={
                        "market": "BTC-PERP",
                        "mode": "PAPER",
                        "side": "BUY",
                        "type": "LIMIT",
                        "price": "60000",
                        "qty": "0.01",
                    },
                )
                assert r.status_code == 201, r.text
            for _ in range(200):
                await ws.send(json.dumps({"action": "ping"}))
            said = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    said.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            return r.json()["id"], said, closed.value.rcvd

    order_id, said, close = asyncio.run(scenario())
    assert said[-1]["code"] == "RATE_LIMITED"
    assert close is not None and close.code == 4008
    deadline = time.time() + 10
    while Order.objects.get(pk=order_id).status != "CANCELED":
        assert time.time() < deadline, "the order was not cancelled"
        time.sleep(0.1)


def test_a_storm_of_sockets_from_one_address_is_held_to_its_limit(servers):
    """Hundreds of handshakes at once from one address (an attacker opening sockets in
    parallel, or a reconnect storm): each waits its turn to be counted, none goes
    uncounted, and the address holds exactly WS_MAX_SOCKETS_PER_ADDRESS; once they all
    close at once, every slot is free again."""
    limit, storm = settings.WS_MAX_SOCKETS_PER_ADDRESS, 800
    # An address of its own (all of 127/8 is this machine): no other test's sockets.
    address = ("127.0.0.23", 0)

    async def one(url: str) -> tuple[str, object]:
        ws = await websockets.connect(url, local_addr=address, open_timeout=60)
        # A refused socket is told why and closed at once: the ping may find it closed.
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps({"action": "ping"}))
        said = json.loads(await asyncio.wait_for(ws.recv(), 60))
        return said.get("code") or said["type"], ws

    async def scenario() -> tuple[list[str], list[str]]:
        url = f"ws://{servers[0]}/ws/"
        opened = await asyncio.gather(*(one(url) for _ in range(storm)))
        await asyncio.gather(*(ws.close() for _, ws in opened))
        # Every slot freed: the address may open its whole allowance again at once.
        again = await asyncio.gather(*(one(url) for _ in range(limit)))
        await asyncio.gather(*(ws.close() for _, ws in again))
        return [said for said, _ in opened], [said for said, _ in again]

    first, again = asyncio.run(scenario())
    assert first.count("pong") == limit
    assert first.count("TOO_MANY_SOCKETS") == storm - limit
    assert again == ["pong"] * limit
