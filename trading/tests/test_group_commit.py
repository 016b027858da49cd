"""Group commit: orders placed together in one transaction end exactly as if each had
been placed alone, one after another; a group that fails as a whole is placed again
order by order; threads that place on one book at once are served in groups."""

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Sum

from accounts.models import User
from dexsite.errors import ExchangeError
from ledger.models import Balance, LedgerEntry
from trading.invariants import check_invariants
from trading.models import Book, Fill, Market, Order, Position, Trade
from trading.orders import place as order_services
from trading.orders import record as order_record
from trading.orders.place import _place_alone, _place_together, order_place
from trading.orders.request import OrderRequest
from trading.services.books import engine_cache_clear
from trading.tests.factories import MarketFactory, UserFactory, fund, spot_market
from trading.tests.test_concurrency import requires_postgres, run_threads

D = Decimal

# The same flow runs alone in one mode and grouped in the other: books, balances and
# positions are kept per mode, so the two runs start equal and cannot touch each other.
ALONE, GROUPED = "PAPER", "REAL"


def _requests(rng: random.Random, traders: list[User], n: int) -> list[tuple[str, OrderRequest]]:
    """A flow over a perp and a spot book: limits around the mid (about half crossing),
    market, IOC, FOK and POST_ONLY orders, reduce-only closes, self-trades, and orders
    too big for the poorer accounts."""
    flow = []
    for _ in range(n):
        symbol = rng.choice(["BTC-PERP", "BTC-PERP", "CXPT-USDC"])
        perp = symbol == "BTC-PERP"
        mid, tick, lot = (
            (D(64000), D("0.5"), D("0.001")) if perp else (D("1.25"), D("0.0001"), D("0.1"))
        )
        side = rng.choice(["BUY", "SELL"])
        kind = rng.choices(["LIMIT", "MARKET"], [5, 1])[0]
        tif = "GTC"
        price = None
        if kind == "LIMIT":
            tif = rng.choice(["GTC", "GTC", "GTC", "IOC", "FOK", "POST_ONLY"])
            offset = rng.randint(-6, 6) * tick
            price = mid + (offset if side == "BUY" else -offset)
        qty = lot * rng.choice([rng.randint(10, 400), rng.randint(10, 4000)])
        reduce_only = perp and rng.random() < 0.1
        flow.append(
            (
                symbol,
                OrderRequest(
                    trader=rng.choice(traders),
                    side=side,
                    type=kind,
                    qty=qty,
                    price=price,
                    tif=tif,
                    reduce_only=reduce_only,
                    client_order_id=None,
                    source="USER",
                ),
            )
        )
    return flow


def _shown(outcome: Any) -> Any:
    """An outcome without what differs between the two runs (ids, times, mode)."""
    if isinstance(outcome, ExchangeError):
        return ("refused", outcome.code, str(outcome))
    assert not isinstance(outcome, BaseException), outcome
    body, created = outcome
    drop = {"id", "orderId", "tradeId", "ts", "createdAt", "updatedAt", "mode"}
    strip = lambda d: {k: v for k, v in d.items() if k not in drop}  # noqa: E731
    return created, {**strip(body), "fills": [strip(f) for f in body.get("fills", [])]}


def _state(mode: str) -> dict[str, Any]:
    return {
        "balances": sorted(
            Balance.objects.filter(mode=mode).values_list("trader_id", "asset", "total", "locked")
        ),
        "positions": sorted(
            Position.objects.filter(mode=mode).values_list(
                "trader_id", "market_id", "size", "open_notional", "realized_pnl"
            )
        ),
        "orders": list(
            Order.objects.filter(mode=mode)
            .order_by("id")
            .values_list(
                "trader_id",
                "market_id",
                "side",
                "status",
                "qty",
                "filled_qty",
                "filled_notional",
                "reserved",
                "cancel_reason",
            )
        ),
        "trades": list(
            Trade.objects.filter(mode=mode).order_by("id").values_list("price", "qty", "taker_side")
        ),
        "fills": Fill.objects.filter(mode=mode).count(),
        "ledger": sorted(
            LedgerEntry.objects.filter(mode=mode).values_list(
                "trader_id", "asset", "amount", "reason"
            )
        ),
    }


# The comparisons of a grouped run with one order by one, exact to the last digit.
exact_decimals = pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="SQLite keeps decimals as floats: a value read back after each order rounds "
    "unlike one the group keeps in memory",
)


