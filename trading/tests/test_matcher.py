"""The matcher role: `manage.py runmatcher` processes on the test database, requests
handed to them over the test run's Redis exactly as the web processes hand them
(`trading.matcher`), leases held in PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from dexsite.errors import ExchangeError
from ledger.models import Balance
from trading import matcher
from trading.invariants import check_invariants
from trading.matcher import redis_queue
from trading.matcher.requests import PLACE, MatcherRequest
from trading.matcher.server import LEASE_CLASS
from trading.models import Book, Order, Position
from trading.tests.factories import MarketFactory, UserFactory, fund

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not getattr(settings, "REDIS_URL", None),
        reason="matchers hold PostgreSQL leases and take requests over Redis",
    ),
]


def _db_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _leases() -> dict[int, int]:
    """book pk -> the backend pid holding its matcher lease."""
    with psycopg.connect(_db_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT objid, pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
            " AND granted AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())",
            [LEASE_CLASS],
        ).fetchall()
    return {int(objid): pid for objid, pid in rows}


def _wait(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def remote(settings) -> Iterator[Callable[..., subprocess.Popen]]:
    """MATCHER=redis in this process, under a Redis prefix of this test's; yields a
    function that starts a `runmatcher` process (stopped at the end)."""
    prefix = f"mt{uuid.uuid4().hex[:10]}"
    settings.MATCHER, settings.MATCHER_PREFIX, settings.MATCHER_TIMEOUT = "redis", prefix, 3
    matcher._books_known.clear()
    matcher._unanswered_until = 0.0
    started: list[subprocess.Popen] = []

    def start(*args: str, **extra_env: str) -> subprocess.Popen:
        env = dict(
            os.environ,
            DATABASE_URL=_db_url(),
            REDIS_URL=settings.REDIS_URL,
            MATCHER_PREFIX=prefix,
            DEBUG="true",
            **extra_env,
        )
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runmatcher", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(10)
    connection.close()


def _order(**kw) -> dict:
    order = {
        "market": "BTC-PERP",
        "mode": "PAPER",
        "side": "BUY",
        "type": "LIMIT",
        "qty": Decimal("0.01"),
        "price": Decimal("64000"),
    }
    return order | kw


@pytest.fixture
def book_and_traders():
    market = MarketFactory()
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "1000000")
    fund(bob, "1000000")
    return Book.objects.get(market=market, mode="PAPER"), alice, bob


def test_orders_and_cancels_go_through_the_matcher_that_holds_the_book(remote, book_and_traders):
    book, alice, bob = book_and_traders
    proc = remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    rests, created = matcher.order_submit(trader=alice, **_order(client_order_id="a1"))
    assert created and rests["status"] == "NEW"
    takes, _ = matcher.order_submit(trader=bob, **_order(side="SELL", qty=Decimal("0.004")))
    assert takes["status"] == "FILLED" and takes["fills"][0]["px"] == "64000"
    # A repeated clientOrderId answers with the first order, as the matcher holds it now.
    again, created = matcher.order_submit(trader=alice, **_order(client_order_id="a1"))
    assert not created and again["id"] == rests["id"] and again["filledQty"] == "0.004"
    # A batch: each order on its own.
    results = matcher.orders_submit(
        trader=alice, orders=[_order(price=Decimal("63000")), _order(price=Decimal("63000.3"))]
    )
    assert results[0][0]["status"] == "NEW"
    assert isinstance(results[1], ExchangeError) and results[1].code == "INVALID_PRICE"
    with pytest.raises(ExchangeError) as refused:
        matcher.order_submit(trader=alice, **_order(qty=Decimal("1000")))
    assert refused.value.code == "INSUFFICIENT_MARGIN"
    canceled = matcher.order_cancel_submit(trader=alice, order_id=results[0][0]["id"])
    assert canceled["status"] == "CANCELED"
    assert matcher.orders_cancel_all_submit(trader=alice, mode="PAPER", market=None) == [
        rests["id"]
    ]
    with pytest.raises(ExchangeError) as unknown:
        matcher.order_submit(trader=alice, **_order(market="NOPE-PERP"))
    assert unknown.value.code == "UNKNOWN_MARKET"
    assert proc.poll() is None
    assert Order.objects.filter(trader=alice, status="NEW").count() == 0


def test_no_matcher_means_503_and_nothing_done_even_once_one_starts(remote, book_and_traders):
    book, alice, _ = book_and_traders
    with pytest.raises(ExchangeError) as e:
        matcher.order_submit(trader=alice, **_order(client_order_id="lonely"))
    assert (e.value.code, e.value.status_code) == ("MATCHER_UNAVAILABLE", 503)
    assert e.value.extra["retryAfter"] == 1
    # The request still sits in the book's queue; the matcher that starts now finds it
    # claimed by its sender and leaves it.
    remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    _, created = matcher.order_submit(trader=alice, **_order(client_order_id="second"))
    assert created
    assert list(Order.objects.filter(trader=alice).values_list("client_order_id", flat=True)) == [
        "second"
    ]


def test_a_long_wait_ends_in_503_not_in_a_socket_timeout(
    remote, book_and_traders, settings, monkeypatch
):
    """The API waits MATCHER_TIMEOUT (5 s by default) for a matcher; the Redis socket's
    own timeout (redis-py's default is 5 s) must not end that wait first: it would leave
    the request unclaimed, to be carried out by the next matcher after the sender gave
    up."""
    _, alice, _ = book_and_traders
    settings.MATCHER_TIMEOUT = 6
    monkeypatch.setattr(redis_queue, "_client", None)  # one made with this timeout
    with pytest.raises(ExchangeError) as e:
        matcher.order_submit(trader=alice, **_order())
    assert e.value.code == "MATCHER_UNAVAILABLE"


def test_two_matchers_never_hold_one_book_and_the_second_takes_over(remote, book_and_traders):
    book, alice, bob = book_and_traders
    first = remote()
    _wait(lambda: book.pk in _leases(), "the first matcher's lease")
    holder = _leases()[book.pk]
    second = remote()
    matcher.order_submit(trader=alice, **_order())
    time.sleep(0.5)  # the second matcher has had several looks at the book
    assert second.poll() is None and _leases()[book.pk] == holder
    first.kill()
    first.wait(10)
    _wait(lambda: _leases().get(book.pk) not in (None, holder), "the second matcher's lease")
    taken, _ = matcher.order_submit(trader=bob, **_order(side="SELL", qty=Decimal("0.01")))
    assert taken["status"] == "FILLED"


def test_the_matcher_keeps_its_connection_past_conn_max_age(remote, book_and_traders):
    """The leases (and so the books kept in memory) live on the matcher's database
    connection: between batches it is not closed for its age, as a web process's is."""
    book, alice, _ = book_and_traders
    remote(DB_CONN_MAX_AGE="1")
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    holder = _leases()[book.pk]
    for _ in range(3):
        matcher.order_submit(trader=alice, **_order())
        time.sleep(1.2)
    assert _leases()[book.pk] == holder


def test_a_claimed_request_whose_matcher_died_is_answered_from_the_database(
    remote, book_and_traders
):
    """The sender's side of a matcher that claimed a request and went without answering:
    it waits for the claiming backend to end, then answers from what committed."""
    book, alice, _ = book_and_traders
    r = redis_queue.redis_client()
    remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")

    def claimed_by_a_backend_that_ends(request: MatcherRequest) -> None:
        request.id = uuid.uuid4().hex
        conn = psycopg.connect(_db_url(), autocommit=True)
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        r.set(redis_queue.claim_key(request.id), pid)
        conn.close()

    # It committed: the order is there, found by its clientOrderId.
    placed, _ = matcher.order_submit(trader=alice, **_order(client_order_id="kept"))
    request = MatcherRequest(PLACE, alice, [_order(client_order_id="kept")])
    claimed_by_a_backend_that_ends(request)
    ((found, created),) = redis_queue._answer_of_claimed(request)
    assert found["id"] == placed["id"] and not created
    # It rolled back: nothing there, so a retry is safe.
    request = MatcherRequest(PLACE, alice, [_order(client_order_id="gone")])
    claimed_by_a_backend_that_ends(request)
    (outcome,) = redis_queue._answer_of_claimed(request)
    assert outcome.code == "MATCHER_UNAVAILABLE"
    # Without a clientOrderId nobody can tell: the trader is told so.
    request = MatcherRequest(PLACE, alice, [_order()])
    claimed_by_a_backend_that_ends(request)
    (outcome,) = redis_queue._answer_of_claimed(request)
    assert outcome.code == "ORDER_STATUS_UNKNOWN" and outcome.status_code == 503


def test_the_clocks_triggers_are_placed_by_the_books_matcher(remote, book_and_traders):
    """A stop held through the matcher fires there once the mark crosses it: the clock
    hands the trigger to the matcher instead of writing the book itself."""
    book, alice, bob = book_and_traders
    proc = remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    matcher.order_submit(trader=bob, **_order(side="SELL", price=Decimal("64500")))
    stop, created = matcher.order_submit(
        trader=alice,
        **_order(type="STOP_MARKET", price=None, trigger_price=Decimal("64200")),
    )
    assert created and stop["status"] == "UNTRIGGERED"
    later, _ = matcher.order_submit(
        trader=alice, **_order(type="STOP_MARKET", price=None, trigger_price=Decimal("64400"))
    )
    assert matcher.triggers_fire() == []
    Book.objects.filter(pk=book.pk).update(mark_price=Decimal("64250"))
    assert matcher.triggers_fire() == [(stop["id"], "PLACED")]
    assert Order.objects.get(pk=stop["id"]).status == "FILLED"
    assert matcher.triggers_fire() == []
    # Without a matcher a crossed trigger waits, and fires at a later sweep.
    proc.kill()
    proc.wait(10)
    Book.objects.filter(pk=book.pk).update(mark_price=Decimal("64450"))
    assert matcher.triggers_fire() == [(later["id"], "MATCHER_UNAVAILABLE")]
    assert Order.objects.get(pk=later["id"]).status == "UNTRIGGERED"
    remote()
    _wait(lambda: book.pk in _leases(), "the new matcher's lease")
    assert matcher.triggers_fire() == [(later["id"], "PLACED")]


def test_one_client_order_id_raced_through_the_matcher_places_one_order(remote, book_and_traders):
    """Eight requests with one clientOrderId at once (a bot retrying over a flaky link):
    they share the matcher's batches, and one order is placed, every answer naming it."""
    import threading

    book, alice, _ = book_and_traders
    remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    answers: list[tuple[dict, bool]] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        barrier.wait()
        try:
            answers.append(matcher.order_submit(trader=alice, **_order(client_order_id="once")))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 8
    assert len({order["id"] for order, _ in answers}) == 1
    assert sum(created for _, created in answers) == 1
    assert Order.objects.filter(trader=alice).count() == 1


def test_a_delisting_cancels_each_books_orders_in_its_matcher(remote, book_and_traders):
    """The status first, then each book's open orders by the book's matcher, behind the
    orders it was placing. Without a matcher the market is delisted and its orders wait;
    delisting again, once a matcher serves, finishes it."""
    from trading.services.markets import market_delist

    book, alice, _ = book_and_traders
    market = book.market
    fund(alice, "1000000", mode="REAL")
    remote()
    _wait(lambda: {b.pk for b in market.books.all()} <= _leases().keys(), "both leases")
    resting = [
        matcher.order_submit(trader=alice, **_order(mode=mode))[0] for mode in ("PAPER", "REAL")
    ]
    assert all(o["status"] == "NEW" for o in resting)
    # A trigger waiting on the book is cancelled with the rest.
    stop, _ = matcher.order_submit(
        trader=alice, **_order(type="STOP_MARKET", price=None, trigger_price=Decimal("70000"))
    )
    assert sorted(market_delist(market=market)) == sorted([o["id"] for o in resting] + [stop["id"]])
    market.refresh_from_db()
    assert market.status == "DELISTED"
    assert set(Order.objects.filter(market=market).values_list("status", "cancel_reason")) == {
        ("CANCELED", "DELISTED")
    }
    assert all(b.locked == 0 for b in Balance.objects.filter(trader=alice))
    with pytest.raises(ExchangeError) as refused:
        matcher.order_submit(trader=alice, **_order())
    assert refused.value.code == "MARKET_DELISTED"


def test_a_delisting_without_a_matcher_is_finished_by_delisting_again(remote, book_and_traders):
    from trading.orders.place import order_place
    from trading.services.markets import market_delist

    book, alice, _ = book_and_traders
    resting, _ = order_place(trader=alice, **_order())  # placed before matchers ran
    with pytest.raises(ExchangeError) as e:
        market_delist(market=book.market)
    assert e.value.code == "MATCHER_UNAVAILABLE"
    book.market.refresh_from_db()
    assert book.market.status == "DELISTED"
    assert Order.objects.get(pk=resting["id"]).status == "NEW"
    remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    assert market_delist(market=book.market) == [resting["id"]]
    assert Order.objects.get(pk=resting["id"]).cancel_reason == "DELISTED"


def _index_move(price: str) -> None:
    from trading.services.prices import index_set, marks_refresh

    index_set(underlying="BTC", price=Decimal(price))
    marks_refresh()


def _long_at_64000(market, trader, maker) -> None:
    """Through the matcher: `trader` 1 long from 64000 at 20x on 3,300 of cash, `maker`
    short against it and bidding 1 at 61500 (what a liquidation closes the long into).
    An index at 60900 takes the long below maintenance."""
    from trading.services.markets import leverage_set

    fund(trader, "3300")
    leverage_set(trader=trader, market=market, mode="PAPER", leverage=Decimal("20"))
    matcher.order_submit(trader=maker, **_order(side="SELL", qty=Decimal("1")))
    (placed, _) = matcher.order_submit(trader=trader, **_order(qty=Decimal("1")))
    assert placed["status"] == "FILLED"
    matcher.order_submit(trader=maker, **_order(qty=Decimal("1"), price=Decimal("61500")))


def test_a_liquidation_is_carried_out_by_the_matcher_of_the_accounts_book(remote, settings):
    """The clock's liquidation of an account goes to the matcher of its book, which
    closes the position into its own book (the one writer of it); without a matcher the
    clock liquidates the account itself, as safely, since the work takes the books' row
    locks wherever it runs."""
    from trading.services import books
    from trading.services.liquidation import liquidations_run

    market = MarketFactory(max_leverage=Decimal("20"))
    book = Book.objects.get(market=market, mode="PAPER")
    _index_move("64000")
    alice, carol, bob = UserFactory(), UserFactory(), UserFactory()
    fund(bob, "1000000")
    # Room for a slow machine: the first liquidation must be the matcher's.
    settings.MATCHER_TIMEOUT = 30
    proc = remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    _long_at_64000(market, alice, bob)
    books.engine_cache_clear()
    _index_move("60900")

    (done,) = liquidations_run()

    assert done.trader_id == alice.pk
    assert Position.objects.get(trader=alice, market=market, mode="PAPER").size == 0
    closing = Order.objects.get(trader=alice, source="LIQUIDATION")
    assert (closing.status, closing.filled_qty) == ("FILLED", Decimal("1"))
    # Matched in the matcher's book: this process never took the book.
    assert book.pk not in books._cache
    assert liquidations_run() == []

    # No matcher: the clock does it here once the matcher does not take the request.
    _index_move("64000")
    _long_at_64000(market, carol, bob)
    settings.MATCHER_TIMEOUT = 3
    proc.kill()
    proc.wait(10)
    _index_move("60900")
    (done,) = liquidations_run()
    assert done.trader_id == carol.pk
    assert Position.objects.get(trader=carol, market=market, mode="PAPER").size == 0
    assert book.pk in books._cache
    assert check_invariants() == []


def test_an_expired_market_is_settled_by_the_matcher_of_its_books(remote):
    """Expiry cancels the market's resting orders and closes its positions in the matcher
    that owns its books, ahead of the orders waiting for it."""
    from datetime import timedelta

    from django.utils import timezone

    from trading.models import Market, Settlement
    from trading.services import books
    from trading.services.expiry import settle_expired
    from trading.services.prices import index_set

    expiry = timezone.now() + timedelta(days=1)
    future = MarketFactory(symbol="BTC-X-FUTURE", kind="FUTURE", expiry_at=expiry)
    books_of = {b.mode: b for b in Book.objects.filter(market=future)}
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "100000")
    fund(bob, "100000")
    remote()
    _wait(lambda: {b.pk for b in books_of.values()} <= _leases().keys(), "both leases")
    on_future = {"market": future.symbol, "qty": Decimal("0.5"), "price": Decimal("63000")}
    matcher.order_submit(trader=bob, **_order(side="SELL", **on_future))
    matcher.order_submit(trader=alice, **_order(**on_future))
    (resting, _) = matcher.order_submit(
        trader=alice, **_order(market=future.symbol, price=Decimal("62000"))
    )
    books.engine_cache_clear()
    Market.objects.filter(pk=future.pk).update(expiry_at=timezone.now())
    for i, price in enumerate(("64000", "64100", "64200")):
        index_set(
            underlying="BTC",
            price=Decimal(price),
            at=timezone.now() - timedelta(minutes=20 - 5 * i),
        )

    (settlement,) = settle_expired()

    assert settlement == Settlement.objects.get(market=future)
    assert settlement.price == Decimal("64100")
    assert Order.objects.get(pk=resting["id"]).status == "CANCELED"
    assert Position.objects.get(trader=alice, market=future).size == 0
    assert Market.objects.get(pk=future.pk).status == "SETTLED"
    assert not {b.pk for b in books_of.values()} & books._cache.keys()
    assert settle_expired() == []
    assert check_invariants() == []


