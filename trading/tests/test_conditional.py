"""Stop and take-profit orders: held off the book reserving nothing, fired once when the
mark (or the last trade) crosses the trigger, then placed like any order, or REJECTED
with the reason when the order path refuses them."""

from decimal import Decimal

import pytest
from django.db import connection

from trading.models import Book, Market, Order, Position
from trading.orders.conditional import order_trigger, triggers_due, triggers_fire
from trading.orders.request import fires
from trading.presenters import dec
from trading.tests.conftest import order
from trading.tests.factories import UserFactory, balance, fund

D = Decimal
# The checker's open-interest sums are exact on PostgreSQL; SQLite sums decimals as floats.
exact_sums = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the checker's exact sums: PostgreSQL"
)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("invariants")]
TRADE = "/api/v1/trade"


def mark(market: Market, price: str) -> None:
    """The mark as the clock sets it: on the market and its books."""
    Market.objects.filter(pk=market.pk).update(mark_price=D(price))
    Book.objects.filter(market=market).update(mark_price=D(price))


def long_of(api, api_maker, qty: str = "0.1") -> None:
    """A long for `api`'s trader at 64,000 from `api_maker`'s ask."""
    api_maker.post(TRADE, order(side="SELL", price="64000", qty=qty), format="json")
    r = api.post(TRADE, order(type="MARKET", qty=qty), format="json")
    assert r.json()["filledQty"] == qty, r.content


@pytest.mark.parametrize(
    ("type", "side", "price", "fired"),
    [
        ("STOP_MARKET", "SELL", "62999", True),  # a stop-loss of a long: the price falls
        ("STOP_MARKET", "SELL", "63000", True),  # touching it is enough
        ("STOP_MARKET", "SELL", "63001", False),
        ("STOP_LIMIT", "BUY", "63000", True),  # a stop buy: the price rises to it
        ("STOP_LIMIT", "BUY", "62999", False),
        ("TAKE_PROFIT_MARKET", "SELL", "63000", True),  # a take-profit of a long: it rises
        ("TAKE_PROFIT_MARKET", "SELL", "62999", False),
        ("TAKE_PROFIT_LIMIT", "BUY", "62999", True),  # of a short: it falls
    ],
)
def test_which_way_a_trigger_fires(type, side, price, fired):
    assert fires(type, side, D("63000"), D(price)) is fired


def test_a_stop_waits_off_the_book_reserving_nothing(perp, alice, api_alice):
    before = balance(alice).locked
    r = api_alice.post(
        TRADE,
        order(type="STOP_MARKET", side="SELL", qty="0.1", triggerPrice="63000", timeInForce="IOC"),
        format="json",
    )
    assert r.status_code == 201, r.content
    held = r.json()
    assert (held["status"], held["type"]) == ("UNTRIGGERED", "STOP_MARKET")
    assert (held["triggerPrice"], held["triggerBy"], held["price"]) == ("63000", "MARK", None)
    assert balance(alice).locked == before
    depth = api_alice.get("/api/v1/markets/BTC-PERP/depth?mode=PAPER").json()
    assert depth["bids"] == depth["asks"] == [] and depth["seq"] == 0
    listed = api_alice.get("/api/v1/orders?mode=PAPER&status=open").json()
    assert [o["id"] for o in listed] == [held["id"]]
    assert triggers_due() == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "STOP_MARKET", "side": "SELL"}, "MISSING_FIELD"),  # no triggerPrice
        ({"type": "STOP_MARKET", "side": "SELL", "triggerPrice": "63000.3"}, "INVALID_TRIGGER_PRICE"),
        ({"type": "STOP_MARKET", "side": "SELL", "triggerPrice": "65000"}, "WOULD_TRIGGER"),
        ({"type": "TAKE_PROFIT_MARKET", "side": "SELL", "triggerPrice": "63000"}, "WOULD_TRIGGER"),
        ({"type": "STOP_LIMIT", "side": "SELL", "triggerPrice": "63000"}, "INVALID_PRICE"),
        ({"type": "STOP_MARKET", "side": "SELL", "triggerPrice": "63000", "price": "63000"}, "INVALID_PRICE"),
        ({"type": "LIMIT", "side": "SELL", "price": "65000", "triggerPrice": "63000"}, "INVALID_TRIGGER_PRICE"),
        ({"type": "STOP_MARKET", "side": "SELL", "triggerPrice": "63000", "triggerBy": "INDEX"}, "INVALID_TRIGGER_BY"),
    ],
)  # fmt: skip
def test_a_conditional_order_refused_changes_nothing(perp, alice, api_alice, body, code):
    body = {"qty": "0.1", "timeInForce": "IOC" if "MARKET" in body["type"] else "GTC", **body}
    r = api_alice.post(TRADE, order(**body), format="json")
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == code, r.content
    assert Order.objects.count() == 0


