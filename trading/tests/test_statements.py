"""The write path's statement budget: a resting order and a crossing one each take a
fixed number of SQL statements, whatever the book holds, and publish their events in
one batch after the commit."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from realtime import broadcast
from trading.services.orders import order_place

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


def test_resting_and_crossing_orders_keep_to_their_statement_budget(perp, alice, bob):
    place(bob, "SELL", "64010")  # warm: balances, positions and the engine book exist
    place(alice, "BUY", "64010")
    for i in range(20):
        place(bob, "SELL", str(64100 + i))
    resting = statements(lambda: place(alice, "BUY", "63000"))
    crossing = statements(lambda: place(alice, "BUY", "64100"))
    # book lock, market (read after the lock: a pause or delisting that held it is seen),
    # taker balance lock, exposures, order insert, balance update, seq bump
    # (+ BEGIN/COMMIT)
    assert len(resting) <= 9, resting
    # + maker orders, maker balances, trade, fills, positions (read + write), ledger,
    # balances, orders, fee credit; and after the commit the position events' reads
    # (a ticker may add up to 4)
    assert len(crossing) <= 22, crossing
    assert not any("accounts_user" in q for q in resting + crossing)


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
