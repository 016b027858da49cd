"""Many threads, each with its own database connection, placing crossing orders on one
book at once. Row locks, not luck, must keep the books straight."""

import random
import threading
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.db.models import Sum

from accounts.models import User
from trading.invariants import check_invariants
from trading.models import Fill, Order
from trading.orders.cancel import orders_cancel_all
from trading.orders.place import order_place
from trading.tests.factories import MarketFactory, UserFactory, fund, spot_market

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)

requires_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks across connections need PostgreSQL"
)


def run_threads(n: int, target) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def wrapped(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as e:  # collected and reported by the test
            errors.append(e)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


@requires_postgres
@pytest.mark.parametrize("kind", ["PERP", "SPOT"])
def test_concurrent_crossing_orders_never_double_fill(kind):
    from dexsite.errors import ExchangeError

    market = MarketFactory() if kind == "PERP" else spot_market()
    traders = [UserFactory() for _ in range(6)]
    for t in traders:
        fund(t, "1000000")
        fund(t, "100000", asset="CXPT")
    mid = D("64000") if kind == "PERP" else D("1.25")
    tick = market.tick_size
    lot = market.lot_size

    def work(i: int) -> None:
        rng = random.Random(i)
        trader = User.objects.get(pk=traders[i].pk)
        for n in range(40):
            side = rng.choice(["BUY", "SELL"])
            offset = rng.randint(-5, 5) * tick
            try:
                if n % 7 == 6:
                    orders_cancel_all(trader=trader, mode="PAPER")
                    continue
                order_place(
                    trader=trader,
                    market=market.symbol,
                    mode="PAPER",
                    side=side,
                    type="LIMIT" if n % 5 else "MARKET",
                    price=None if n % 5 == 0 else mid + offset,
                    qty=lot * rng.randint(10, 200),
                )
            except ExchangeError:
                pass  # refusals (margin, min notional) are fine; corruption is not

    errors = run_threads(len(traders), work)
    assert errors == []
    assert Fill.objects.count() > 20, "the scenario must actually trade"
    buys = Fill.objects.filter(side="BUY").aggregate(s=Sum("qty"))["s"]
    sells = Fill.objects.filter(side="SELL").aggregate(s=Sum("qty"))["s"]
    assert buys == sells
    for o in Order.objects.all():
        filled = o.fills.aggregate(s=Sum("qty"))["s"] or D(0)
        assert filled == o.filled_qty <= o.qty
    assert check_invariants() == []


@requires_postgres
def test_same_client_order_id_from_many_threads_places_one_order():
    MarketFactory()
    trader = UserFactory()
    fund(trader, "100000")
    ids = []

    def work(i: int) -> None:
        body, _ = order_place(
            trader=User.objects.get(pk=trader.pk),
            market="BTC-PERP",
            mode="PAPER",
            side="BUY",
            type="LIMIT",
            price=D("60000"),
            qty=D("0.1"),
            client_order_id="same",
        )
        ids.append(body["id"])

    assert run_threads(8, work) == []
    assert len(set(ids)) == 1 and Order.objects.count() == 1
    assert check_invariants() == []


@requires_postgres
def test_concurrent_orders_cannot_overspend_margin():
    """Eight orders that each need most of the account race: at most one fits."""
    from dexsite.errors import ExchangeError

    MarketFactory()
    trader = UserFactory()
    fund(trader, "7000")  # one order of 1 BTC at 60000 x10 needs 6030
    outcomes = []

    def work(i: int) -> None:
        try:
            order_place(
                trader=User.objects.get(pk=trader.pk),
                market="BTC-PERP",
                mode="PAPER",
                side="BUY",
                type="LIMIT",
                price=D("60000") - i,
                qty=D("1"),
            )
            outcomes.append("ok")
        except ExchangeError as e:
            outcomes.append(e.code)

    assert run_threads(8, work) == []
    assert sorted(outcomes) == ["INSUFFICIENT_MARGIN"] * 7 + ["ok"]
    assert check_invariants() == []


def _market_maker_trader() -> tuple:
    """A perp and two funded accounts: one to make the book, one to trade on it."""
    maker, trader = UserFactory(), UserFactory()
    fund(maker, "1000000")
    fund(trader, "1000000")
    return MarketFactory(), maker, trader


@requires_postgres
def test_a_trigger_swept_by_many_clocks_at_once_fires_once():
    """Clocks racing on one crossed trigger: one places the order, the others find it
    gone under the book's lock."""
    from trading.orders.conditional import order_trigger
    from trading.tests.test_conditional import mark

    market, maker, trader = _market_maker_trader()
    order_place(trader=maker, market=market.symbol, mode="PAPER", side="BUY", type="LIMIT",
                price=D("62000"), qty=D("1"))  # fmt: skip
    held, _ = order_place(trader=trader, market=market.symbol, mode="PAPER", side="SELL",
                          type="STOP_MARKET", qty=D("0.1"), time_in_force="IOC",
                          trigger_price=D("63000"))  # fmt: skip
    mark(market, "62500")
    outcomes: list[str] = []
    errors = run_threads(6, lambda i: outcomes.append(order_trigger(held["id"])))
    assert errors == []
    assert sorted(outcomes) == ["GONE"] * 5 + ["PLACED"]
    fired = Order.objects.get(pk=held["id"])
    assert (fired.status, fired.filled_qty) == ("FILLED", D("0.1"))
    assert Fill.objects.filter(order=fired).count() == 1
    assert check_invariants() == []


@requires_postgres
def test_a_cancel_racing_the_trigger_either_cancels_it_or_finds_it_fired():
    """The trader cancels a stop as the clock fires it: one of the two wins under the
    book's lock, never both (no fill after a successful cancel, no order lost)."""
    from dexsite.errors import ExchangeError
    from trading.orders.cancel import order_cancel
    from trading.orders.conditional import order_trigger
    from trading.tests.test_conditional import mark

    market, maker, trader = _market_maker_trader()
    order_place(trader=maker, market=market.symbol, mode="PAPER", side="BUY", type="LIMIT",
                price=D("62000"), qty=D("1"))  # fmt: skip
    for _ in range(5):
        held, _ = order_place(trader=trader, market=market.symbol, mode="PAPER", side="SELL",
                              type="STOP_MARKET", qty=D("0.01"), time_in_force="IOC",
                              trigger_price=D("63000"))  # fmt: skip
        mark(market, "62500")
        outcome: dict[str, object] = {}

        def race(i: int, order_id: int = held["id"], out: dict = outcome) -> None:
            if i == 0:
                out["trigger"] = order_trigger(order_id)
            else:
                try:
                    out["cancel"] = order_cancel(trader=trader, order_id=order_id)["status"]
                except ExchangeError as e:
                    out["cancel"] = e.code

        assert run_threads(2, race) == []
        row = Order.objects.get(pk=held["id"])
        fills = Fill.objects.filter(order=row).count()
        if outcome["cancel"] == "CANCELED":
            assert (outcome["trigger"], row.status, fills) == ("GONE", "CANCELED", 0)
        else:
            assert outcome == {"trigger": "PLACED", "cancel": "ORDER_NOT_OPEN"}
            assert (row.status, fills) == ("FILLED", 1)
        mark(market, "64000")
    assert check_invariants() == []


@requires_postgres
def test_an_orders_take_profit_and_stop_loss_armed_by_many_clocks_at_once_arm_once():
    """Clocks racing to arm a filled order's TP/SL: one claims it, the position ends
    with one take-profit and one stop-loss (not one per clock, each closing it whole)."""
    from trading.orders.conditional import orders_tpsl_arm

    market, maker, trader = _market_maker_trader()
    rests, _ = order_place(trader=trader, market=market.symbol, mode="PAPER", side="BUY",
                           type="LIMIT", price=D("63500"), qty=D("0.1"),
                           take_profit=D("66000"), stop_loss=D("61000"))  # fmt: skip
    order_place(trader=maker, market=market.symbol, mode="PAPER", side="SELL", type="MARKET",
                qty=D("0.1"), time_in_force="IOC")  # fmt: skip
    armed: list[list[int]] = []
    assert run_threads(6, lambda i: armed.append(orders_tpsl_arm())) == []
    assert sorted(armed) == [[]] * 5 + [[rests["id"]]]
    waiting = Order.objects.filter(trader=trader, status="UNTRIGGERED").exclude(attached="")
    assert sorted(waiting.values_list("attached", flat=True)) == ["SL", "TP"]
    assert check_invariants() == []