def test_a_stop_loss_fires_once_when_the_mark_gaps_through_it(perp, alice, bob, api_alice, api_bob):
    long_of(api_bob, api_alice)
    stop = api_bob.post(
        TRADE,
        order(
            type="STOP_MARKET",
            side="SELL",
            qty="0.1",
            triggerPrice="63000",
            reduceOnly=True,
            timeInForce="IOC",
        ),
        format="json",
    ).json()
    api_alice.post(TRADE, order(side="BUY", price="62000", qty="1"), format="json")
    mark(perp, "63500")
    assert triggers_fire() == []
    mark(perp, "62500")  # past the trigger, in one move
    assert triggers_fire() == [(stop["id"], "PLACED")]
    fired = Order.objects.get(pk=stop["id"])
    assert (fired.type, fired.status, fired.filled_qty) == ("STOP_MARKET", "FILLED", D("0.1"))
    assert fired.filled_notional == D("6200")  # at the bid it met
    assert Position.objects.get(trader=bob).size == 0
    # Once: neither the sweep nor a late call fires it again.
    assert triggers_fire() == []
    assert order_trigger(stop["id"]) == "GONE"


@exact_sums
def test_a_take_profit_fires_on_the_last_trade(perp, alice, bob, api_alice, api_bob):
    long_of(api_bob, api_alice)
    tp = api_bob.post(
        TRADE,
        order(
            type="TAKE_PROFIT_LIMIT",
            side="SELL",
            qty="0.1",
            price="64500",
            triggerPrice="64400",
            triggerBy="LAST",
            reduceOnly=True,
        ),
        format="json",
    ).json()
    assert tp["status"] == "UNTRIGGERED"
    # The mark is far past it, but this one watches trades.
    mark(perp, "66000")
    assert triggers_fire() == []
    carol = UserFactory(username="carol")
    fund(carol, "100000")
    api_alice.post(TRADE, order(side="SELL", price="64450", qty="0.01"), format="json")
    from trading.tests.conftest import client_for

    client_for(carol).post(TRADE, order(type="MARKET", qty="0.01"), format="json")
    assert triggers_fire() == [(tp["id"], "PLACED")]
    rested = Order.objects.get(pk=tp["id"])
    # A limit: it rests on the book now, reserving nothing (reduce-only).
    assert (rested.status, rested.price, rested.reserved) == ("NEW", D("64500"), 0)
    depth = api_bob.get("/api/v1/markets/BTC-PERP/depth?mode=PAPER").json()
    assert ["64500", "0.1"] in depth["asks"]


