"""The consumer through Channels' WebsocketCommunicator, on the configured layer."""

import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import transaction

from realtime.consumers import GAP_WAIT_SECONDS as GAP_WAIT
from realtime.consumers import MAX_MESSAGES_BURST
from realtime.tests.conftest import communicator
from trading.orders.cancel import order_cancel
from trading.orders.place import order_place
from trading.selectors import depth_get
from trading.tests.factories import MarketFactory, UserFactory, fund

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
D = Decimal


@database_sync_to_async
def setup_market_and_traders():
    MarketFactory()
    a, b = UserFactory(), UserFactory()
    fund(a, "100000")
    fund(b, "100000")
    return a, b


@database_sync_to_async
def place(user, side, price, qty, **kw):
    body, _ = order_place(
        trader=user,
        market="BTC-PERP",
        mode="PAPER",
        side=side,
        type="MARKET" if price is None else "LIMIT",
        price=None if price is None else D(price),
        qty=D(qty),
        **kw,
    )
    return body


@database_sync_to_async
def token_of(user):
    from accounts.services import token_for

    return token_for(user)


async def recv(comm, timeout=3):
    return json.loads(await comm.receive_from(timeout=timeout))


async def recv_until(comm, type_, timeout=3):
    while True:
        msg = await recv(comm, timeout)
        if msg["type"] == type_:
            return msg


async def test_subscribe_gets_snapshot_then_contiguous_deltas_and_trades(layer):
    a, b = await setup_market_and_traders()
    await place(a, "SELL", "64000", "0.5")
    comm = communicator("/ws/?market=BTC-PERP&mode=PAPER")
    connected, _ = await comm.connect()
    assert connected
    assert (await recv(comm))["type"] == "subscribed"
    snap = await recv(comm)
    assert snap["type"] == "depth" and snap["snapshot"] is True
    assert snap["seq"] == 1 and snap["asks"] == [["64000", "0.5"]]
    assert snap["channel"] == "market.BTC-PERP.paper"

    taker = await place(b, "BUY", None, "0.2")
    delta = await recv_until(comm, "depth")
    assert (delta["snapshot"], delta["seq"], delta["asks"]) == (False, 2, [["64000", "0.3"]])
    trade = await recv_until(comm, "trade")
    assert (trade["px"], trade["qty"], trade["side"]) == ("64000", "0.2", "BUY")
    # The trade's own time, as REST gives it, not the time it was published.
    assert trade["ts"] == taker["fills"][0]["ts"]
    await comm.disconnect()


async def test_a_trade_is_followed_by_the_markets_ticker_read_after_the_commit(layer):
    """The ticker is read by the after-commit reader (not by the thread that committed,
    which in a matcher writes every book it owns): it shows the trade's price and
    volume, once for trades within one tick."""
    a, b = await setup_market_and_traders()
    await place(a, "SELL", "64000", "0.5")
    comm = communicator("/ws/?market=BTC-PERP&mode=PAPER")
    assert (await comm.connect())[0]
    await place(b, "BUY", None, "0.1")
    await place(b, "BUY", None, "0.2")
    ticker = await recv_until(comm, "ticker")
    while ticker["volume24h"] != "0.3":  # both trades (a tick may fall between them)
        ticker = await recv_until(comm, "ticker")
    assert (ticker["symbol"], ticker["mode"], ticker["lastPrice"]) == ("BTC-PERP", "PAPER", "64000")
    assert ticker["channel"] == "market.BTC-PERP.paper"
    await comm.disconnect()


