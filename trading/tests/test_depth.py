"""Depth reads (trading/depth.py): what they cost whatever the book holds, the snapshot
made once per seq, and never an answer older than the seq the read saw."""

import threading
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from trading import depth
from trading.metrics import DEPTH_READS
from trading.models import Book
from trading.orders.cancel import order_cancel
from trading.orders.place import order_place, orders_place_many
from trading.presenters import dec
from trading.selectors import depth_get
from trading.services.books import engine_cache_clear

D = Decimal
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("invariants")]


def reads() -> dict[str, float]:
    return {
        source: DEPTH_READS.labels(source=source)._value.get()
        for source in ("snapshot", "engine", "database")
    }


def counted(fn) -> tuple[dict, dict[str, float]]:
    """fn's result, and the reads it made by source."""
    before = reads()
    result = fn()
    after = reads()
    return result, {k: after[k] - before[k] for k in after if after[k] != before[k]}


def book(**levels) -> dict:
    return depth_get(symbol="BTC-PERP", mode="PAPER", **levels)


def ladder(trader, side: str, n: int, start: int, step: int) -> None:
    """`n` price levels of `side`, a tick apart times `step`, two orders at every third."""
    orders = []
    for i in range(n):
        price = D(start) + D("0.5") * step * i
        for _ in range(2 if i % 3 == 0 else 1):
            orders.append(
                {"market": "BTC-PERP", "mode": "PAPER", "side": side, "type": "LIMIT",
                 "price": price, "qty": D("0.001")}
            )  # fmt: skip
    for outcome in orders_place_many(trader=trader, orders=orders):
        assert not isinstance(outcome, Exception), outcome


@pytest.fixture
def deep(perp, alice, bob):
    """A book of 600 levels a side: bids from 63,999 down, asks from 64,000 up."""
    ladder(alice, "BUY", 600, 63999, -1)
    ladder(bob, "SELL", 600, 64000, 1)
    return perp


def full_depth() -> tuple[list, list]:
    """Every level from the open orders, summed in Python: what depth must agree with."""
    from trading.models import Order

    sides: dict[str, dict[Decimal, Decimal]] = {"BUY": {}, "SELL": {}}
    for side, price, qty, filled in Order.objects.filter(
        mode="PAPER", status__in=["NEW", "PARTIALLY_FILLED"]
    ).values_list("side", "price", "qty", "filled_qty"):
        sides[side][price] = sides[side].get(price, D(0)) + qty - filled
    show = lambda levels: [[dec(p), dec(q)] for p, q in levels]  # noqa: E731
    return (
        show(sorted(sides["BUY"].items(), reverse=True)),
        show(sorted(sides["SELL"].items())),
    )


def test_depth_costs_the_levels_asked_not_the_book(deep):
    """levels=1 of a 1,200-level book: two statements (the book's seq, then the best
    levels of each side), each answering a bounded number of rows, when this process
    holds no copy of the book; one when it does."""
    engine_cache_clear()  # another process placed the orders
    with CaptureQueriesContext(connection) as ctx:
        top, source = counted(lambda: book(levels=1))
    assert source == {"database": 1}
    assert (top["bids"], top["asks"]) == ([["63999", "0.002"]], [["64000", "0.002"]])
    assert len(ctx.captured_queries) == 2, ctx.captured_queries
    # At most the orders of MIN_DEPTH levels a side (two at most at a level here; on
    # PostgreSQL a row a level), of the book's 1,600.
    with connection.cursor() as c:
        for q in ctx.captured_queries:
            c.execute(q["sql"])
            assert len(c.fetchall()) <= 2 * 2 * depth.MIN_DEPTH + 1, q["sql"]

    # The same seq again: the snapshot already made, one statement.
    with CaptureQueriesContext(connection) as ctx:
        again, source = counted(lambda: book(levels=5))
    assert source == {"snapshot": 1}
    assert len(ctx.captured_queries) == 1
    assert again["bids"][:1] == top["bids"] and len(again["bids"]) == 5


def test_every_source_agrees_with_the_open_orders(deep, alice, bob):
    bids, asks = full_depth()
    engine_cache_clear()
    for levels in (1, 7, 50, 51, 500, 1000):
        depth.snapshots_clear()
        got, source = counted(lambda levels=levels: book(levels=levels))
        assert source == {"database": 1}
        assert (got["bids"], got["asks"]) == (bids[:levels], asks[:levels]), levels
    # A change in this process leaves it the engine's copy of the book.
    order_place(
        trader=bob, market="BTC-PERP", mode="PAPER", side="SELL", type="LIMIT",
        price=D("64000.5"), qty=D("0.003"),
    )  # fmt: skip
    bids, asks = full_depth()
    for levels in (1, 7, 50, 51, 500, 1000):
        depth.snapshots_clear()
        got, source = counted(lambda levels=levels: book(levels=levels))
        assert source == {"engine": 1}
        assert (got["bids"], got["asks"]) == (bids[:levels], asks[:levels]), levels
        assert got["seq"] == Book.objects.get(market=deep, mode="PAPER").seq


def test_a_snapshot_serves_its_seq_and_never_past_a_change(perp, alice, bob):
    first = order_place(
        trader=alice, market="BTC-PERP", mode="PAPER", side="BUY", type="LIMIT",
        price=D("63000"), qty=D("0.01"),
    )[0]  # fmt: skip
    engine_cache_clear()
    made, source = counted(book)
    assert source == {"database": 1} and made["bids"] == [["63000", "0.01"]]
    _, source = counted(book)
    assert source == {"snapshot": 1}

    # A change made by this process: its engine copy answers at the new seq.
    order_place(
        trader=bob, market="BTC-PERP", mode="PAPER", side="SELL", type="LIMIT",
        price=D("64000"), qty=D("0.02"),
    )  # fmt: skip
    after, source = counted(book)
    assert source == {"engine": 1}
    assert after["seq"] == made["seq"] + 1 and after["asks"] == [["64000", "0.02"]]

    # A change made elsewhere (no engine copy here): the database, not the snapshot.
    order_cancel(trader=alice, order_id=first["id"])
    engine_cache_clear()
    gone, source = counted(book)
    assert source == {"database": 1}
    assert gone["seq"] == after["seq"] + 1 and gone["bids"] == []


def test_readers_at_one_seq_wait_for_one_computation(deep):
    engine_cache_clear()
    readers = 8
    start = threading.Barrier(readers)
    answers: list[dict] = []

    def read() -> None:
        try:
            start.wait()
            answers.append(book(levels=20))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=read) for _ in range(readers)]
    before = reads()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = reads()
    assert after["database"] - before["database"] == 1
    assert after["snapshot"] - before["snapshot"] == readers - 1
    assert all(a == answers[0] for a in answers) and len(answers) == readers


def test_a_read_inside_a_transaction_keeps_nothing(perp, alice):
    from django.db import transaction

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        order_place(
            trader=alice, market="BTC-PERP", mode="PAPER", side="BUY", type="LIMIT",
            price=D("63000"), qty=D("0.01"),
        )  # fmt: skip
        assert book()["bids"] == [["63000", "0.01"]]
        raise Rollback
    got, source = counted(book)
    assert source == {"database": 1} and got["bids"] == [] and got["seq"] == 0