def test_a_liquidation_goes_ahead_of_the_orders_waiting_for_the_matcher(remote, settings):
    """A flood of orders on the book (an attacker's, to hold off their own liquidation
    while the price runs away) does not stand between the account and its liquidation:
    the clock's request is carried out before every order that was waiting."""
    import threading

    from trading.matcher.requests import request_encode
    from trading.services import books
    from trading.services.liquidation import liquidations_run

    settings.MATCHER_TIMEOUT = 30
    market = MarketFactory(max_leverage=Decimal("20"))
    book = Book.objects.get(market=market, mode="PAPER")
    _index_move("64000")
    alice, bob = UserFactory(), UserFactory()
    fund(bob, "1000000")
    proc = remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    _long_at_64000(market, alice, bob)
    proc.kill()
    proc.wait(10)
    r = redis_queue.redis_client()
    queue = redis_queue.queue_key("BTC-PERP", "PAPER")
    flood = [
        MatcherRequest(PLACE, bob, [_order(price=Decimal("50000"))], id=f"flood{i}")
        for i in range(40)
    ]
    r.rpush(queue, *[request_encode(f) for f in flood])
    _index_move("60900")
    swept: list = []
    books.engine_cache_clear()
    sweep = threading.Thread(target=lambda: (swept.extend(liquidations_run()), connection.close()))
    sweep.start()
    _wait(lambda: r.llen(queue) == len(flood) + 1, "the liquidation's request in the queue")
    remote()
    sweep.join(60)

    (done,) = swept
    assert done.trader_id == alice.pk
    closing = Order.objects.get(trader=alice, source="LIQUIDATION")
    flooded = Order.objects.filter(trader=bob, price=Decimal("50000"))
    _wait(lambda: flooded.count() == len(flood), "the flood placed")
    assert closing.pk < min(flooded.values_list("pk", flat=True))
    assert closing.status == "FILLED"
    # The matcher's doing, not this process's after a timeout.
    assert book.pk not in books._cache