async def test_trader_channel_is_private_and_carries_private_events(layer):
    a, b = await setup_market_and_traders()
    comm = communicator(token=await token_of(a))
    assert (await comm.connect())[0]
    await comm.send_json_to({"action": "subscribe", "channel": f"trader.{b.trader_id}"})
    err = await recv(comm)
    assert (err["type"], err["code"]) == ("error", "FORBIDDEN")
    await comm.send_json_to({"action": "subscribe", "channel": f"trader.{a.trader_id}"})
    assert (await recv(comm))["type"] == "subscribed"
    placed = await place(a, "SELL", "64000", "0.5")
    update = await recv_until(comm, "orderUpdate")
    assert update["id"] == placed["id"] and update["mode"] == "PAPER" and update["status"] == "NEW"
    # The message's type is the event's; the order's own type travels as orderType.
    assert (update["type"], update["orderType"]) == ("orderUpdate", "LIMIT")
    balance = await recv_until(comm, "balanceUpdate")
    assert balance["asset"] == "USDC" and balance["locked"] != "0"
    taker = await place(b, "BUY", None, "0.1")
    fill = await recv_until(comm, "fill")
    assert fill["liquidity"] == "MAKER" and fill["qty"] == "0.1"
    assert fill["ts"] == taker["fills"][0]["ts"]
    position = await recv_until(comm, "positionUpdate")
    assert position["side"] == "SHORT" and position["size"] == "0.1"
    await comm.disconnect()


async def test_anonymous_cannot_read_a_trader_channel(layer):
    a, _ = await setup_market_and_traders()
    comm = communicator(f"/ws/?traderId={a.trader_id}")
    assert (await comm.connect())[0]
    err = await recv(comm)
    assert err["code"] == "FORBIDDEN"
    await comm.disconnect()


async def test_foreign_origin_is_refused(layer):
    comm = communicator(origin="https://evil.example")
    connected, _ = await comm.connect()
    assert not connected
    ok = communicator(origin="http://localhost:8000")
    assert (await ok.connect())[0]
    await ok.disconnect()


@pytest.mark.parametrize(
    ("origin", "host", "headers", "allowed"),
    [
        # The page's origin is the socket's own: scheme, host and port.
        ("http://localhost:8000", "localhost:8000", [], True),
        ("http://localhost:3000", "localhost:8000", [], False),
        ("http://127.0.0.1:6666", "localhost:8000", [], False),
        ("https://localhost:8000", "localhost:8000", [], False),
        ("http://localhost", "localhost:8000", [], False),
        # Behind a TLS proxy that says so, the page is https.
        ("https://localhost", "localhost", [(b"x-forwarded-proto", b"https")], True),
        ("http://localhost", "localhost", [(b"x-forwarded-proto", b"https")], False),
        # A Host outside ALLOWED_HOSTS has no origin of ours.
        ("http://evil.example", "evil.example", [], False),
        # Trusted elsewhere: exactly, or any subdomain of a wildcard.
        ("https://app.example.com", "localhost:8000", [], True),
        ("https://eu.trade.example.com", "localhost:8000", [], True),
        ("http://eu.trade.example.com", "localhost:8000", [], False),
        ("https://example.com.evil", "localhost:8000", [], False),
    ],
)
async def test_origin_must_be_the_sites_own_or_trusted(
    layer, settings, origin, host, headers, allowed
):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.trade.example.com"]
    comm = communicator(origin=origin, host=host, headers=headers)
    assert (await comm.connect())[0] is allowed
    await comm.disconnect()


async def test_bad_token_is_refused(layer):
    comm = communicator(token="not-a-token")
    assert not (await comm.connect())[0]


