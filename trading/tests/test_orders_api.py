"""The order path through the REST API against the database: exact amounts, every
contract error (and that it changes nothing), idempotency, pagination."""

from decimal import Decimal

import pytest
from django.db import connection

from accounts.models import User
from ledger.models import Balance, LedgerEntry
from ledger.services import FEE_ACCOUNT
from trading.models import Book, Fill, Market, Order, Position, Trade
from trading.services.markets import market_delist, market_pause, market_resume
from trading.tests.conftest import client_for, order
from trading.tests.factories import UserFactory, balance, fund

D = Decimal
# The checker's open-interest sums are exact on PostgreSQL; SQLite sums decimals as floats.
exact_sums = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the checker's exact sums: PostgreSQL"
)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("invariants")]


def state() -> tuple:
    """Everything an order could change."""
    return (
        Order.objects.count(),
        Fill.objects.count(),
        LedgerEntry.objects.count(),
        sorted(Balance.objects.values_list("trader_id", "asset", "mode", "total", "locked")),
        list(Book.objects.order_by("pk").values_list("seq", flat=True)),
    )


def test_limit_order_rests_and_shows_in_open_orders_and_depth(perp, api_alice, alice):
    r = api_alice.post(
        "/api/v1/trade", order(side="SELL", price="64000.5", qty="0.5"), format="json"
    )
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "NEW"
    assert body["filledQty"] == "0" and body["fills"] == []
    # 0.5 * 64000.5 * (1/10 leverage + 0.0005 taker fee) reserved as margin.
    assert balance(alice).locked == D("3216.025125")

    open_orders = api_alice.get("/api/v1/orders?mode=PAPER&status=open").json()
    assert [o["id"] for o in open_orders] == [body["id"]]
    depth = api_alice.get("/api/v1/markets/BTC-PERP/depth?mode=PAPER").json()
    assert depth == {
        "market": "BTC-PERP",
        "mode": "PAPER",
        "seq": 1,
        "bids": [],
        "asks": [["64000.5", "0.5"]],
    }
    # REAL is a separate world.
    real = api_alice.get("/api/v1/markets/BTC-PERP/depth?mode=REAL").json()
    assert real["asks"] == [] and real["seq"] == 0


def test_crossing_orders_fill_with_exact_fees_positions_and_pnl(
    perp, alice, bob, api_alice, api_bob
):
    api_alice.post("/api/v1/trade", order(side="SELL", price="64000.5", qty="0.5"), format="json")
    r = api_bob.post("/api/v1/trade", order(type="MARKET", qty="0.2"), format="json")
    assert r.status_code == 201, r.content
    taker = r.json()
    assert taker["status"] == "FILLED"
    assert taker["avgFillPrice"] == "64000.5"
    (fill,) = taker["fills"]
    # 0.2 * 64000.5 = 12800.1 notional; taker 0.05%, maker 0.02%.
    assert fill["fee"] == "6.40005" and fill["liquidity"] == "TAKER"
    assert balance(bob).total == D("99993.59995")
    assert balance(alice).total == D("99997.43998")
    fees = User.objects.get(username=FEE_ACCOUNT)
    assert balance(fees).total == D("8.96007")
    # Alice's reservation shrinks with what remains of her order (0.3 of 0.5).
    assert balance(alice).locked == D("1929.615075")

    positions = api_bob.get("/api/v1/positions?mode=PAPER").json()
    assert positions[0]["side"] == "LONG" and positions[0]["size"] == "0.2"
    assert positions[0]["entryPrice"] == "64000.5"
    assert positions[0]["unrealizedPnl"] == "-0.1"  # mark 64000

    # Alice bids lower; Bob closes into it: half his position at 63000.
    api_alice.post("/api/v1/trade", order(side="BUY", price="63000", qty="0.1"), format="json")
    r = api_bob.post("/api/v1/positions/BTC-PERP/close", {"mode": "PAPER"}, format="json")
    assert r.status_code == 201, r.content
    close = r.json()
    assert close["reduceOnly"] is True and close["type"] == "MARKET"
    assert close["filledQty"] == "0.1" and close["status"] == "CANCELED"
    # A market order never rests: it says so.
    assert (close["timeInForce"], close["cancelReason"]) == ("IOC", "MARKET")
    bob_pos = Position.objects.get(trader=bob)
    alice_pos = Position.objects.get(trader=alice)
    # Bob: 0.1*63000 - 12800.1/2 = -100.05; Alice the mirror image.
    assert bob_pos.realized_pnl == D("-100.05") and bob_pos.size == D("0.1")
    assert alice_pos.realized_pnl == D("100.05") and alice_pos.size == D("-0.1")
    assert Trade.objects.count() == 2