def test_a_triggered_order_the_gate_refuses_is_rejected_with_the_reason(
    perp, alice, api_alice, received, django_capture_on_commit_callbacks
):
    poor = UserFactory(username="poor")
    fund(poor, "100")
    from trading.tests.conftest import client_for

    api_poor = client_for(poor)
    api_alice.post(TRADE, order(side="SELL", price="65000", qty="1"), format="json")
    stop = api_poor.post(
        TRADE,
        order(type="STOP_MARKET", side="BUY", qty="1", triggerPrice="64500", timeInForce="IOC"),
        format="json",
    ).json()
    assert stop["status"] == "UNTRIGGERED"  # nothing is judged until it fires
    mark(perp, "64600")
    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert triggers_fire() == [(stop["id"], "INSUFFICIENT_MARGIN")]
    refused = api_poor.get(f"/api/v1/orders/{stop['id']}").json()
    assert (refused["status"], refused["cancelReason"]) == ("REJECTED", "INSUFFICIENT_MARGIN")
    # The trader hears of it on its channel.
    updates = [p["order"] for name, p in received if name == "order_updated"]
    assert [(u["id"], u["status"]) for u in updates] == [(stop["id"], "REJECTED")]
    assert triggers_fire() == []


def test_cancel_and_cancel_all_take_waiting_orders_unless_told_to_leave_them(
    perp, alice, api_alice
):
    def hold(trigger: str) -> int:
        body = order(type="STOP_MARKET", side="SELL", qty="0.1", triggerPrice=trigger)
        body["timeInForce"] = "IOC"
        return api_alice.post(TRADE, body, format="json").json()["id"]

    one, two = hold("63000"), hold("62000")
    resting = api_alice.post(TRADE, order(price="60000", qty="0.1"), format="json").json()["id"]
    r = api_alice.delete(f"/api/v1/orders/{one}")
    assert (r.status_code, r.json()["status"]) == (200, "CANCELED")
    r = api_alice.delete("/api/v1/orders?mode=PAPER&conditional=false")
    assert r.json()["canceledIds"] == [resting]
    assert Order.objects.get(pk=two).status == "UNTRIGGERED"
    r = api_alice.delete("/api/v1/orders?mode=PAPER")
    assert r.json()["canceledIds"] == [two]
    assert api_alice.delete("/api/v1/orders?mode=PAPER&conditional=maybe").status_code == 400
    mark(perp, "61000")
    assert triggers_fire() == []


def test_a_batch_holds_its_conditional_orders(perp, alice, api_alice):
    r = api_alice.post(
        "/api/v1/trade/batch",
        {
            "orders": [
                order(price="60000", qty="0.1"),
                order(type="STOP_MARKET", side="SELL", qty="0.1", triggerPrice="63000",
                      timeInForce="IOC"),
                order(type="STOP_MARKET", side="SELL", qty="0.1", triggerPrice="65000",
                      timeInForce="IOC"),
                order(price="60000", qty="0.1", triggerPrice="63000"),
            ]
        },
        format="json",
    )  # fmt: skip
    results = r.json()["results"]
    assert [x.get("status") or x["error"]["code"] for x in results] == [
        "NEW",
        "UNTRIGGERED",
        "WOULD_TRIGGER",
        "INVALID_TRIGGER_PRICE",
    ]
    assert Order.objects.filter(status="UNTRIGGERED").count() == 1


TPSL = "/api/v1/positions/BTC-PERP/tpsl"


def test_tp_and_sl_of_a_position_one_cancels_the_other(perp, alice, bob, api_alice, api_bob):
    long_of(api_bob, api_alice, qty="0.1")
    r = api_bob.post(
        TPSL, {"mode": "PAPER", "takeProfit": "66000", "stopLoss": "62000"}, format="json"
    )
    assert r.status_code == 200, r.content
    tp, sl = r.json()["takeProfit"], r.json()["stopLoss"]
    assert (tp["type"], tp["side"], tp["triggerPrice"], tp["status"]) == (
        "TAKE_PROFIT_MARKET",
        "SELL",
        "66000",
        "UNTRIGGERED",
    )
    assert (sl["type"], sl["qty"], sl["reduceOnly"]) == ("STOP_MARKET", "0.1", True)
    # The position grows: the TP/SL close all of it, as it is when they fire.
    api_alice.post(TRADE, order(side="SELL", price="64000", qty="0.05"), format="json")
    api_bob.post(TRADE, order(type="MARKET", qty="0.05"), format="json")
    api_alice.post(TRADE, order(side="BUY", price="65900", qty="1"), format="json")
    mark(perp, "66100")
    assert triggers_fire() == [(tp["id"], "PLACED")]
    assert Position.objects.get(trader=bob).size == 0
    assert Order.objects.get(pk=tp["id"]).filled_qty == D("0.15")
    gone = Order.objects.get(pk=sl["id"])
    assert (gone.status, gone.cancel_reason) == ("CANCELED", "OCO")


