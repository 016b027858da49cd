"""The write path's statement budget: a resting order and a crossing one each take a
fixed number of SQL statements and of round trips to the database, whatever the book
holds, and publish their events in one batch after the commit."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dexsite.errors import ExchangeError
from realtime import broadcast
from trading.models import Book, Order
from trading.orders import persist
from trading.orders.place import order_place
from trading.tests.factories import UserFactory, fund, spot_market
from trading.tests.wire import round_trips

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


def place(user, side: str, price: str, qty: str = "0.01") -> dict:
    return order_place(
        trader=user, market="BTC-PERP", mode="PAPER", side=side, type="LIMIT",
        qty=D(qty), price=D(price),
    )[0]  # fmt: skip


def statements(fn) -> list[str]:
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return [q["sql"] for q in ctx.captured_queries]


def test_resting_and_crossing_orders_keep_to_their_statement_budget(perp, alice, bob, monkeypatch):
    place(bob, "SELL", "64010")  # warm: balances, positions and the engine book exist
    place(alice, "BUY", "64010")
    for i in range(20):
        place(bob, "SELL", str(64100 + i))
    resting = statements(lambda: place(alice, "BUY", "63000"))
    crossing = statements(lambda: place(alice, "BUY", "64100"))
    # book lock, market (read after the lock: a pause or delisting that held it is seen),
    # taker balance lock, exposures, the order's key, order insert, balance update, seq
    # bump (+ BEGIN/COMMIT)
    assert len(resting) <= 10, resting
    # + maker orders, maker balances, trade, fills, positions (read + write), ledger,
    # balances, orders, fee credit; and after the commit the position events' reads
    assert len(crossing) <= 22, crossing
    assert not any("accounts_user" in q for q in resting + crossing)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's pipeline mode")
def test_orders_wait_for_the_database_a_fixed_few_times(perp, alice, bob, monkeypatch):
    """The statements that need no answer of the one before go out together: the book's
    lock with the taker's balance rows, positions and the order's key; the makers'
    orders with their balance rows and positions; every write."""
    # (Not the ticker, which is read after the commit by another thread.)
    place(bob, "SELL", "64010")
    place(alice, "BUY", "64010")
    for i in range(20):
        place(bob, "SELL", str(64100 + i))
    # BEGIN, the opening, the writes, COMMIT (one statement each: 8)
    resting = round_trips(lambda: place(alice, "BUY", "63000"))
    assert resting <= 4, resting
    # + the makers with the trade and fill keys (one statement each: 12)
    crossing = round_trips(lambda: place(alice, "BUY", "64100"))
    assert crossing <= 5, crossing


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's pipeline mode")
def test_a_group_of_crossing_orders_waits_for_the_database_as_often_as_one(perp, alice, bob):
    """The makers a group's orders will meet are read before the first is matched, all
    in one round trip, however many of its orders cross."""
    from trading.orders.place import orders_place_many

    carol = UserFactory(username="carol")
    fund(carol, "100000")
    for maker in (bob, carol):  # warm: balances, positions and the engine book exist
        place(maker, "SELL", "64010")
        place(alice, "BUY", "64010")

    def buys(n: int) -> list[dict]:
        for i in range(n):
            place(bob if i % 2 else carol, "SELL", str(64100 + i))
        return [
            dict(market="BTC-PERP", mode="PAPER", side="BUY", type="LIMIT", qty=D("0.01"),
                 price=D(str(64100 + i)))
            for i in range(n)
        ]  # fmt: skip

    one = buys(1)
    alone = round_trips(lambda: orders_place_many(trader=alice, orders=one))
    four = buys(4)
    together = round_trips(lambda: orders_place_many(trader=alice, orders=four))
    assert together <= alone, (together, alone)
    placed = Order.objects.filter(trader=alice, price__gte=D("64100"))
    assert sorted(placed.values_list("status", flat=True)) == ["FILLED"] * 5


def test_one_commit_publishes_its_events_in_one_batch(perp, alice, bob, monkeypatch):
    place(bob, "SELL", "64010")
    batches: list[list[str]] = []
    real = broadcast.publish

    def recording(events, deltas=()):
        if broadcast._held.events is None:
            batches.append([e["kind"] for e in events])
        real(events, deltas)

    monkeypatch.setattr(broadcast, "publish", recording)
    place(alice, "BUY", "64010")
    assert len(batches) == 1
    kinds = batches[0]
    assert kinds[0] == "depth" and kinds[1] == "trade"
    assert {"orderUpdate", "fill", "positionUpdate", "balanceUpdate"} <= set(kinds)


@pytest.mark.parametrize("stale", [("PERP", "BTC", "USDC"), ("SPOT", "BTC", "USDC")])
def test_an_order_locks_and_reads_what_its_market_needs_whatever_was_known_of_it(
    perp, alice, bob, stale
):
    """The balance rows and positions read with the book's lock are those of the
    market's kind and assets as last seen; if the market read now differs, what it
    needs besides is locked and read before the order is checked."""
    spot = spot_market()
    fund(alice, "50", asset="CXPT")
    persist._shapes[spot.symbol] = stale  # a derivative's, or a spot market of other assets
    placed = order_place(
        trader=alice, market=spot.symbol, mode="PAPER", side="SELL", type="LIMIT",
        qty=D("2"), price=D("3"),
    )[0]  # fmt: skip
    assert placed["status"] == "NEW"
    assert persist._shapes[spot.symbol] == ("SPOT", "CXPT", "USDC")
    assert alice.balances.get(asset="CXPT", mode="PAPER").locked == D("2")
    # A perp opened with a spot market's shape still reads the account's positions: the
    # free margin counts the loss of the open one.
    place(bob, "SELL", "64000", qty="1")
    place(alice, "BUY", "64000", qty="1")  # alice long 1 BTC at 64,000, marked at 20,000
    Book.objects.filter(market=perp).update(mark_price=D("20000"))

    def refusal() -> str:
        with pytest.raises(ExchangeError) as refused:
            place(alice, "BUY", "20000", qty="100")
        assert refused.value.code == "INSUFFICIENT_MARGIN"
        return str(refused.value)

    right = refusal()
    persist._shapes[perp.symbol] = ("SPOT", "CXPT", "USDC")
    assert refusal() == right