def test_spot_trade_moves_base_and_quote_exactly(spot, alice, bob, api_alice, api_bob):
    fund(alice, "50", asset="CXPT")
    r = api_alice.post(
        "/api/v1/trade",
        order(market="CXPT-USDC", side="SELL", price="1.25", qty="40"),
        format="json",
    )
    assert r.status_code == 201, r.content
    assert balance(alice, "CXPT").locked == D("40")
    r = api_bob.post(
        "/api/v1/trade", order(market="CXPT-USDC", side="BUY", price="1.3", qty="10"), format="json"
    )
    assert r.json()["status"] == "FILLED"
    # Bob pays 12.5 + 0.05% taker fee; Alice receives 12.5 less 0.02% maker fee.
    assert balance(bob, "CXPT").total == D("10")
    assert balance(bob).total == D("100000") - D("12.5") - D("0.00625")
    assert balance(alice, "CXPT").total == D("40") and balance(alice, "CXPT").locked == D("30")
    assert balance(alice).total == D("100000") + D("12.5") - D("0.0025")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (order(price="64000.3", qty="0.1"), "INVALID_PRICE", "price"),
        (order(price="-1", qty="0.1"), "INVALID_PRICE", "price"),
        (order(price="64000", qty="0.0005"), "INVALID_QTY", "qty"),
        (order(price="64000", qty="0"), "INVALID_QTY", "qty"),
        (order(price="64000", qty="-1"), "INVALID_QTY", "qty"),
        (order(price="5", qty="0.001"), "MIN_NOTIONAL", "qty"),
        (order(price="64000", qty="1000"), "INSUFFICIENT_MARGIN", "qty"),
        (order(market="NOPE-PERP", price="1", qty="1"), "UNKNOWN_MARKET", "market"),
        (order(mode="LIVE", price="1", qty="1"), "INVALID_MODE", "mode"),
        (order(side="HOLD", price="1", qty="1"), "INVALID_SIDE", "side"),
        (
            order(price="64000", qty="0.1", timeInForce="GTD"),
            "INVALID_TIME_IN_FORCE",
            "timeInForce",
        ),
        (order(price="64000"), "MISSING_FIELD", "qty"),
        (order(qty="0.1"), "INVALID_PRICE", "price"),
        (order(type="MARKET", price="64000", qty="0.1"), "INVALID_PRICE", "price"),
        (order(price="64000", qty="0.1", prcie="1"), "UNKNOWN_FIELD", "prcie"),
        (order(price="64000", qty="1e400"), "INVALID_QTY", "qty"),
        (order(price="64000", qty="0.1", reduceOnly=True), "REDUCE_ONLY_REJECTED", "reduceOnly"),
        (
            order(price="64000", qty="0.1", clientOrderId="bad id!"),
            "INVALID_CLIENT_ORDER_ID",
            "clientOrderId",
        ),
    ],
)
def test_bad_orders_get_their_code_and_change_nothing(perp, api_alice, body, code, field):
    api_alice.post("/api/v1/trade", order(side="SELL", price="65000", qty="0.1"), format="json")
    before = state()
    r = api_alice.post("/api/v1/trade", body, format="json")
    assert r.status_code == 400, r.content
    err = r.json()["error"]
    assert err["code"] == code
    assert err.get("field") == field
    assert err["message"]
    assert state() == before