async def test_bad_messages_get_errors_and_the_socket_stays_open(layer):
    await setup_market_and_traders()
    comm = communicator()
    assert (await comm.connect())[0]
    for payload, code, channel in [
        ("not json", "BAD_MESSAGE", None),
        ("[1]", "BAD_MESSAGE", None),
        ('{"action": "dance"}', "BAD_MESSAGE", None),
        ('{"action": "subscribe"}', "BAD_MESSAGE", None),
        ('{"action": "subscribe", "channel": 5}', "BAD_MESSAGE", None),
        ('{"action": "unsubscribe", "channel": ["x"]}', "BAD_MESSAGE", None),
        ('{"action": "subscribe", "channel": "market.NOPE"}', "UNKNOWN_CHANNEL", "market.NOPE"),
        ('{"action": "subscribe", "channel": "weird"}', "UNKNOWN_CHANNEL", "weird"),
        (
            '{"action": "subscribe", "channel": "market.BTC-PERP", "sinceSeq": -1}',
            "BAD_MESSAGE",
            "market.BTC-PERP",
        ),
        (
            '{"action": "unsubscribe", "channel": "market.BTC-PERP"}',
            "UNKNOWN_CHANNEL",
            "market.BTC-PERP",
        ),
    ]:
        await comm.send_to(text_data=payload)
        msg = await recv(comm)
        # Flat, as every message: type, channel (null when none is named) and ts.
        assert (msg["type"], msg["code"], msg["channel"]) == ("error", code, channel), payload
        assert isinstance(msg["ts"], int) and msg["message"]
    await comm.send_json_to({"action": "ping"})
    pong = await recv(comm)
    assert (pong["type"], pong["channel"]) == ("pong", None) and isinstance(pong["ts"], int)
    await comm.disconnect()


async def test_oversize_message_and_flooding_close_with_4008(layer):
    comm = communicator()
    assert (await comm.connect())[0]
    await comm.send_to(text_data=json.dumps({"action": "ping", "pad": "x" * 5000}))
    err = await recv(comm)
    assert err["code"] == "MESSAGE_TOO_LARGE"
    assert (await comm.receive_output(timeout=2)) == {"type": "websocket.close", "code": 4008}

    flood = communicator()
    assert (await flood.connect())[0]
    # Far past the burst and 20 a second, even on a slow machine where the bucket
    # refills meanwhile.
    for _ in range(200):
        await flood.send_json_to({"action": "ping"})
    seen = []
    while True:
        out = await flood.receive_output(timeout=3)
        if out["type"] == "websocket.close":
            assert out["code"] == 4008
            break
        seen.append(json.loads(out["text"]))
    pongs = [m["type"] for m in seen].count("pong")
    assert MAX_MESSAGES_BURST <= pongs < 200
    assert seen[-1]["code"] == "RATE_LIMITED"


async def test_too_many_channels(layer):
    @database_sync_to_async
    def markets():
        for i in range(17):
            MarketFactory(symbol=f"M{i}-PERP")

    await markets()
    channels = [
        name
        for i in range(17)
        for name in (f"market.M{i}-PERP", f"market.M{i}-PERP.paper", f"admin.M{i}-PERP")
    ]
    comm = communicator()
    assert (await comm.connect())[0]
    # All at once: a client may subscribe to every channel it may hold in one burst.
    for name in channels[:50]:
        await comm.send_json_to({"action": "subscribe", "channel": name})
        msg = await recv(comm)
        assert msg["type"] == "subscribed", msg
        if not name.startswith("admin."):
            assert (await recv(comm))["snapshot"] is True
    await comm.send_json_to({"action": "subscribe", "channel": channels[50]})
    assert (await recv(comm))["code"] == "TOO_MANY_CHANNELS"
    assert (await comm.receive_output(timeout=2)) == {"type": "websocket.close", "code": 4008}


async def test_resume_replays_missed_deltas_or_sends_a_snapshot(layer):
    a, _ = await setup_market_and_traders()
    for px in ("64000", "64001", "64002"):
        await place(a, "SELL", px, "0.1")
    comm = communicator()
    assert (await comm.connect())[0]
    await comm.send_json_to(
        {"action": "subscribe", "channel": "market.BTC-PERP.paper", "sinceSeq": 1}
    )
    assert (await recv(comm))["type"] == "subscribed"
    replay = [await recv(comm), await recv(comm)]
    assert [(m["snapshot"], m["seq"]) for m in replay] == [(False, 2), (False, 3)]
    assert replay[1]["asks"] == [["64002", "0.1"]]
    # A seq the buffer no longer holds (here: one from the future) gets a snapshot.
    await comm.send_json_to({"action": "subscribe", "channel": "market.BTC-PERP", "sinceSeq": 99})
    assert (await recv(comm))["type"] == "subscribed"
    snap = await recv(comm)
    assert snap["snapshot"] is True and snap["seq"] == 0
    await comm.disconnect()