def test_without_redis_the_clock_liquidates_the_account_itself(remote, settings):
    """Redis gone: no matcher can be asked, and the liquidation does not wait for one."""
    from trading.services.liquidation import liquidations_run

    market = MarketFactory(max_leverage=Decimal("20"))
    book = Book.objects.get(market=market, mode="PAPER")
    _index_move("64000")
    alice, bob = UserFactory(), UserFactory()
    fund(bob, "1000000")
    remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    _long_at_64000(market, alice, bob)
    _index_move("60900")
    # A port nothing listens on.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_queue._client = None
    try:
        (done,) = liquidations_run()
    finally:
        redis_queue._client = None
    assert done.trader_id == alice.pk
    assert Position.objects.get(trader=alice, market=market, mode="PAPER").size == 0


def test_a_request_that_waited_too_long_or_cannot_be_read_is_not_carried_out(
    remote, book_and_traders
):
    """A request left in a queue for minutes (no matcher) is not carried out when one
    comes back: its sender was told nothing was done, and may have sent it again. One
    that cannot be read (another release's) is answered as failed, and the requests
    around it are carried out."""
    import time as clock

    from trading.matcher.requests import request_encode

    _, alice, _ = book_and_traders
    r = redis_queue.redis_client()
    queue = redis_queue.queue_key("BTC-PERP", "PAPER")
    stale = MatcherRequest(PLACE, alice, [_order(client_order_id="stale")], id="stale1")
    stale.sent = clock.time() - redis_queue.REQUEST_MAX_AGE - 1
    fresh = MatcherRequest(PLACE, alice, [_order(client_order_id="fresh")], id="fresh1")
    fresh.sent = clock.time()
    r.rpush(
        queue,
        request_encode(stale),
        b"not json",
        b'{"id": "odd1", "kind": "barter"}',
        request_encode(fresh),
    )
    remote()
    _wait(lambda: Order.objects.filter(client_order_id="fresh").exists(), "the fresh order")
    assert not Order.objects.filter(client_order_id="stale").exists()
    answer = r.blpop([redis_queue.answer_key("odd1")], timeout=10)
    assert answer is not None and b"failed" in answer[1]
    assert r.llen(queue) == 0