def test_malformed_json_and_nan_are_refused(perp, api_alice):
    before = state()
    r = api_alice.post("/api/v1/trade", data="{not json", content_type="application/json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_JSON"
    r = api_alice.post(
        "/api/v1/trade",
        data='{"market":"BTC-PERP","mode":"PAPER","side":"BUY","type":"LIMIT","price":NaN,"qty":"1"}',
        content_type="application/json",
    )
    assert r.status_code == 400
    r = api_alice.post("/api/v1/trade", data="[1,2]", content_type="application/json")
    assert r.status_code == 400
    assert state() == before


def test_json_numbers_are_read_as_exact_decimals(perp, api_alice):
    r = api_alice.post(
        "/api/v1/trade",
        data='{"market":"BTC-PERP","mode":"PAPER","side":"BUY","type":"LIMIT","price":60000.5,"qty":0.3}',
        content_type="application/json",
    )
    assert r.status_code == 201, r.content
    assert Order.objects.get().qty == D("0.3")


def test_spot_without_funds_is_insufficient_balance(spot, api_alice):
    before = state()
    r = api_alice.post(
        "/api/v1/trade",
        order(market="CXPT-USDC", side="SELL", price="1.25", qty="10"),
        format="json",
    )
    assert r.json()["error"]["code"] == "INSUFFICIENT_BALANCE"
    assert state() == before


def test_paused_market_refuses_orders_but_allows_cancels(perp, api_alice):
    placed = api_alice.post("/api/v1/trade", order(price="60000", qty="0.1"), format="json").json()
    market_pause(market=perp)
    before = state()
    r = api_alice.post("/api/v1/trade", order(price="60000", qty="0.1"), format="json")
    assert r.json()["error"]["code"] == "MARKET_PAUSED"
    assert state() == before
    r = api_alice.delete(f"/api/v1/orders/{placed['id']}")
    assert r.status_code == 200 and r.json()["status"] == "CANCELED"
    market_resume(market=perp)
    r = api_alice.post("/api/v1/trade", order(price="60000", qty="0.1"), format="json")
    assert r.status_code == 201


def test_delist_cancels_resting_orders_and_releases_reservations(
    perp, alice, bob, api_alice, api_bob
):
    api_alice.post("/api/v1/trade", order(price="60000", qty="0.1"), format="json")
    api_bob.post(
        "/api/v1/trade", order(side="SELL", price="61000", qty="0.2", mode="REAL"), format="json"
    )
    fund(bob, "10000", mode="REAL")
    api_bob.post(
        "/api/v1/trade", order(side="SELL", price="61000", qty="0.2", mode="REAL"), format="json"
    )
    assert balance(alice).locked > 0 and balance(bob, mode="REAL").locked > 0
    canceled = market_delist(market=perp)
    assert len(canceled) == 2
    assert balance(alice).locked == 0 and balance(bob, mode="REAL").locked == 0
    assert set(Order.objects.values_list("cancel_reason", flat=True)) == {"DELISTED"}
    r = api_alice.post("/api/v1/trade", order(price="60000", qty="0.1"), format="json")
    assert r.json()["error"]["code"] == "MARKET_DELISTED"


def test_a_delisted_market_stays_delisted(perp, api_alice):
    """A pause or a resume decided on the market as read before the delist (two staff
    members at once) leaves it delisted: the status moves only from what it is now."""
    stale = Market.objects.get(pk=perp.pk)
    market_delist(market=perp)
    assert market_pause(market=stale) is False
    assert market_resume(market=stale) is False
    assert Market.objects.get(pk=perp.pk).status == "DELISTED"
    r = api_alice.post("/api/v1/trade", order(price="60000", qty="0.1"), format="json")
    assert r.json()["error"]["code"] == "MARKET_DELISTED"


def test_time_in_force_variants(perp, api_alice, api_bob):
    api_alice.post("/api/v1/trade", order(side="SELL", price="64000", qty="0.1"), format="json")
    # POST_ONLY that would cross is refused; one that rests is fine.
    r = api_bob.post(
        "/api/v1/trade", order(price="64000", qty="0.1", timeInForce="POST_ONLY"), format="json"
    )
    assert r.json()["error"]["code"] == "WOULD_CROSS"
    r = api_bob.post(
        "/api/v1/trade", order(price="63000", qty="0.1", timeInForce="POST_ONLY"), format="json"
    )
    assert r.json()["status"] == "NEW"
    # FOK for more than the book holds: refused, nothing traded.
    r = api_bob.post(
        "/api/v1/trade", order(price="64000", qty="0.2", timeInForce="FOK"), format="json"
    )
    assert r.json()["error"]["code"] == "FOK_UNFILLABLE"
    assert Trade.objects.count() == 0
    # IOC takes what there is and cancels the rest.
    r = api_bob.post(
        "/api/v1/trade", order(price="64000", qty="0.3", timeInForce="IOC"), format="json"
    ).json()
    assert (r["status"], r["filledQty"], r["cancelReason"]) == ("CANCELED", "0.1", "IOC")
    # A market order into an empty side is cancelled, not rested.
    r = api_bob.post("/api/v1/trade", order(type="MARKET", qty="0.1"), format="json").json()
    assert (r["status"], r["filledQty"]) == ("CANCELED", "0")


def test_self_trade_prevention_cancels_the_resting_order(perp, alice, bob, api_alice, api_bob):
    own = api_alice.post(
        "/api/v1/trade", order(side="SELL", price="64000", qty="0.1"), format="json"
    ).json()
    api_bob.post("/api/v1/trade", order(side="SELL", price="64000", qty="0.1"), format="json")
    r = api_alice.post("/api/v1/trade", order(price="64000", qty="0.1"), format="json").json()
    assert r["status"] == "FILLED"
    assert r["fills"][0]["px"] == "64000"
    mine = api_alice.get(f"/api/v1/orders/{own['id']}").json()
    assert (mine["status"], mine["cancelReason"]) == ("CANCELED", "SELF_TRADE")
    assert Fill.objects.filter(order_id=own["id"]).count() == 0
    assert Trade.objects.get().maker_order.trader == bob


def test_price_time_priority(perp, alice, bob, api_alice, api_bob):
    carol = UserFactory(username="carol")
    fund(carol, "100000")
    api_carol = client_for(carol)
    first = api_alice.post(
        "/api/v1/trade", order(side="SELL", price="64000", qty="0.1"), format="json"
    ).json()
    second = api_bob.post(
        "/api/v1/trade", order(side="SELL", price="64000", qty="0.1"), format="json"
    ).json()
    better = api_bob.post(
        "/api/v1/trade", order(side="SELL", price="63999.5", qty="0.1"), format="json"
    ).json()
    r = api_carol.post("/api/v1/trade", order(price="64000", qty="0.25"), format="json").json()
    makers = list(Trade.objects.order_by("id").values_list("maker_order_id", "qty"))
    assert makers == [(better["id"], D("0.1")), (first["id"], D("0.1")), (second["id"], D("0.05"))]
    assert r["avgFillPrice"] == "63999.8"


def test_client_order_id_is_idempotent(perp, api_alice):
    body = order(price="60000", qty="0.1", clientOrderId="bot-1")
    first = api_alice.post("/api/v1/trade", body, format="json")
    again = api_alice.post("/api/v1/trade", body, format="json")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Order.objects.count() == 1


def test_cancel_own_foreign_and_closed_orders(perp, alice, api_alice, api_bob):
    placed = api_alice.post("/api/v1/trade", order(price="60000", qty="0.1"), format="json").json()
    assert api_bob.delete(f"/api/v1/orders/{placed['id']}").status_code == 404
    assert api_bob.get(f"/api/v1/orders/{placed['id']}").status_code == 404
    r = api_alice.delete(f"/api/v1/orders/{placed['id']}")
    assert r.status_code == 200 and r.json()["status"] == "CANCELED"
    assert balance(alice).locked == 0
    r = api_alice.delete(f"/api/v1/orders/{placed['id']}")
    assert r.json()["error"]["code"] == "ORDER_NOT_OPEN"
    depth = api_alice.get("/api/v1/markets/BTC-PERP/depth?mode=PAPER").json()
    assert depth["bids"] == [] and depth["seq"] == 2


def test_cancel_all_returns_ids_and_leaves_others_alone(perp, api_alice, api_bob):
    ids = [
        api_alice.post(
            "/api/v1/trade", order(price=str(60000 + i), qty="0.1"), format="json"
        ).json()["id"]
        for i in range(3)
    ]
    theirs = api_bob.post("/api/v1/trade", order(price="59000", qty="0.1"), format="json").json()
    r = api_alice.delete("/api/v1/orders?mode=PAPER&market=BTC-PERP")
    assert sorted(r.json()["canceledIds"]) == sorted(ids)
    assert Order.objects.get(pk=theirs["id"]).status == "NEW"


def test_fills_paginate_newest_first_with_next_token(perp, api_alice, api_bob):
    for i in range(5):
        api_alice.post(
            "/api/v1/trade", order(side="SELL", price=str(64000 + i), qty="0.01"), format="json"
        )
    api_bob.post("/api/v1/trade", order(type="MARKET", qty="0.05"), format="json")
    seen, token = [], None
    pages = 0
    while True:
        url = "/api/v1/fills?mode=PAPER&limit=2" + (f"&nextToken={token}" if token else "")
        page = api_bob.get(url).json()
        seen += [f["id"] for f in page["results"]]
        pages += 1
        token = page["nextToken"]
        if token is None:
            break
    assert pages == 3 and len(seen) == 5
    assert seen == sorted(seen, reverse=True)
    assert (
        api_bob.get("/api/v1/fills?nextToken=garbage!").json()["error"]["code"]
        == "INVALID_NEXT_TOKEN"
    )
    assert api_bob.get("/api/v1/fills?limit=0").json()["error"]["code"] == "INVALID_LIMIT"


def test_batch_reports_each_result_in_order(perp, api_alice):
    r = api_alice.post(
        "/api/v1/trade/batch",
        {
            "orders": [
                order(price="60000", qty="0.1"),
                order(price="60000.1", qty="0.1"),
                order(price="59000", qty="0.1"),
            ]
        },
        format="json",
    )
    results = r.json()["results"]
    assert [("id" in x, x.get("error", {}).get("code")) for x in results] == [
        (True, None),
        (False, "INVALID_PRICE"),
        (True, None),
    ]
    too_many = api_alice.post(
        "/api/v1/trade/batch", {"orders": [order(price="1", qty="1")] * 21}, format="json"
    )
    assert too_many.status_code == 400


def test_leverage_changes_the_margin_of_new_orders(perp, alice, api_alice):
    r = api_alice.post(
        "/api/v1/markets/BTC-PERP/leverage", {"mode": "PAPER", "leverage": "20"}, format="json"
    )
    assert r.status_code == 200 and r.json()["leverage"] == "20"
    api_alice.post("/api/v1/trade", order(price="60000", qty="1"), format="json")
    # 60000 / 20 + 60000 * 0.0005
    assert balance(alice).locked == D("3030")
    r = api_alice.post(
        "/api/v1/markets/BTC-PERP/leverage", {"mode": "PAPER", "leverage": "21"}, format="json"
    )
    assert r.json()["error"]["code"] == "INVALID_LEVERAGE"


def test_leverage_moves_the_margin_of_open_orders_and_refuses_what_would_not_fit(
    perp, alice, api_alice
):
    def set_leverage(value: str):
        return api_alice.post(
            "/api/v1/markets/BTC-PERP/leverage", {"mode": "PAPER", "leverage": value}, format="json"
        )

    assert set_leverage("20").status_code == 200
    first = api_alice.post("/api/v1/trade", order(price="60000", qty="1"), format="json").json()
    assert balance(alice).locked == D("3030")  # 60000 / 20 + 60000 * 0.0005
    # Lower: the open order reserves what it would if placed now.
    assert set_leverage("10").status_code == 200
    assert balance(alice).locked == D("6030")
    assert Order.objects.get(pk=first["id"]).reserved == D("6030")
    # Higher: it frees the difference.
    assert set_leverage("20").status_code == 200
    assert balance(alice).locked == D("3030")
    api_alice.post("/api/v1/trade", order(price="60000", qty="1.5"), format="json")
    assert balance(alice).locked == D("7575")
    # At 1x the orders would need 150,075 of the account's 100,000: refused, unchanged.
    r = set_leverage("1")
    assert r.status_code == 400 and r.json()["error"]["code"] == "INSUFFICIENT_MARGIN"
    assert balance(alice).locked == D("7575")
    assert Position.objects.get(trader=alice, mode="PAPER").leverage == D("20")


def _position_size(user) -> Decimal:
    found = Position.objects.filter(trader=user, mode="PAPER").values_list("size", flat=True)
    return found.first() or D(0)


def test_resting_reduce_only_orders_never_open_or_flip_a_position(perp, alice, bob, api_alice):
    """Alice, long 0.01, rests two reduce-only sells of 0.01 and then closes the position
    by market. When a buyer reaches them, neither may fill: each is cancelled
    (REDUCE_ONLY) and she stays flat."""
    api_bob = client_for(bob)
    api_bob.post("/api/v1/trade", order(side="SELL", price="64000", qty="0.01"), format="json")
    api_alice.post("/api/v1/trade", order(price="64000", qty="0.01"), format="json")
    assert _position_size(alice) == D("0.01")
    ro = [
        api_alice.post(
            "/api/v1/trade",
            order(side="SELL", price="65000", qty="0.01", reduceOnly=True),
            format="json",
        ).json()
        for _ in range(2)
    ]
    assert [o["status"] for o in ro] == ["NEW", "NEW"]
    api_bob.post("/api/v1/trade", order(price="63000", qty="0.01"), format="json")  # a bid
    closed = api_alice.post("/api/v1/positions/BTC-PERP/close", {"mode": "PAPER"}, format="json")
    assert closed.status_code == 201, closed.json()
    assert _position_size(alice) == 0

    taker = api_bob.post(
        "/api/v1/trade", order(price="65000", qty="0.02", timeInForce="IOC"), format="json"
    ).json()
    assert taker["filledQty"] == "0" and taker["status"] == "CANCELED"
    assert _position_size(alice) == 0
    for o in ro:
        mine = api_alice.get(f"/api/v1/orders/{o['id']}").json()
        assert (mine["status"], mine["cancelReason"], mine["filledQty"]) == (
            "CANCELED",
            "REDUCE_ONLY",
            "0",
        )
    depth = api_alice.get("/api/v1/markets/BTC-PERP/depth?mode=PAPER").json()
    assert depth["asks"] == []


@pytest.mark.parametrize("sold", ["0.02", "0.05"])
def test_reduce_only_orders_leave_the_book_once_the_position_closes_or_turns(
    perp, alice, bob, api_alice, sold
):
    """Alice, long 0.02, rests a reduce-only sell; then sells 0.02 (flat) or 0.05 (short)
    by other means. The reduce-only sell could now only grow the position: it is
    cancelled at once (REDUCE_ONLY) and the book no longer shows it."""
    api_bob = client_for(bob)
    api_bob.post("/api/v1/trade", order(side="SELL", price="64000", qty="0.02"), format="json")
    api_alice.post("/api/v1/trade", order(price="64000", qty="0.02"), format="json")
    ro = api_alice.post(
        "/api/v1/trade",
        order(side="SELL", price="66000", qty="0.02", reduceOnly=True),
        format="json",
    ).json()
    api_bob.post("/api/v1/trade", order(price="63000", qty=sold), format="json")
    depth = api_alice.get("/api/v1/markets/BTC-PERP/depth?mode=PAPER").json()
    assert depth["asks"] == [["66000", "0.02"]]
    before = depth["seq"]
    sell = api_alice.post(
        "/api/v1/trade",
        order(side="SELL", price="63000", qty=sold, timeInForce="IOC"),
        format="json",
    ).json()
    assert sell["filledQty"] == sold
    assert _position_size(alice) == D("0.02") - D(sold)
    mine = api_alice.get(f"/api/v1/orders/{ro['id']}").json()
    assert (mine["status"], mine["cancelReason"]) == ("CANCELED", "REDUCE_ONLY")
    depth = api_alice.get("/api/v1/markets/BTC-PERP/depth?mode=PAPER").json()
    # One delta for the sell: the bid it took and the reduce-only ask it removed.
    assert depth["asks"] == [] and depth["seq"] == before + 1


def test_a_reduce_only_order_fills_what_shrinks_and_the_rest_is_cancelled(
    perp, alice, bob, api_alice
):
    """Long 0.03 with a plain sell of 0.02 and a reduce-only sell of 0.03 behind it: a
    buyer of 0.05 takes the plain 0.02 and 0.01 of the reduce-only order, whose rest is
    cancelled. Alice ends flat, never short."""
    api_bob = client_for(bob)
    api_bob.post("/api/v1/trade", order(side="SELL", price="64000", qty="0.03"), format="json")
    api_alice.post("/api/v1/trade", order(price="64000", qty="0.03"), format="json")
    api_alice.post("/api/v1/trade", order(side="SELL", price="64500", qty="0.02"), format="json")
    ro = api_alice.post(
        "/api/v1/trade",
        order(side="SELL", price="65000", qty="0.03", reduceOnly=True),
        format="json",
    ).json()
    taker = api_bob.post(
        "/api/v1/trade", order(price="65000", qty="0.05", timeInForce="IOC"), format="json"
    ).json()
    assert taker["filledQty"] == "0.03"
    assert [(f["px"], f["qty"]) for f in taker["fills"]] == [("64500", "0.02"), ("65000", "0.01")]
    assert _position_size(alice) == 0
    mine = api_alice.get(f"/api/v1/orders/{ro['id']}").json()
    assert (mine["status"], mine["cancelReason"], mine["filledQty"]) == (
        "CANCELED",
        "REDUCE_ONLY",
        "0.01",
    )


def test_a_market_filter_that_names_no_market_is_refused(perp, api_alice):
    """A cancel-all by a misspelt symbol must not answer that it cancelled nothing."""
    rested = api_alice.post("/api/v1/trade", order(price="60000", qty="0.1"), format="json")
    for method, path in [
        ("delete", "/api/v1/orders?mode=PAPER&market=BTC-PREP"),
        ("get", "/api/v1/orders?mode=PAPER&market=BTC-PREP"),
        ("get", "/api/v1/fills?mode=PAPER&market=BTC-PREP"),
    ]:
        r = getattr(api_alice, method)(path)
        assert r.status_code == 400, (path, r.content)
        assert r.json()["error"] == {
            "code": "UNKNOWN_MARKET",
            "message": "no market BTC-PREP",
            "field": "market",
        }
    assert Order.objects.get(pk=rested.json()["id"]).status == "NEW"
    done = api_alice.delete("/api/v1/orders?mode=PAPER&market=BTC-PERP").json()
    assert done == {"canceledIds": [rested.json()["id"]]}


def test_public_market_data(perp, api_alice, api_bob):
    api_alice.post("/api/v1/trade", order(side="SELL", price="64000", qty="0.1"), format="json")
    api_bob.post("/api/v1/trade", order(price="64000", qty="0.04"), format="json")
    api_bob.post("/api/v1/trade", order(price="64000", qty="0.06"), format="json")
    anon = client_for.__globals__["APIClient"]()
    trades = anon.get("/api/v1/markets/BTC-PERP/trades?mode=PAPER").json()
    assert [t["qty"] for t in trades] == ["0.06", "0.04"]
    assert all(t["side"] == "BUY" for t in trades)
    candles = anon.get("/api/v1/metrics?market=BTC-PERP&mode=PAPER&interval=1m").json()
    # One candle, or two when the trades straddle a minute.
    assert 1 <= len(candles) <= 2 and candles[-1]["close"] == "64000"
    assert sum(Decimal(c["volume"]) for c in candles) == Decimal("0.1")
    assert (
        anon.get("/api/v1/metrics?market=BTC-PERP&interval=2m").json()["error"]["code"]
        == "INVALID_INTERVAL"
    )
    # A bound past the year 3000 (or 9999, where dates end) reads as the year 3000.
    far = 10**15
    for bound in (f"to={far}", f"from={far}", f"from={far}&to={far}", "to=253402300740000"):
        r = anon.get(f"/api/v1/metrics?market=BTC-PERP&mode=PAPER&interval=1d&{bound}")
        assert (r.status_code, r.json()) == (200, [])
    m = anon.get("/api/v1/markets/BTC-PERP?mode=PAPER").json()
    assert (m["lastPrice"], m["volume24h"], m["openInterest"]) == ("64000", "0.1", "0.1")
    assert anon.get("/api/v1/markets/NOPE").status_code == 404


def test_private_endpoints_need_authentication(perp, db):
    from rest_framework.test import APIClient

    anon = APIClient()
    for url in [
        "/api/v1/me",
        "/api/v1/orders",
        "/api/v1/fills",
        "/api/v1/balances",
        "/api/v1/positions",
    ]:
        r = anon.get(url)
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
    assert anon.post("/api/v1/trade", order(price="1", qty="1"), format="json").status_code == 401


def test_each_request_validates_with_fields_of_its_own():
    """Serializers copy their declared fields shallowly (dexsite.api.StrictSerializer):
    each instance binds copies of its own, and the declarations stay unbound, so that
    requests validated at once, on several threads, do not share a bound field."""
    from trading.api.views import BatchInputSerializer, OrderInputSerializer

    body = {"market": "BTC-PERP", "mode": "PAPER", "side": "BUY", "type": "LIMIT", "qty": "1"}
    a, b = OrderInputSerializer(data=body), OrderInputSerializer(data={**body, "qty": "x"})
    for name in a.fields:
        assert a.fields[name] is not b.fields[name]
        assert a.fields[name].parent is a and b.fields[name].parent is b
        assert getattr(OrderInputSerializer._declared_fields[name], "parent", None) is None
    assert a.is_valid() and not b.is_valid() and list(b.errors) == ["qty"]
    # A field with a child field is copied in full, child and all.
    c = BatchInputSerializer(data={"orders": [body]})
    assert c.fields["orders"].child is not BatchInputSerializer._declared_fields["orders"].child


def test_the_orders_list_shows_each_order_as_its_model_would(perp, alice, bob, api_alice):
    """The list reads rows, not model instances: every field `order_dict` reads comes
    with them, and each order renders exactly as from its model."""
    from trading.models import Order
    from trading.presenters import OrderFields, order_dict
    from trading.selectors import _ORDER_SHOWN, orders_list

    assert set(_ORDER_SHOWN) == set(OrderFields.__annotations__)
    api_alice.post("/api/v1/trade", order(side="SELL", price="64000", qty="0.3"), format="json")
    api_alice.post(
        "/api/v1/trade",
        order(side="BUY", price="60000", qty="0.1", clientOrderId="mine-1"),
        format="json",
    )
    client_for(bob).post("/api/v1/trade", order(price="64000", qty="0.1"), format="json")
    api_alice.delete("/api/v1/orders?mode=PAPER")
    for status in (None, "open", "CANCELED"):
        listed = orders_list(trader=alice, mode="PAPER", market=None, status=status)
        qs = Order.objects.filter(trader=alice).order_by("-id")
        if status:
            qs = qs.filter(status=status) if status != "open" else qs.none()
        assert listed == [order_dict(o, "BTC-PERP") for o in qs]
    assert {
        o["status"] for o in orders_list(trader=alice, mode=None, market=None, status=None)
    } == {"CANCELED"}
    assert api_alice.get("/api/v1/orders?mode=PAPER").json()[0]["cancelReason"] == "USER"


def test_an_order_beyond_the_arithmetic_is_refused_alone_and_in_a_batch(
    perp, api_alice, monkeypatch
):
    """A size whose margin the decimal arithmetic cannot hold is INVALID_QTY, whether
    placed alone or as part of a batch (where the other orders stand), and writes
    nothing."""
    from decimal import InvalidOperation

    from trading import risk

    real = risk.order_margin

    def overflowing(notional, leverage, fee):
        if notional > 1000:
            raise InvalidOperation("too many digits")
        return real(notional, leverage, fee)

    monkeypatch.setattr(risk, "order_margin", overflowing)
    before = state()
    r = api_alice.post("/api/v1/trade", order(price="64000", qty="0.1"), format="json")
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": "INVALID_QTY",
        "message": "the order is too large",
        "field": "qty",
    }
    assert state() == before
    batch = api_alice.post(
        "/api/v1/trade/batch",
        {"orders": [order(price="60000", qty="0.01"), order(price="64000", qty="0.1")]},
        format="json",
    ).json()["results"]
    assert batch[0]["status"] == "NEW"
    assert batch[1]["error"]["code"] == "INVALID_QTY"