def two_books_and_traders() -> list[User]:
    """A perp and a spot market, and five traders funded alike in both modes."""
    MarketFactory()
    spot_market()
    traders = [UserFactory() for _ in range(5)]
    for i, t in enumerate(traders):
        for mode in (ALONE, GROUPED):
            # The last two accounts are poor: some of their orders are refused.
            fund(t, "2000000" if i < 3 else "900", mode=mode)
            fund(t, "400000" if i < 3 else "50", asset="CXPT", mode=mode)
    return traders


@exact_decimals
@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_grouped_orders_end_as_if_placed_one_by_one(seed):
    traders = two_books_and_traders()
    rng = random.Random(seed)
    flow = _requests(rng, traders, 240)

    alone = [_outcome(lambda r=r, s=s: _place_alone(s, ALONE, r)) for s, r in flow]

    grouped: list[Any] = []
    i = 0
    while i < len(flow):
        # A group is consecutive orders of one book (as the queue of a book holds them).
        symbol = flow[i][0]
        j = i
        size = rng.randint(1, 12)
        while j < len(flow) and j - i < size and flow[j][0] == symbol:
            j += 1
        grouped += _place_together(symbol, GROUPED, [r for _, r in flow[i:j]])
        i = j

    assert [_shown(o) for o in grouped] == [_shown(o) for o in alone]
    # Ids keep arrival order (a rebuilt book ranks time priority by id).
    ids = [o[0]["id"] for o in grouped if isinstance(o, tuple)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    refused = sum(isinstance(o, ExchangeError) for o in alone)
    assert 10 < refused < len(flow) - 100, "the flow must both trade and be refused"
    assert Trade.objects.filter(mode=ALONE).count() > 40
    assert _state(GROUPED) == _state(ALONE)
    assert check_invariants() == []


def _outcome(call) -> Any:
    try:
        return call()
    except ExchangeError as e:
        return e


@pytest.mark.django_db
def test_grouped_orders_rebuilt_engine_matches_the_cached_one():
    """After a group commits, the cached engine book equals one rebuilt from the
    database: the group's writes and its in-memory book agree."""
    from trading.services.books import book_lock, engine_book_build, engine_book_take

    MarketFactory()
    traders = [UserFactory() for _ in range(3)]
    for t in traders:
        fund(t, "1000000", mode=GROUPED)
    rng = random.Random(7)
    flow = [r for s, r in _requests(rng, traders, 200) if s == "BTC-PERP"]
    for k in range(0, len(flow), 9):
        _place_together("BTC-PERP", GROUPED, flow[k : k + 9])
    from django.db import transaction

    with transaction.atomic():
        book = book_lock(symbol="BTC-PERP", mode=GROUPED)
        cached = engine_book_take(book)
        rebuilt = engine_book_build(book)
        assert cached is not rebuilt
        assert cached.depth(100) == rebuilt.depth(100)
        assert set(cached.orders) == set(rebuilt.orders)


@pytest.mark.django_db
def test_a_group_that_fails_as_a_whole_is_placed_order_by_order():
    """Two orders of a group share a clientOrderId: the database refuses the group; each
    is then placed alone, and the second is answered with the first."""
    MarketFactory()
    trader = UserFactory()
    fund(trader, "100000", mode=GROUPED)
    other = UserFactory()
    fund(other, "100000", mode=GROUPED)

    def req(who, side, price, cid=None):
        return OrderRequest(who, side, "LIMIT", D("0.1"), D(price), "GTC", False, cid, "USER")

    outcomes = _place_together(
        "BTC-PERP",
        GROUPED,
        [
            req(other, "SELL", "64000"),
            req(trader, "BUY", "64000", cid="dup"),
            req(trader, "BUY", "63000", cid="dup"),
        ],
    )
    (_maker, made), (first, created_first), (second, created_second) = outcomes
    assert made and created_first and not created_second
    assert second["id"] == first["id"] and first["status"] == "FILLED"
    assert Order.objects.filter(mode=GROUPED).count() == 2
    assert check_invariants() == []


@pytest.mark.django_db
def test_a_group_on_an_unknown_market_refuses_every_order():
    trader = UserFactory()
    r = OrderRequest(trader, "BUY", "LIMIT", D("1"), D("1"), "GTC", False, None, "USER")
    outcomes = _place_together("NOPE-PERP", GROUPED, [r, r])
    assert [o.code for o in outcomes] == ["UNKNOWN_MARKET"] * 2


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_threads_on_one_book_are_served_in_groups(monkeypatch, settings):
    """Eight threads place crossing orders on one book: the orders that arrive while a
    transaction of the book runs go together in the next one, every acknowledged order
    is in the database, and the books balance. The overlap is made, not hoped for:
    another connection holds the book until all eight first orders are waiting."""
    settings.ORDER_GROUP_MAX = 32
    market = MarketFactory()
    traders = [UserFactory() for _ in range(8)]
    for t in traders:
        fund(t, "5000000")
    sizes: list[int] = []
    lock = threading.Lock()
    real = order_services._place_together

    def counted(symbol, mode, requests):
        with lock:
            sizes.append(len(requests))
        return real(symbol, mode, requests)

    monkeypatch.setattr(order_services, "_place_together", counted)
    acknowledged: list[int] = []

    def work(i: int) -> None:
        rng = random.Random(i)
        trader = User.objects.get(pk=traders[i].pk)
        for _ in range(30):
            side = rng.choice(["BUY", "SELL"])
            body, created = order_place(
                trader=trader,
                market="BTC-PERP",
                mode="PAPER",
                side=side,
                type="LIMIT",
                price=D(64000) + rng.randint(-3, 3) * D("0.5"),
                qty=D("0.001") * rng.randint(10, 100),
            )
            assert created
            with lock:
                acknowledged.append(body["id"])

    def first_orders_waiting() -> int:
        """The orders in the leader's transaction (which waits for the book) and those
        queued behind it."""
        with lock:
            leading = sizes[0] if sizes else 0
        return leading + _queued(("BTC-PERP", "PAPER"))

    errors: list[BaseException] = []
    threads = threading.Thread(target=lambda: errors.extend(run_threads(8, work)))
    with _locked_elsewhere(Book.objects.filter(market=market, mode="PAPER")):
        threads.start()
        _until(lambda: first_orders_waiting() == 8)
        with lock:
            assert len(sizes) == 1, sizes  # nothing got past the held book
    threads.join(120)
    assert not threads.is_alive() and errors == []
    assert sum(sizes) == 240, sizes
    # The first eight orders went in (at most) two transactions: the leader's, then one
    # with every order that had queued behind it.
    assert sizes[0] == 8 or sizes[0] + sizes[1] >= 8, sizes
    assert Order.objects.filter(pk__in=acknowledged).count() == 240
    buys = Fill.objects.filter(side="BUY").aggregate(s=Sum("qty"))["s"]
    assert buys and buys == Fill.objects.filter(side="SELL").aggregate(s=Sum("qty"))["s"]
    assert check_invariants() == []
    engine_cache_clear()


def _queued(key: tuple[str, str]) -> int:
    """How many callers wait in the group-commit queue of the book `key`."""
    return order_services._group.queued(key)


def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until `condition()` holds (polled: nothing signals it), failing past
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        time.sleep(0.005)


def _buy(trader: User, **kw: Any) -> tuple[dict, bool]:
    """A PAPER limit buy of 0.1 BTC-PERP at 60,000."""
    return order_place(
        trader=trader,
        market="BTC-PERP",
        mode="PAPER",
        side="BUY",
        type="LIMIT",
        price=D("60000"),
        qty=D("0.1"),
        **kw,
    )


def test_grouping_is_skipped_inside_a_callers_transaction(db, monkeypatch):
    """The risk engine places orders inside its own transaction: they are placed there,
    not handed to another thread's."""
    MarketFactory()
    trader = UserFactory()
    fund(trader, "100000")
    monkeypatch.setattr(
        order_services._group, "place", lambda *a: pytest.fail("grouped inside a transaction")
    )
    assert connection.in_atomic_block  # the test's own transaction
    body, created = _buy(trader)
    assert created and body["status"] == "NEW"


@pytest.mark.django_db
def test_a_groups_events_leave_on_commit_in_order(received, django_capture_on_commit_callbacks):
    """Each order's book delta (consecutive seqs), trades, order and fill events in
    turn, then one position event for everyone the group moved."""
    got = received
    MarketFactory()
    maker, taker1, taker2 = (UserFactory() for _ in range(3))
    for t in (maker, taker1, taker2):
        fund(t, "1000000", mode=GROUPED)

    def req(who, side, price, qty="0.5"):
        return OrderRequest(who, side, "LIMIT", D(qty), D(price), "GTC", False, None, "USER")

    with django_capture_on_commit_callbacks(execute=True):
        outcomes = _place_together(
            "BTC-PERP",
            GROUPED,
            [
                req(maker, "SELL", "64000", "1"),
                req(taker1, "BUY", "64000"),
                req(taker2, "BUY", "64001"),
            ],
        )
        assert got == [], "nothing leaves before the commit"
    assert [o[0]["status"] for o in outcomes] == ["NEW", "FILLED", "FILLED"]
    names = [name for name, _ in got]
    assert names == [
        "book_changed", "order_updated",
        "book_changed", "trade_executed", "order_updated", "order_updated",
        "fill_created", "fill_created",
        "book_changed", "trade_executed", "order_updated", "order_updated",
        "fill_created", "fill_created",
        "position_updated",
    ]  # fmt: skip
    seqs = [kw["seq"] for name, kw in got if name == "book_changed"]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    (positions,) = [kw for name, kw in got if name == "position_updated"]
    assert {t for t, _ in positions["position_ids"]} == {maker.pk, taker1.pk, taker2.pk}
    maker_updates = [
        kw["order"]["status"]
        for name, kw in got
        if name == "order_updated" and kw["order"]["id"] == outcomes[0][0]["id"]
    ]
    # Each event shows the maker's order as that step left it.
    assert maker_updates == ["NEW", "PARTIALLY_FILLED", "FILLED"]


@pytest.mark.django_db
def test_a_list_of_orders_is_placed_in_runs_of_one_book(monkeypatch):
    """`orders_place_many` (the batch endpoint): consecutive orders of one book share a
    transaction; a clientOrderId already used is answered with its order; a repeated one
    inside the list is placed once."""
    from trading.orders.place import orders_place_many

    MarketFactory()
    spot_market()
    alice, bob = UserFactory(), UserFactory()
    for t in (alice, bob):
        fund(t, "1000000")
        fund(t, "10000", asset="CXPT")
    runs: list[tuple[str, int]] = []
    real = order_services._place_together

    def counted(symbol, mode, requests):
        runs.append((symbol, len(requests)))
        return real(symbol, mode, requests)

    monkeypatch.setattr(order_services, "_place_together", counted)
    first, _ = _buy(alice, client_order_id="seen")

    def o(market, side, price, qty, cid=None):
        return {
            "market": market,
            "mode": "PAPER",
            "side": side,
            "type": "LIMIT",
            "price": D(price),
            "qty": D(qty),
            "client_order_id": cid,
        }

    results = orders_place_many(
        trader=alice,
        orders=[
            o("BTC-PERP", "SELL", "64000", "0.1"),
            o("BTC-PERP", "SELL", "64000", "99999"),  # too big: refused alone
            o("BTC-PERP", "BUY", "60000", "0.1", cid="seen"),
            o("CXPT-USDC", "SELL", "1.25", "10", cid="twice"),
            o("CXPT-USDC", "SELL", "1.26", "10", cid="twice"),
            o("BTC-PERP", "BUY", "59000", "0.1"),
        ],
    )
    assert runs == [("BTC-PERP", 2), ("CXPT-USDC", 2), ("BTC-PERP", 1)]
    assert results[0][0]["status"] == "NEW" and results[0][1]
    assert isinstance(results[1], ExchangeError) and results[1].code == "INSUFFICIENT_MARGIN"
    assert results[2] == (first, False)
    assert results[3][1] and results[4] == (results[3][0], False)
    assert results[5][0]["status"] == "NEW"
    assert Order.objects.filter(trader=alice).count() == 4
    assert check_invariants() == []


@pytest.mark.django_db
def test_a_refusal_after_an_order_changed_the_group_undoes_the_group(monkeypatch):
    """Nothing may refuse an order once it has matched; if something did, the group is
    undone and each order placed alone, so the half-placed one leaves no trace."""
    MarketFactory()
    maker, taker = UserFactory(), UserFactory()
    for t in (maker, taker):
        fund(t, "1000000", mode=GROUPED)
    real = order_record.fills_record

    def refusing(market, mode, order, result, *rest):
        if result.fills:
            raise ExchangeError("INVALID_QTY", "refused late", field="qty")
        return real(market, mode, order, result, *rest)

    monkeypatch.setattr(order_record, "fills_record", refusing)

    def req(who, side):
        return OrderRequest(who, side, "LIMIT", D("0.1"), D("64000"), "GTC", False, None, "USER")

    (made, _), refused = _place_together(
        "BTC-PERP", GROUPED, [req(maker, "SELL"), req(taker, "BUY")]
    )
    assert made["status"] == "NEW" and refused.code == "INVALID_QTY"
    assert list(Order.objects.filter(mode=GROUPED).values_list("trader_id", "status")) == [
        (maker.pk, "NEW")
    ]
    assert not Trade.objects.exists()
    assert check_invariants() == []


@pytest.mark.django_db
@pytest.mark.parametrize("together", [False, True])
def test_a_fill_the_account_cannot_carry_is_refused_and_changes_nothing(together):
    """A reduce-only close whose realized loss exceeds the account's cash (in a market
    whose band lets the price through): the risk gate refuses it with
    INSUFFICIENT_MARGIN, and in a group the other order stands."""
    MarketFactory(price_band=D("0.5"))
    alice, bob, carol = UserFactory(), UserFactory(), UserFactory()
    fund(alice, "1000", mode=GROUPED)
    fund(bob, "1000000", mode=GROUPED)
    fund(carol, "1000000", mode=GROUPED)

    def req(who, side, price, reduce_only=False):
        return OrderRequest(
            who, side, "LIMIT", D("0.1"), D(price), "GTC", reduce_only, None, "USER"
        )

    _place_alone("BTC-PERP", GROUPED, req(bob, "SELL", "64000"))
    _place_alone("BTC-PERP", GROUPED, req(alice, "BUY", "64000"))
    _place_alone("BTC-PERP", GROUPED, req(carol, "BUY", "50000"))
    before = _state(GROUPED)
    close = req(alice, "SELL", "50000", reduce_only=True)
    if together:
        other = req(bob, "BUY", "40000")
        refused, (placed, _) = _place_together("BTC-PERP", GROUPED, [close, other])
        assert placed["status"] == "NEW"
        assert Order.objects.filter(pk=placed["id"]).exists()
    else:
        with pytest.raises(ExchangeError) as e:
            _place_alone("BTC-PERP", GROUPED, close)
        refused = e.value
        assert _state(GROUPED) == before
    assert refused.code == "INSUFFICIENT_MARGIN"
    assert "cannot carry" in str(refused)
    assert not Trade.objects.filter(mode=GROUPED, price=D("50000")).exists()
    assert check_invariants() == []


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_receiver_failing_after_the_commit_places_nothing_twice():
    """The group is committed before its events are sent: a receiver that fails then is
    logged, and neither undoes nor repeats the orders."""
    from trading import signals

    MarketFactory()
    maker, taker = UserFactory(), UserFactory()
    for t in (maker, taker):
        fund(t, "1000000", mode=GROUPED)

    def broken(sender, **kw):
        raise RuntimeError("a receiver fails")

    def req(who, side):
        return OrderRequest(who, side, "LIMIT", D("0.1"), D("64000"), "GTC", False, None, "USER")

    signals.book_changed.connect(broken)
    try:
        outcomes = _place_together("BTC-PERP", GROUPED, [req(maker, "SELL"), req(taker, "BUY")])
    finally:
        signals.book_changed.disconnect(broken)
    assert [o[0]["status"] for o in outcomes] == ["NEW", "FILLED"]
    assert Order.objects.filter(mode=GROUPED).count() == 2
    assert Trade.objects.filter(mode=GROUPED).count() == 1
    assert check_invariants() == []
    engine_cache_clear()


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_group_that_waits_too_long_for_a_row_lock_is_placed_order_by_order(caplog, monkeypatch):
    """A group holding its book waits at most GROUP_LOCK_WAIT_MS for a balance row that
    another transaction holds; it then rolls back and each order is placed alone (and
    waits as long as it takes)."""
    MarketFactory()
    held, free = UserFactory(), UserFactory()
    for t in (held, free):
        fund(t, "1000000", mode=GROUPED)
    row = Balance.objects.filter(trader=held, asset="USDC", mode=GROUPED)
    with (
        _locked_elsewhere(row) as release,
        caplog.at_level("INFO", logger="trading.orders.place"),
    ):
        _release_when_placing_alone(monkeypatch, release)
        outcomes = _place_together(
            "BTC-PERP", GROUPED, [_req(free, "BUY", "60000"), _req(held, "BUY", "60000")]
        )
        placed_alone = release.is_set()
    assert [o[0]["status"] for o in outcomes] == ["NEW", "NEW"]
    assert placed_alone
    assert "rolled back; placing each alone" in caplog.text
    assert Order.objects.filter(mode=GROUPED).count() == 2
    assert check_invariants() == []
    engine_cache_clear()


@pytest.mark.django_db
def test_trades_of_a_group_take_ascending_keys_when_later_makers_are_already_read():
    """The first order reads its maker and reserves its trades' keys with it; the later
    orders meet the same maker, read nothing, and their trades' keys are reserved when
    the group is written. Every trade and fill is written once, the trades in the order
    they happened, each fill with its own trade."""
    MarketFactory()
    maker, *takers = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    for who in (maker, *takers):
        fund(who, "1000000", mode=GROUPED)

    def req(who, side, qty):
        return OrderRequest(who, side, "LIMIT", D(qty), D("64000"), "GTC", False, None, "USER")

    (resting, _) = _place_alone("BTC-PERP", GROUPED, req(maker, "SELL", "1"))
    outcomes = _place_together("BTC-PERP", GROUPED, [req(t, "BUY", "0.125") for t in takers])
    placed = [o for o, _ in outcomes]
    assert [o["status"] for o in placed] == ["FILLED"] * 3
    trades = list(Trade.objects.filter(mode=GROUPED).order_by("id"))
    assert [t.taker_order_id for t in trades] == [o["id"] for o in placed]
    fills = list(Fill.objects.filter(mode=GROUPED).order_by("id"))
    assert len(fills) == 6 and len({f.pk for f in fills}) == 6
    for t in trades:
        mine = {(f.order_id, f.liquidity) for f in fills if f.trade_id == t.pk}
        assert mine == {(t.taker_order_id, "TAKER"), (resting["id"], "MAKER")}
    shown = [f["id"] for o in placed for f in o["fills"]]
    assert shown == [f.pk for f in fills if f.liquidity == "TAKER"]
    assert check_invariants() == []


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_group_whose_commit_waits_too_long_for_the_market_row_is_placed_order_by_order(
    monkeypatch,
):
    """While staff delist (the market row locked), a group's COMMIT waits for it to check
    its orders' reference to the market, past GROUP_LOCK_WAIT_MS: PostgreSQL refuses the
    COMMIT (55P03), which undid the group, so each order is placed alone, not answered
    with the database's error."""
    market = MarketFactory()
    a, b = UserFactory(), UserFactory()
    for t in (a, b):
        fund(t, "1000000", mode=GROUPED)
    _place_alone("BTC-PERP", GROUPED, _req(a, "SELL", "70000"))  # the book exists
    with _locked_elsewhere(Market.objects.filter(pk=market.pk)) as release:
        _release_when_placing_alone(monkeypatch, release)
        outcomes = _place_together(
            "BTC-PERP", GROUPED, [_req(a, "BUY", "60000"), _req(b, "BUY", "60000")]
        )
    assert [o[0]["status"] for o in outcomes] == ["NEW", "NEW"], outcomes
    assert check_invariants() == []
    engine_cache_clear()


def _req(who: User, side: str, price: str) -> OrderRequest:
    return OrderRequest(who, side, "LIMIT", D("0.1"), D(price), "GTC", False, None, "USER")


@contextmanager
def _locked_elsewhere(rows) -> Iterator[threading.Event]:
    """`rows` locked by another connection's transaction until the Event it yields is
    set, or the block ends (or 30 s passed, so a test that never lets go fails rather
    than hangs)."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                list(rows.select_for_update())
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join(10)


def _release_when_placing_alone(monkeypatch, release: threading.Event) -> None:
    """Let go of the lock held elsewhere once the group has given up and places its
    orders one by one, not before: the group surely waited past its limit, and the lone
    orders then wait as long as it takes."""
    real = order_services._place_alone

    def placing_alone(*args):
        release.set()
        return real(*args)

    monkeypatch.setattr(order_services, "_place_alone", placing_alone)