def test_a_tp_sl_is_replaced_removed_and_leaves_with_its_position(
    perp, alice, bob, api_alice, api_bob
):
    from trading.orders.conditional import tpsl_tidy

    long_of(api_bob, api_alice, qty="0.1")
    first = api_bob.post(TPSL, {"mode": "PAPER", "stopLoss": "62000"}, format="json").json()
    assert first["takeProfit"] is None
    # A new stop-loss replaces the old; an absent take-profit is left as it is (none).
    second = api_bob.post(TPSL, {"mode": "PAPER", "stopLoss": "62500"}, format="json").json()
    assert Order.objects.get(pk=first["stopLoss"]["id"]).status == "CANCELED"
    assert second["stopLoss"]["triggerPrice"] == "62500"
    # Refused where it would fire at once, named for its field; nothing changes.
    r = api_bob.post(TPSL, {"mode": "PAPER", "takeProfit": "63000"}, format="json")
    assert r.json()["error"]["code"] == "WOULD_TRIGGER"
    assert r.json()["error"]["field"] == "takeProfit"
    assert Order.objects.get(pk=second["stopLoss"]["id"]).status == "UNTRIGGERED"
    # null removes it.
    third = api_bob.post(
        TPSL, {"mode": "PAPER", "takeProfit": "66000", "stopLoss": None}, format="json"
    ).json()
    assert third["stopLoss"] is None
    assert Order.objects.get(pk=second["stopLoss"]["id"]).status == "CANCELED"
    # The position closes another way: its TP goes with it.
    api_alice.post(TRADE, order(side="BUY", price="63900", qty="1"), format="json")
    api_bob.post("/api/v1/positions/BTC-PERP/close", {"mode": "PAPER"}, format="json")
    assert tpsl_tidy() == [third["takeProfit"]["id"]]
    left = Order.objects.get(pk=third["takeProfit"]["id"])
    assert (left.status, left.cancel_reason) == ("CANCELED", "POSITION_CLOSED")
    r = api_bob.post(TPSL, {"mode": "PAPER", "stopLoss": "62000"}, format="json")
    assert r.json()["error"]["code"] == "NO_POSITION"


def test_tp_and_sl_crossed_in_one_update_fire_exactly_one(perp, alice, bob, api_alice, api_bob):
    """Both of a position's TP and SL due in one sweep (one watches the last trade, the
    other the mark): the first closes the position, the other is cancelled, not fired."""
    long_of(api_bob, api_alice, qty="0.1")
    r = api_bob.post(
        TPSL, {"mode": "PAPER", "takeProfit": "64500", "stopLoss": "63500"}, format="json"
    ).json()
    tp, sl = r["takeProfit"]["id"], r["stopLoss"]["id"]
    Order.objects.filter(pk=tp).update(trigger_by="LAST")
    api_alice.post(TRADE, order(side="BUY", price="63000", qty="1"), format="json")
    Book.objects.filter(market=perp).update(last_price=D("64600"))
    mark(perp, "63400")
    assert sorted(triggers_due()) == [tp, sl]
    fired = dict(triggers_fire())
    assert sorted(fired.values()) == ["GONE", "PLACED"]
    assert Position.objects.get(trader=bob).size == 0
    statuses = sorted(Order.objects.filter(pk__in=[tp, sl]).values_list("status", "cancel_reason"))
    assert statuses == [("CANCELED", "OCO"), ("FILLED", "")]