async def test_unsubscribe_stops_delivery(layer):
    a, _ = await setup_market_and_traders()
    comm = communicator("/ws/?market=BTC-PERP&mode=PAPER")
    assert (await comm.connect())[0]
    await recv(comm)
    await recv(comm)
    await comm.send_json_to({"action": "unsubscribe", "channel": "market.BTC-PERP.paper"})
    assert (await recv(comm))["type"] == "unsubscribed"
    await place(a, "SELL", "64000", "0.1")
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()


async def test_nothing_is_sent_for_a_rolled_back_order(layer):
    a, _ = await setup_market_and_traders()
    comm = communicator("/ws/?market=BTC-PERP&mode=PAPER")
    assert (await comm.connect())[0]
    await recv(comm)
    await recv(comm)

    @database_sync_to_async
    def place_then_fail():
        try:
            with transaction.atomic():
                order_place(
                    trader=a,
                    market="BTC-PERP",
                    mode="PAPER",
                    side="SELL",
                    type="LIMIT",
                    price=D("64000"),
                    qty=D("0.1"),
                )
                raise RuntimeError("rollback")
        except RuntimeError:
            pass

    await place_then_fail()
    assert await comm.receive_nothing(timeout=0.5)
    # The next real order continues the seq without a hole.
    await place(a, "SELL", "64000", "0.1")
    delta = await recv_until(comm, "depth")
    assert delta["seq"] == 1
    await comm.disconnect()


async def test_out_of_order_deltas_are_reordered(layer):
    await setup_market_and_traders()
    comm = communicator("/ws/?market=BTC-PERP")
    assert (await comm.connect())[0]
    await recv(comm)
    assert (await recv(comm))["seq"] == 0
    from realtime.broadcast import message

    def delta(seq):
        event = message(
            "depth", "market.BTC-PERP", {"snapshot": False, "seq": seq, "bids": [], "asks": []}
        )
        event["seq"] = seq
        return event

    await layer.group_send("market.BTC-PERP", delta(2))
    await layer.group_send("market.BTC-PERP", delta(1))
    await layer.group_send("market.BTC-PERP", delta(1))
    got = [(await recv(comm))["seq"], (await recv(comm))["seq"]]
    assert got == [1, 2]
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_a_gap_that_never_fills_triggers_a_fresh_snapshot(layer):
    await setup_market_and_traders()
    comm = communicator("/ws/?market=BTC-PERP")
    assert (await comm.connect())[0]
    await recv(comm)
    await recv(comm)
    from realtime.broadcast import message

    event = message(
        "depth", "market.BTC-PERP", {"snapshot": False, "seq": 5, "bids": [], "asks": []}
    )
    event["seq"] = 5
    await layer.group_send("market.BTC-PERP", event)
    snap = await recv(comm, timeout=3)
    assert snap["snapshot"] is True
    await comm.disconnect()


async def test_cancel_on_disconnect(layer):
    a, _ = await setup_market_and_traders()
    placed = await place(a, "BUY", "60000", "0.1")
    comm = communicator("/ws/?cancelOnDisconnect=true", token=await token_of(a))
    assert (await comm.connect())[0]
    # Returns once the consumer has finished, its disconnect handler (which cancels)
    # included; past the timeout it raises.
    await comm.disconnect(timeout=10)

    @database_sync_to_async
    def status():
        from trading.models import Order

        return Order.objects.get(pk=placed["id"]).status

    assert await status() == "CANCELED"


async def test_ticket_is_single_use(layer):
    a, _ = await setup_market_and_traders()

    @database_sync_to_async
    def ticket():
        from rest_framework.test import APIClient

        from accounts.services import token_for

        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Token {token_for(a)}")
        return c.post("/api/v1/ws-ticket").json()["ticket"]

    t = await ticket()
    comm = communicator(f"/ws/?ticket={t}&traderId={a.trader_id}")
    assert (await comm.connect())[0]
    assert (await recv(comm))["type"] == "subscribed"
    await comm.disconnect()
    again = communicator(f"/ws/?ticket={t}")
    assert not (await again.connect())[0]


