"""The request stage, without a database: an order's shape against its market."""

from decimal import Decimal

import pytest

from dexsite.errors import ExchangeError
from trading.models import Market, MarketStatus
from trading.orders.request import (
    market_open_check,
    min_notional_check,
    order_shape,
    reduce_only_qty,
)

D = Decimal


def perp(**kw) -> Market:
    fields = {
        "symbol": "BTC-PERP",
        "kind": "PERP",
        "base": "BTC",
        "tick_size": D("0.5"),
        "lot_size": D("0.001"),
        "min_notional": D("10"),
    }
    return Market(**{**fields, **kw})


def code(fn, *a, **kw) -> str:
    with pytest.raises(ExchangeError) as e:
        fn(*a, **kw)
    return e.value.code


def shape(market=None, **kw):
    order = {"type": "LIMIT", "qty": D("0.01"), "price": D("64000"), "tif": "GTC"}
    return order_shape(market or perp(), **{**order, "reduce_only": False, **kw})


def test_a_limit_order_on_the_grid_is_counted_in_ticks_and_lots():
    got = shape()
    assert (got.ticks, got.lots) == (128000, 10)
    assert shape(type="MARKET", price=None).ticks is None


@pytest.mark.parametrize(
    ("order", "refused"),
    [
        ({"price": D("64000.1")}, "INVALID_PRICE"),
        ({"price": D("0")}, "INVALID_PRICE"),
        ({"price": None}, "INVALID_PRICE"),
        ({"type": "MARKET"}, "INVALID_PRICE"),
        ({"type": "MARKET", "price": None, "tif": "POST_ONLY"}, "INVALID_TIME_IN_FORCE"),
        ({"qty": D("0.0005")}, "INVALID_QTY"),
        ({"qty": D("-0.001")}, "INVALID_QTY"),
    ],
)
def test_an_order_off_its_market_is_refused_with_its_field(order, refused):
    assert code(shape, **order) == refused


def test_reduce_only_belongs_to_derivatives():
    spot = perp(kind="SPOT", base="CXPT")
    assert code(shape, spot, reduce_only=True) == "INVALID_REDUCE_ONLY"


def test_a_reduce_only_order_is_trimmed_to_the_position_it_reduces():
    assert reduce_only_qty(side="SELL", qty=D("2"), size=D("0.5")) == D("0.5")
    assert reduce_only_qty(side="BUY", qty=D("0.1"), size=D("-0.5")) == D("0.1")
    assert code(reduce_only_qty, side="BUY", qty=D("1"), size=D("0.5")) == "REDUCE_ONLY_REJECTED"
    assert code(reduce_only_qty, side="SELL", qty=D("1"), size=D("0")) == "REDUCE_ONLY_REJECTED"


def test_the_minimum_notional_holds_a_market_order_only_to_what_fills_in_full():
    m = perp()
    assert code(min_notional_check, m, notional=D("9.5"), market_order=False, whole=True)
    min_notional_check(m, notional=D("10"), market_order=False, whole=True)
    assert code(min_notional_check, m, notional=D("9.5"), market_order=True, whole=True)
    # An empty book, or one that cannot fill it whole: cancelled as far as it goes.
    min_notional_check(m, notional=D("0"), market_order=True, whole=False)
    min_notional_check(m, notional=D("5"), market_order=True, whole=False)


def test_a_paused_market_takes_the_risk_engine_s_orders_only():
    paused = perp(status=MarketStatus.PAUSED)
    assert code(market_open_check, paused, risk_engine=False) == "MARKET_PAUSED"
    market_open_check(paused, risk_engine=True)
    delisted = perp(status=MarketStatus.DELISTED)
    assert code(market_open_check, delisted, risk_engine=True) == "MARKET_DELISTED"