def test_a_paused_markets_triggers_wait_for_it(perp, alice, api_alice):
    from trading.services.markets import market_pause, market_resume

    stop = api_alice.post(
        TRADE,
        order(type="STOP_MARKET", side="SELL", qty="0.1", triggerPrice="63000", timeInForce="IOC"),
        format="json",
    ).json()
    market_pause(market=perp)
    mark(perp, "62000")
    assert triggers_fire() == []
    market_resume(market=perp)
    assert triggers_due() == [stop["id"]]


def test_an_armed_trigger_fires_once_whichever_clock_runs(perp, alice, bob, api_alice, api_bob):
    """The trigger lives in the database, not in a clock: the sweep of a clock started
    after the price crossed (its marks job, then its triggers job) fires it, and the next
    clock's finds nothing left to fire."""
    from trading.models import Fill
    from trading.services.books import engine_cache_clear
    from trading.services.prices import index_set, marks_refresh

    long_of(api_bob, api_alice)
    stop = api_bob.post(
        TRADE,
        order(type="STOP_MARKET", side="SELL", qty="0.1", triggerPrice="63000", reduceOnly=True,
              timeInForce="IOC"),
        format="json",
    ).json()  # fmt: skip
    api_alice.post(TRADE, order(side="BUY", price="62400", qty="1"), format="json")
    index_set(underlying=perp.underlying, price=D("62500"))
    engine_cache_clear()  # a new process: nothing of the last one in memory
    marks_refresh()
    assert triggers_fire() == [(stop["id"], "PLACED")]
    fired = Order.objects.get(pk=stop["id"])
    assert (fired.status, fired.filled_qty) == ("FILLED", D("0.1"))
    engine_cache_clear()
    marks_refresh()
    assert triggers_fire() == []
    assert Fill.objects.filter(order=fired).count() == 1


def test_an_account_cannot_flood_the_trigger_sweep(perp, alice, api_alice, settings):
    """Waiting orders cost nothing to hold but every sweep reads them: each account may
    have CONDITIONAL_ORDERS_MAX waiting per mode."""
    settings.CONDITIONAL_ORDERS_MAX = 3
    body = order(type="STOP_MARKET", side="SELL", qty="0.1", triggerPrice="63000")
    body["timeInForce"] = "IOC"
    for _ in range(3):
        assert api_alice.post(TRADE, body, format="json").status_code == 201
    r = api_alice.post(TRADE, body, format="json")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "TOO_MANY_CONDITIONAL_ORDERS")
    assert Order.objects.filter(status="UNTRIGGERED").count() == 3
    # A cancelled one frees its place.
    api_alice.delete(f"/api/v1/orders/{Order.objects.filter(status='UNTRIGGERED').first().pk}")
    assert api_alice.post(TRADE, body, format="json").status_code == 201


def test_an_off_market_print_between_ones_own_accounts_cannot_fire_a_stop(
    perp, alice, bob, api_alice, api_bob
):
    """Stop hunting with two accounts: to fire a victim's LAST-price stop 10 % below the
    mark, the attacker would print a trade there between its own accounts. The price
    band refuses that print, so the stop waits, and the victim's position stands."""
    long_of(api_bob, api_alice, qty="0.1")  # bob: the victim
    stop = api_bob.post(
        TRADE,
        order(type="STOP_MARKET", side="SELL", qty="0.1", triggerPrice="57600",
              triggerBy="LAST", reduceOnly=True, timeInForce="IOC"),
        format="json",
    ).json()  # fmt: skip
    mallory, mallet = UserFactory(username="mallory"), UserFactory(username="mallet")
    for u in (mallory, mallet):
        fund(u, "100000")
    from trading.tests.conftest import client_for

    bid = client_for(mallory).post(
        TRADE, order(side="BUY", price="57600", qty="0.01"), format="json"
    )
    ask = client_for(mallet).post(
        TRADE, order(side="SELL", price="57600", qty="0.01"), format="json"
    )
    assert bid.status_code == 201  # a bid far below the mark only rests
    assert ask.json()["error"]["code"] == "PRICE_OUT_OF_BAND"
    assert triggers_fire() == []
    assert Order.objects.get(pk=stop["id"]).status == "UNTRIGGERED"
    assert Position.objects.get(trader=bob).size == D("0.1")