async def test_a_ticket_is_worth_no_more_than_the_key_that_asked_for_it(layer):
    """A ticket asked for with an API key: refused at the handshake once the key is
    revoked; a socket opened with it stops private deliveries when the key goes."""
    a, _ = await setup_market_and_traders()

    @database_sync_to_async
    def ticket_and_key():
        from rest_framework.test import APIClient

        from accounts.models import ApiKey
        from accounts.services import token_for

        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Token {token_for(a)}")
        t = c.post("/api/v1/ws-ticket").json()["ticket"]
        return t, ApiKey.objects.filter(trader=a, revoked_at__isnull=True).latest("id")

    @database_sync_to_async
    def revoke(key):
        from accounts.services.api_keys import api_key_revoke

        api_key_revoke(trader=a, key_id=key.pk)

    t, key = await ticket_and_key()
    await revoke(key)
    refused = communicator(f"/ws/?ticket={t}")
    assert not (await refused.connect())[0]

    # A socket opened with one is watched as the key is: revoked, it is no longer valid.
    from realtime.auth import identify, still_valid

    t, key = await ticket_and_key()
    identity = await identify({"query_string": f"ticket={t}".encode(), "headers": []})
    assert identity.via == "ticket" and identity.api_key_id == key.pk
    assert await still_valid(identity)
    await revoke(key)
    assert not await still_valid(identity)


@database_sync_to_async
def browser_signed_in(user):
    """A browser signed in as `user` (a session of the database's session store)."""
    from django.test import Client

    # The factory sets a password without saving it; the session holds its hash.
    user.save(update_fields=["password"])
    browser = Client()
    browser.force_login(user)
    return browser


@database_sync_to_async
def ticket_of(browser) -> str:
    return browser.post("/api/v1/ws-ticket").json()["ticket"]


async def test_a_ticket_from_a_browser_session_ends_with_the_session(layer):
    """A page asks for a ticket with its session cookie: a socket opened with it closes
    when the session logs out, at once, and the session's unused tickets are void."""
    a, _ = await setup_market_and_traders()
    browser = await browser_signed_in(a)
    used, unused = await ticket_of(browser), await ticket_of(browser)
    comm = communicator(f"/ws/?ticket={used}&traderId={a.trader_id}")
    assert (await comm.connect())[0]
    assert (await recv(comm))["type"] == "subscribed"
    await place(a, "SELL", "64000", "0.5")
    assert (await recv_until(comm, "orderUpdate"))["status"] == "NEW"

    logout = await database_sync_to_async(browser.post)("/accounts/logout/")
    assert logout.status_code == 302
    ended = await recv_until(comm, "error")
    assert ended["code"] == "UNAUTHENTICATED"
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4008}
    assert not (await communicator(f"/ws/?ticket={unused}").connect())[0]


async def test_a_ticket_from_an_expired_session_is_refused(layer):
    from django.contrib.sessions.models import Session

    a, _ = await setup_market_and_traders()
    browser = await browser_signed_in(a)
    ticket = await ticket_of(browser)
    key = browser.cookies["sessionid"].value
    await database_sync_to_async(
        lambda: Session.objects.filter(session_key=key).update(expire_date="2020-01-01T00:00Z")
    )()
    assert not (await communicator(f"/ws/?ticket={ticket}").connect())[0]