def test_a_wait_cut_by_redis_is_answered_and_the_request_never_runs_later(
    remote, book_and_traders, settings
):
    """The web's connection to Redis cut while it waits for the matcher (a Redis failover,
    a network blip): the request sits in the queue. The sender claims it and answers 503
    MATCHER_UNAVAILABLE, and a matcher that comes later does not place it; with Redis
    itself away, the answer is 503 ORDER_STATUS_UNKNOWN, not a server error."""
    import threading

    _, alice, _ = book_and_traders
    settings.MATCHER_TIMEOUT = 30
    r = redis_queue.redis_client()
    queue = redis_queue.queue_key("BTC-PERP", "PAPER")
    answers: list = []

    def send() -> None:
        try:
            matcher.order_submit(trader=alice, **_order(client_order_id="cut"))
        except ExchangeError as e:
            answers.append(e)
        finally:
            connection.close()

    sender = threading.Thread(target=send)
    sender.start()
    _wait(lambda: r.llen(queue) == 1, "the request in the queue")
    _wait(lambda: any(c.get("cmd") == "blpop" for c in r.client_list()), "the sender's wait")
    waiting = [c for c in r.client_list() if c.get("cmd") == "blpop"]
    for c in waiting:
        r.client_kill_filter(_id=c["id"])
    sender.join(60)
    (refused,) = answers
    assert (refused.code, refused.status_code) == ("MATCHER_UNAVAILABLE", 503)

    remote()
    placed, _ = matcher.order_submit(trader=alice, **_order(client_order_id="after"))
    assert placed["status"] == "NEW"
    assert r.llen(queue) == 0
    assert not Order.objects.filter(client_order_id="cut").exists()

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_queue._client = None
    try:
        with pytest.raises(ExchangeError) as unknown:
            matcher.order_submit(trader=alice, **_order(client_order_id="unreachable"))
    finally:
        redis_queue._client = None
    assert (unknown.value.code, unknown.value.status_code) == ("ORDER_STATUS_UNKNOWN", 503)
