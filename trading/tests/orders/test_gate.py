"""The order's risk gate, without a database: bands, reservations and the account
after the order (the worked examples of docs/risk.md)."""

from decimal import Decimal

import pytest

from dexsite.errors import ExchangeError
from trading import margin
from trading.models import Market, Position
from trading.orders.gate import (
    band_check,
    covered_sell,
    order_shortfall,
    reservation,
    slippage_limit,
)

D = Decimal


def perp() -> Market:
    return Market(
        symbol="BTC-PERP",
        kind="PERP",
        base="BTC",
        tick_size=D("0.5"),
        lot_size=D("0.001"),
        max_leverage=D("20"),
        taker_fee=D("0.0005"),
        maintenance_margin_ratio=D("0.005"),
        price_band=D("0.05"),
        market_slippage=D("0.05"),
    )


def exposure(market: Market, size: str, cost: str, mark: str, leverage: str) -> margin.Exposure:
    p = Position(market=market, size=D(size), open_notional=D(cost), leverage=D(leverage))
    return margin.exposure_new(p, mark=D(mark), index=D(mark))


def test_a_limit_order_past_the_band_on_its_aggressive_side_is_refused():
    m = perp()
    band_check(m, side="BUY", price=D("67200"), reference=D("64000"))
    band_check(m, side="BUY", price=D("1"), reference=D("64000"))  # passive: anywhere
    with pytest.raises(ExchangeError) as e:
        band_check(m, side="BUY", price=D("67200.5"), reference=D("64000"))
    assert e.value.code == "PRICE_OUT_OF_BAND" and e.value.field == "price"
    with pytest.raises(ExchangeError):
        band_check(m, side="SELL", price=D("60799.5"), reference=D("64000"))


def test_a_market_order_stops_at_its_slippage_limit_on_the_tick_grid():
    m = perp()
    assert slippage_limit(m, side="BUY", reference=D("64000")) * m.tick_size == D("67200")
    assert slippage_limit(m, side="SELL", reference=D("64000.3")) * m.tick_size == D("60800.5")


def test_reservations():
    m = perp()
    args = {"qty": D("1"), "notional": D("64000"), "mark": D("64000"), "index": D("64000")}
    # 64000/20 + 64000 x 0.05%
    got = reservation(m, side="BUY", reducing=False, leverage=D("20"), **args)
    assert (got.asset, got.amount, got.code) == ("USDC", D("3232"), "INSUFFICIENT_MARGIN")
    assert reservation(m, side="SELL", reducing=True, leverage=None, **args).amount == 0


def test_a_covered_option_sell_is_one_its_long_still_covers():
    call = Market(kind="OPTION")
    kw = {"side": "SELL", "reduce_only": False}
    assert covered_sell(call, qty=D("1"), long=D("1"), promised=D("0"), **kw)
    assert not covered_sell(call, qty=D("1"), long=D("1"), promised=D("0.5"), **kw)
    assert not covered_sell(perp(), qty=D("1"), long=D("1"), promised=D("0"), **kw)


def test_reduce_only_may_not_leave_equity_below_zero():
    """docs/risk.md: 1 BTC long from 64000 at 20x with 3268 of cash. A reduce-only sell
    at 50000 would end 10757 below zero; at 61000 it leaves 237.5."""
    m = perp()
    own = exposure(m, "1", "64000", "64000", "20")
    account = margin.Account(D("3268"), D("0"), [own])
    kw = {"side": "SELL", "fill_qty": D("1"), "reserve": D("0"), "reducing": True}
    assert order_shortfall(m, account, own, fill_notional=D("50000"), **kw) == D("10757")
    assert order_shortfall(m, account, own, fill_notional=D("61000"), **kw) == 0


def test_an_order_that_would_leave_the_account_below_its_initial_margin_is_refused():
    """A buy above the mark pays for the loss it takes on at once: 1000 of cash, 0.1 BTC
    at 10x with the mark at 64000. At 64000 it fits (free 356.8 after); at 67000, within
    the band, the 300 lost at the mark leaves free margin at 56.65; 0.15 at 67000 does
    not fit."""
    m = perp()
    flat = exposure(m, "0", "0", "64000", "10")
    account = margin.Account(D("1000"), D("0"), [flat])

    def short(qty: str, price: str) -> Decimal:
        q = D(qty)
        reserve = q * D(price) / 10 + q * D(price) * m.taker_fee
        return order_shortfall(
            m, account, flat, side="BUY", fill_qty=q, fill_notional=q * D(price),
            reserve=reserve, reducing=False,
        )  # fmt: skip

    assert short("0.1", "64000") == 0
    assert short("0.1", "67000") == 0
    assert short("0.15", "67000") > 0