async def test_admin_pause_reaches_admin_and_market_channels(layer):
    await setup_market_and_traders()
    admin = communicator("/ws/")
    assert (await admin.connect())[0]
    await admin.send_json_to({"action": "subscribe", "channel": "admin.BTC-PERP"})
    await recv(admin)
    market = communicator("/ws/?market=BTC-PERP")
    assert (await market.connect())[0]
    await recv(market)
    await recv(market)

    @database_sync_to_async
    def pause():
        from trading.models import Market
        from trading.services.markets import market_pause

        market_pause(market=Market.objects.get(symbol="BTC-PERP"))

    await pause()
    for comm in (admin, market):
        msg = await recv_until(comm, "marketState")
        assert (msg["symbol"], msg["status"]) == ("BTC-PERP", "PAUSED")
        await comm.disconnect()


async def test_rebuilt_book_from_snapshot_and_deltas_equals_rest_depth(layer):
    a, b = await setup_market_and_traders()
    comm = communicator("/ws/?market=BTC-PERP&mode=PAPER")
    assert (await comm.connect())[0]
    await recv(comm)
    snap = await recv(comm)
    book = {"bids": {p: q for p, q in snap["bids"]}, "asks": {p: q for p, q in snap["asks"]}}
    seq = snap["seq"]
    ids = []
    for i in range(8):
        ids.append((await place(a, "SELL", str(64000 + i), "0.05"))["id"])
        await place(b, "BUY", str(63990 - i), "0.05")
    await place(b, "BUY", None, "0.12")
    await sync_to_async(order_cancel)(trader=a, order_id=ids[-1])
    final = await database_sync_to_async(depth_get)(symbol="BTC-PERP", mode="PAPER")
    while seq < final["seq"]:
        msg = await recv_until(comm, "depth")
        assert msg["seq"] == seq + 1
        seq = msg["seq"]
        for side in ("bids", "asks"):
            for p, q in msg[side]:
                if q == "0":
                    book[side].pop(p, None)
                else:
                    book[side][p] = q
    rebuilt_bids = sorted(book["bids"].items(), key=lambda x: -D(x[0]))
    rebuilt_asks = sorted(book["asks"].items(), key=lambda x: D(x[0]))
    assert [list(x) for x in rebuilt_bids] == final["bids"]
    assert [list(x) for x in rebuilt_asks] == final["asks"]
    await comm.disconnect()


async def test_a_lost_last_delta_is_recovered_when_the_book_goes_quiet(layer):
    """A web process that dies between its commit and its publish leaves subscribers a
    delta short, and no later delta reveals the gap while the book is still. The
    clock's quiet-book notice does: the socket resyncs from a snapshot."""
    from realtime import broadcast
    from trading import signals
    from trading.services.books import books_gone_quiet, books_quiet_announce

    a, _ = await setup_market_and_traders()
    comm = communicator("/ws/?market=BTC-PERP&mode=PAPER")
    assert (await comm.connect())[0]
    await recv(comm)
    assert (await recv(comm))["seq"] == 0
    await database_sync_to_async(books_gone_quiet)()  # the clock's first look

    # Committed, never published: as if the process died right after its COMMIT.
    signals.book_changed.disconnect(broadcast.on_book_changed)
    try:
        await place(a, "SELL", "64000", "0.1")
    finally:
        signals.book_changed.connect(broadcast.on_book_changed)
    assert await comm.receive_nothing(timeout=0.3)

    assert await database_sync_to_async(books_quiet_announce)() == 0  # it just moved
    assert await database_sync_to_async(books_quiet_announce)() == 1  # and is still
    snap = await recv_until(comm, "depth", timeout=3)
    assert (snap["snapshot"], snap["seq"], snap["asks"]) == (True, 1, [["64000", "0.1"]])
    # Announced once; a socket already current ignores a notice.
    assert await database_sync_to_async(books_quiet_announce)() == 0
    await database_sync_to_async(broadcast.on_book_quiet)(
        sender=None, market="BTC-PERP", mode="PAPER", seq=1
    )
    assert await comm.receive_nothing(timeout=GAP_WAIT + 0.2)
    await comm.disconnect()


@pytest.mark.parametrize("path", ["/ws", "/ws/x", "/", "/api/v1/markets"])
async def test_a_socket_on_another_path_is_refused(layer, path):
    connected, _ = await communicator(path).connect()
    assert not connected
