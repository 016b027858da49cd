"""Domain events leave only after the transaction commits, and never for a rollback."""

import json
from decimal import Decimal

import pytest
from django.db import transaction

from trading import signals
from trading.orders.place import order_place
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


def test_commits_of_one_book_send_in_seq_order_across_threads(monkeypatch):
    """The thread that committed seq 7 waits for the events of seq 6 (committed just
    before, by another thread) to be sent first; a predecessor this process never sends
    (another process's) holds it only COMMIT_ORDER_WAIT."""
    import threading
    import time

    waiting = threading.Event()

    class Watched(threading.Condition):
        """The condition senders wait on, saying when one starts waiting."""

        def wait(self, timeout=None):
            waiting.set()
            return super().wait(timeout)

    monkeypatch.setattr(signals, "_sent_changed", Watched())
    monkeypatch.setattr(signals, "_sent_seq", {})
    # Long enough that seq 7 cannot give up waiting while the test looks.
    monkeypatch.setattr(signals, "COMMIT_ORDER_WAIT", 10.0)
    book = ("ORDER-TEST", "PAPER")
    sent: list[int] = []
    with signals.in_commit_order(book, 5, 5):
        sent.append(5)

    def later() -> None:
        with signals.in_commit_order(book, 7, 7):
            sent.append(7)

    t = threading.Thread(target=later)
    t.start()
    assert waiting.wait(5), "seq 7 did not wait for seq 6"
    assert sent == [5], "seq 7 went ahead of seq 6"
    with signals.in_commit_order(book, 6, 6):
        sent.append(6)
    t.join(5)
    assert not t.is_alive() and sent == [5, 6, 7]

    # The bound is what this part tests: a commit whose predecessor never comes goes
    # ahead after COMMIT_ORDER_WAIT, not after the 10 s above (1 s: 50 times the wait).
    monkeypatch.setattr(signals, "COMMIT_ORDER_WAIT", 0.02)
    t0 = time.monotonic()
    with signals.in_commit_order(book, 9, 10):  # seq 8 was another process's
        sent.append(9)
    waited = time.monotonic() - t0
    assert signals.COMMIT_ORDER_WAIT * 0.9 <= waited < 1
    with signals.in_commit_order(book, None, None):  # a commit that left the book as is
        sent.append(0)
    assert sent == [5, 6, 7, 9, 0]


def test_position_events_carry_the_positions_as_a_fresh_read_shows_them(
    received, django_capture_on_commit_callbacks
):
    """The positions an order moved are sent as its transaction left them, without
    reading them again: the same objects the REST positions show, liquidation prices
    included (which depend on the account's other positions)."""
    from trading.orders.place import orders_place_many
    from trading.selectors import positions_in_market, positions_list

    MarketFactory()
    MarketFactory(symbol="ETH-PERP", base="ETH", underlying="ETH", mark_price=Decimal("3000"))
    maker, other, taker = UserFactory(), UserFactory(), UserFactory()
    fund(maker, "20000")
    fund(other, "20000")
    # Little cash: the taker's liquidation price then depends on its ETH position.
    fund(taker, "3000")

    def place(trader, market, side, qty, price=None):
        kind = "LIMIT" if price else "MARKET"
        price = Decimal(price) if price else None
        with django_capture_on_commit_callbacks(execute=True):
            order_place(
                trader=trader, market=market, mode="PAPER", side=side, type=kind,
                qty=Decimal(qty), price=price,
            )  # fmt: skip

    # The maker and the taker hold ETH positions too (they move their liquidation price).
    place(maker, "ETH-PERP", "SELL", "2", "3000")
    place(taker, "ETH-PERP", "BUY", "1")
    place(other, "ETH-PERP", "BUY", "1")
    place(maker, "BTC-PERP", "SELL", "0.2", "64000")
    place(other, "BTC-PERP", "SELL", "0.1", "64010")
    received.clear()
    # Two orders in one transaction: the taker's second order meets a maker whose
    # position the first one did not touch.
    with django_capture_on_commit_callbacks(execute=True):
        orders_place_many(
            trader=taker,
            orders=[
                dict(market="BTC-PERP", mode="PAPER", side="BUY", type="MARKET", qty=Decimal("0.15")),
                dict(market="BTC-PERP", mode="PAPER", side="BUY", type="MARKET", qty=Decimal("0.1")),
            ],
        )  # fmt: skip
    (event,) = [e for name, e in received if name == "position_updated"]
    assert event["shown"] is not None  # carried, not left to the receiver to read
    shown = {int(t): p for t, p in event["shown"].items()}  # (the fixture's JSON)
    assert set(shown) == {maker.pk, other.pk, taker.pk}

    def as_sent(value):
        return json.loads(json.dumps(value))

    read = positions_in_market(trader_ids=shown, mode="PAPER", market="BTC-PERP")
    assert shown == {t: as_sent(p) for t, p in read.items()}
    for user in (maker, other, taker):
        (rest,) = [
            p for p in positions_list(trader=user, mode="PAPER") if p["market"] == "BTC-PERP"
        ]
        assert shown[user.pk] == as_sent(rest)
    assert shown[taker.pk]["liquidationPrice"] is not None