# -- TP/SL attached to an order --------------------------------------------------------


def _attached(trader) -> dict[str, str]:
    """The position's TP/SL as orders: attached kind -> trigger price."""
    return {
        o.attached: dec(o.trigger_price)
        for o in Order.objects.filter(trader=trader, status="UNTRIGGERED").exclude(attached="")
    }


def test_a_take_profit_and_stop_loss_attached_to_a_taker_order_guard_its_position(
    perp, alice, bob, api_alice, api_bob
):
    api_alice.post(TRADE, order(side="SELL", price="64000", qty="0.1"), format="json")
    r = api_bob.post(
        TRADE,
        order(type="MARKET", qty="0.1", takeProfit="66000", stopLoss="62000"),
        format="json",
    )
    assert r.status_code == 201, r.content
    body = r.json()
    assert (body["takeProfit"], body["stopLoss"], body["filledQty"]) == ("66000", "62000", "0.1")
    assert _attached(bob) == {"TP": "66000", "SL": "62000"}
    # They are the position's: the stop-loss fires and closes the long.
    api_alice.post(TRADE, order(side="BUY", price="61500", qty="1"), format="json")
    mark(perp, "61900")
    fired = dict(triggers_fire())
    assert list(fired.values()) == ["PLACED"]
    assert Position.objects.get(trader=bob).size == 0


def test_a_resting_orders_take_profit_waits_for_its_fill(perp, alice, bob, api_alice, api_bob):
    from trading.orders.conditional import orders_tpsl_arm

    rests = api_bob.post(
        TRADE, order(side="BUY", price="63500", qty="0.1", takeProfit="65000"), format="json"
    ).json()
    assert rests["status"] == "NEW" and rests["takeProfit"] == "65000"
    assert orders_tpsl_arm() == [] and _attached(bob) == {}
    api_alice.post(TRADE, order(side="SELL", type="MARKET", qty="0.04"), format="json")
    # The clock's look: armed once, sized to the whole position when it fires.
    assert orders_tpsl_arm() == [rests["id"]]
    assert orders_tpsl_arm() == []
    assert _attached(bob) == {"TP": "65000"}
    listed = api_bob.get(f"/api/v1/orders/{rests['id']}").json()
    assert listed["takeProfit"] == "65000" and "stopLoss" not in listed


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"price": "63000", "takeProfit": "62000"}, "takeProfit", "INVALID_TRIGGER_PRICE"),
        ({"price": "63000", "stopLoss": "63500"}, "stopLoss", "INVALID_TRIGGER_PRICE"),
        ({"side": "SELL", "price": "65000", "takeProfit": "66000"}, "takeProfit", "INVALID_TRIGGER_PRICE"),
        ({"price": "63000", "stopLoss": "62000.3"}, "stopLoss", "INVALID_TRIGGER_PRICE"),
        ({"price": "63000", "takeProfit": "65000", "reduceOnly": True}, "takeProfit", "INVALID_REDUCE_ONLY"),
        ({"type": "STOP_MARKET", "triggerPrice": "65000", "timeInForce": "IOC", "stopLoss": "60000"}, "stopLoss", "INVALID_TYPE"),
    ],
)  # fmt: skip
def test_an_attached_tpsl_on_the_wrong_side_is_refused_and_changes_nothing(
    perp, api_alice, body, field, code
):
    r = api_alice.post(TRADE, order(qty="0.1", **body), format="json")
    assert r.status_code == 400, r.content
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (code, field)
    assert Order.objects.count() == 0