@exact_sums
def test_a_position_closes_in_part_or_at_a_limit(perp, alice, bob, api_alice, api_bob):
    api_alice.post("/api/v1/trade", order(side="SELL", price="64000", qty="0.013"), format="json")
    api_bob.post("/api/v1/trade", order(type="MARKET", qty="0.013"), format="json")
    api_alice.post("/api/v1/trade", order(side="BUY", price="63900", qty="1"), format="json")

    def close(**body):
        return api_bob.post(
            "/api/v1/positions/BTC-PERP/close", {"mode": "PAPER", **body}, format="json"
        )

    def size() -> Decimal:
        return Position.objects.get(trader=bob).size

    # Half of 0.013, rounded down to whole lots of 0.001.
    r = close(fraction="0.5")
    assert r.status_code == 201, r.content
    assert (r.json()["qty"], r.json()["filledQty"], r.json()["type"]) == (
        "0.006",
        "0.006",
        "MARKET",
    )
    assert size() == D("0.007")
    r = close(qty="0.004")
    assert r.json()["filledQty"] == "0.004" and size() == D("0.003")
    # A limit close rests, reduce-only, and the position stays until it fills.
    r = close(price="64100", fraction="1")
    limit = r.json()
    assert (limit["type"], limit["status"], limit["timeInForce"]) == ("LIMIT", "NEW", "GTC")
    assert (limit["qty"], limit["price"], limit["reduceOnly"]) == ("0.003", "64100", True)
    assert size() == D("0.003")

    before = state()
    for body, code in [
        ({"qty": "0.001", "fraction": "0.5"}, "INVALID_FRACTION"),
        ({"fraction": "0"}, "INVALID_FRACTION"),
        ({"fraction": "1.5"}, "INVALID_FRACTION"),
        ({"fraction": "0.1"}, "INVALID_QTY"),  # 0.0003: under one lot
        ({"qty": "-1"}, "INVALID_QTY"),
        ({"qty": "0.0015"}, "INVALID_QTY"),  # off the lot grid
        ({"price": "64100.3"}, "INVALID_PRICE"),  # off the tick grid
    ]:
        r = close(**body)
        assert (r.status_code, r.json()["error"]["code"]) == (400, code), (body, r.content)
    assert state() == before
