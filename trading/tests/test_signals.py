"""Domain events leave only after the transaction commits, and never for a rollback."""

from decimal import Decimal

import pytest
from django.db import transaction

from trading.services.orders import order_place
from trading.tests.factories import MarketFactory, UserFactory, fund

pytestmark = pytest.mark.django_db


def test_events_are_sent_on_commit_only(received, django_capture_on_commit_callbacks):
    MarketFactory()
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "100000")
    fund(bob, "100000")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        order_place(
            trader=alice,
            market="BTC-PERP",
            mode="PAPER",
            side="SELL",
            type="LIMIT",
            price=Decimal("64000"),
            qty=Decimal("0.1"),
        )
    assert received == [] and callbacks
    for cb in callbacks:
        cb()
    assert [name for name, _ in received] == ["book_changed", "order_updated"]
    assert received[0][1]["seq"] == 1 and received[0][1]["asks"] == [["64000", "0.1"]]

    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        order_place(
            trader=bob,
            market="BTC-PERP",
            mode="PAPER",
            side="BUY",
            type="MARKET",
            qty=Decimal("0.1"),
        )
    names = [name for name, _ in received]
    assert names == [
        "book_changed",
        "trade_executed",
        "order_updated",
        "order_updated",
        "fill_created",
        "fill_created",
        "position_updated",
    ]
    book = received[0][1]
    assert book["seq"] == 2 and book["asks"] == [["64000", "0"]]
    trade = received[1][1]["trade"]
    assert (trade["px"], trade["qty"], trade["side"]) == ("64000", "0.1", "BUY")


def test_no_event_for_a_rolled_back_order(received, django_capture_on_commit_callbacks):
    MarketFactory()
    alice = UserFactory()
    fund(alice, "100000")
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        order_place(
            trader=alice,
            market="BTC-PERP",
            mode="PAPER",
            side="SELL",
            type="LIMIT",
            price=Decimal("64000"),
            qty=Decimal("0.1"),
        )
        raise RuntimeError("the surrounding work failed")
    assert callbacks == [] and received == []
    # And the engine cache did not keep the rolled-back order: the next read is empty.
    from trading.selectors import depth_get

    assert depth_get(symbol="BTC-PERP", mode="PAPER")["asks"] == []
    order_place(
        trader=alice, market="BTC-PERP", mode="PAPER", side="BUY", type="MARKET", qty=Decimal("0.1")
    )
    from trading.models import Trade

    assert Trade.objects.count() == 0