# -- trailing stops ---------------------------------------------------------------------


def test_a_trailing_stop_follows_the_mark_up_and_fires_on_the_pullback(
    perp, alice, bob, api_alice, api_bob
):
    long_of(api_bob, api_alice)
    r = api_bob.post(
        TRADE,
        order(
            type="TRAILING_STOP_MARKET",
            side="SELL",
            qty="0.1",
            callbackRate="1",
            reduceOnly=True,
            timeInForce="IOC",
        ),
        format="json",
    )
    assert r.status_code == 201, r.content
    trail = r.json()
    # 1 % behind the mark (64,000), on the tick grid.
    assert (trail["status"], trail["triggerPrice"], trail["callbackRate"]) == (
        "UNTRIGGERED",
        "63360",
        "1",
    )
    api_alice.post(TRADE, order(side="BUY", price="64500", qty="1"), format="json")
    mark(perp, "65000.5")
    assert triggers_fire() == []
    assert Order.objects.get(pk=trail["id"]).trigger_price == D("64350")
    # A fall that leaves the trigger where the best price put it.
    mark(perp, "64800")
    assert triggers_fire() == []
    assert Order.objects.get(pk=trail["id"]).trigger_price == D("64350")
    mark(perp, "64350")
    assert triggers_fire() == [(trail["id"], "PLACED")]
    assert Position.objects.get(trader=bob).size == 0


def test_a_trailing_buy_follows_the_mark_down(perp, alice, api_alice):
    r = api_alice.post(
        TRADE,
        order(type="TRAILING_STOP_MARKET", qty="0.1", callbackRate="0.5", timeInForce="IOC"),
        format="json",
    )
    trail = r.json()
    assert trail["triggerPrice"] == "64320"  # 64,000 + 0.5 %, rounded up to the tick
    mark(perp, "63000")
    triggers_fire()
    assert Order.objects.get(pk=trail["id"]).trigger_price == D("63315")


@pytest.mark.parametrize(
    ("extra", "field", "code"),
    [
        ({}, "callbackRate", "MISSING_FIELD"),
        ({"callbackRate": "0.05"}, "callbackRate", "INVALID_CALLBACK_RATE"),
        ({"callbackRate": "10.5"}, "callbackRate", "INVALID_CALLBACK_RATE"),
        ({"callbackRate": "1.005"}, "callbackRate", "INVALID_CALLBACK_RATE"),
        ({"callbackRate": "1", "triggerPrice": "63000"}, "triggerPrice", "INVALID_TRIGGER_PRICE"),
    ],
)
def test_a_trailing_stop_needs_a_callback_rate_in_range(perp, api_alice, extra, field, code):
    body = order(type="TRAILING_STOP_MARKET", side="SELL", qty="0.1", timeInForce="IOC", **extra)
    r = api_alice.post(TRADE, body, format="json")
    assert r.status_code == 400, r.content
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (code, field)
    assert Order.objects.count() == 0


def test_a_limit_order_takes_no_callback_rate(perp, api_alice):
    r = api_alice.post(TRADE, order(price="63000", qty="0.1", callbackRate="1"), format="json")
    assert r.json()["error"]["code"] == "INVALID_CALLBACK_RATE"


def test_a_positions_tpsl_takes_no_callback_rate(perp, alice, bob, api_alice, api_bob):
    """A trailing distance means nothing to a position's TP/SL: refused, not ignored."""
    long_of(api_bob, api_alice)
    r = api_bob.post(
        TPSL, {"mode": "PAPER", "stopLoss": "62000", "callbackRate": "1"}, format="json"
    )
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"] == "callbackRate"
    assert not Order.objects.filter(trader=bob, status="UNTRIGGERED").exists()
