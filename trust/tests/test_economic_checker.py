"""The checker's economic checks, each on a real state made through the services (the
one row no public path can make any more written by hand): it fires on the state it is
meant to find, stays silent on the healthy state beside it, and costs a fixed number
of queries.

- solvency: an account below zero equity that the last liquidation sweep left open; an
  account below maintenance through the last three sweeps;
- fills: a trade of a trader's order priced past its market's band around its mark;
- marks: a perp's or future's mark outside its band around the index.

The sweeps' rows are written here directly (`LiquidationSweep`, in the format the sweep
records), so these tests do not depend on when the sweep decides to leave an account
open."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from trading import invariants, margin
from trading.invariants import check_invariants
from trading.models import Book, LiquidationSweep, Market, Trade
from trading.orders.place import order_place
from trading.services.markets import leverage_set
from trading.services.prices import index_set, marks_refresh
from trading.tests.factories import MarketFactory, UserFactory, balance, call_market, fund

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture(autouse=True)
def _local_channel_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def place(user, side, qty, price=None, market="BTC-PERP", **kw) -> dict:
    body, _ = order_place(
        trader=user,
        market=market,
        mode="PAPER",
        side=side,
        type="LIMIT" if price is not None else "MARKET",
        price=D(price) if price is not None else None,
        qty=D(qty),
        **kw,
    )
    return body


def index_to(price: str) -> None:
    """The index at `price` and the marks after it, as one tick of the clock."""
    index_set(underlying="BTC", price=D(price))
    marks_refresh()


@pytest.fixture
def perp():
    m = MarketFactory(max_leverage=D("20"))
    index_to("64000")
    assert Book.objects.get(market=m, mode="PAPER").mark_price == D("64000")
    return m


@pytest.fixture
def alice(perp):
    """1 BTC long from 64000 at 20x with 3300 USDC: 3268 of cash after the 32 fee,
    maintenance 0.5% of the mark. Bob sold it to her."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    fund(alice, "3300")
    fund(bob, "100000")
    leverage_set(trader=alice, market=perp, mode="PAPER", leverage=D("20"))
    place(bob, "SELL", "1", "64000")
    place(alice, "BUY", "1", "64000")
    assert balance(alice).total == D("3268")
    return alice


def account(user) -> margin.Account:
    return margin.accounts_with_positions()[(user.pk, "PAPER")]


def sweep(*left_below: tuple, ago: int = 0) -> LiquidationSweep:
    """A sweep row as the sweep records it: the accounts it left below maintenance."""
    return LiquidationSweep.objects.create(
        at=timezone.now() - timedelta(seconds=ago),
        left_below=[[pk, mode, str(eq), str(mm)] for pk, mode, eq, mm in left_below],
    )


def economic(problems: list[str]) -> list[str]:
    words = ("liquidation sweep", "band")
    return [p for p in problems if any(w in p for w in words)]


# -- solvency -------------------------------------------------------------------------


def test_below_zero_after_the_last_sweep_is_the_next_sweeps_work(alice):
    """The mark falls to 60000 after the last sweep: equity 3268 - 4000 = -732. No sweep
    has seen it yet: not a violation."""
    sweep(ago=2)
    index_to("60000")
    assert account(alice).equity == D("-732")
    assert check_invariants() == []


def test_below_zero_where_the_last_sweep_left_the_account_open(alice):
    """At 61000 (equity 268 < maintenance 305) the sweep leaves Alice open (its index
    was stale, or closing failed); the mark falls on to 60000: equity -732, and the
    sweep that saw her did not close her."""
    index_to("61000")
    sweep((alice.pk, "PAPER", "268", "305"))
    assert check_invariants() == []
    index_to("60000")
    assert check_invariants() == [
        "accounts below zero equity that the last liquidation sweep left open "
        f"(trader, mode, equity at the sweep, equity now): [({alice.pk}, 'PAPER', "
        "'268.00', '-732.00')]"
    ]
    # A later sweep that closed her (or found her healthy) clears it.
    sweep()
    assert check_invariants() == []


def test_a_sweep_that_left_an_account_at_negative_equity(alice):
    """The sweep recorded Alice at -5 and left her open: reported even once the mark
    is back (equity 3268 now), since the loss was left open."""
    sweep((alice.pk, "PAPER", "-5", "300"))
    assert economic(check_invariants()) == [
        "accounts below zero equity that the last liquidation sweep left open "
        f"(trader, mode, equity at the sweep, equity now): [({alice.pk}, 'PAPER', "
        "'-5.00', '3268.00')]"
    ]


def test_below_maintenance_through_three_sweeps(alice):
    """At 61000 (equity 268 < 305) three sweeps in a row leave Alice open."""
    index_to("61000")
    me = (alice.pk, "PAPER", "268", "305")
    other = (alice.pk + 1000, "PAPER", "1", "2")
    sweep(me, ago=6)
    sweep(me, ago=4)
    assert check_invariants() == []  # two sweeps
    sweep(me, ago=2)
    stuck = (
        "accounts below maintenance through the last three liquidation sweeps "
        f"(trader, mode, equity, maintenance): [({alice.pk}, 'PAPER', '268.00', '305.00')]"
    )
    assert check_invariants() == [stuck]
    # Healthy again now: not reported.
    index_to("62000")
    assert check_invariants() == []
    index_to("61000")
    assert check_invariants() == [stuck]
    # Not in a row: a sweep between that did not leave her open.
    LiquidationSweep.objects.filter(at__lt=timezone.now() - timedelta(seconds=3)).delete()
    sweep(me, ago=8)
    sweep(other, ago=6)
    assert check_invariants() == []


def test_an_unreadable_sweep_row_is_reported(alice):
    row = sweep()
    LiquidationSweep.objects.filter(pk=row.pk).update(left_below=[[alice.pk, "PAPER"]])
    assert check_invariants() == [
        f"liquidation sweep {row.pk}: left_below entry [{alice.pk}, 'PAPER'] unreadable"
    ]


def test_solvency_costs_one_query_while_no_account_is_left_open(alice, django_assert_num_queries):
    sweep()
    with django_assert_num_queries(1):
        invariants._solvency([])
    sweep((alice.pk, "PAPER", "268", "305"))
    with django_assert_num_queries(3):
        invariants._solvency([])


# -- fills inside the band ------------------------------------------------------------


def _match(maker, taker, side: str, price: str) -> Trade:
    other = "SELL" if side == "BUY" else "BUY"
    place(maker, other, "0.01", price)
    place(taker, side, "0.01", price)
    return Trade.objects.latest("id")


@pytest.fixture
def traders(perp):
    a, b = UserFactory(), UserFactory()
    fund(a, "100000")
    fund(b, "100000")
    return a, b


def test_fills_past_the_band_are_reported(traders, perp, django_assert_num_queries):
    """The bands (5%) are measured from the mark each trade keeps. A print the order
    path no longer makes is a trade's mark set by hand far from its price."""
    a, b = traders
    buy = _match(a, b, "BUY", "64000")
    sell = _match(a, b, "SELL", "64000")
    assert buy.mark_price == sell.mark_price == D("64000")
    with django_assert_num_queries(1):
        invariants._fill_bands([])
    assert check_invariants() == []
    # A taker buy at 64000 against a mark of 60000: 6.67% above it.
    Trade.objects.filter(pk=buy.pk).update(mark_price=D("60000"))
    # A taker sell at 64000 against a mark of 60000 is on its passive side: fine.
    Trade.objects.filter(pk=sell.pk).update(mark_price=D("60000"))
    assert check_invariants() == [f"trades priced past their band around the mark: [{buy.pk}]"]
    # A taker sell at 64000 against a mark of 68000: 5.88% below it.
    Trade.objects.filter(pk=sell.pk).update(mark_price=D("68000"))
    found = check_invariants()
    assert found == [f"trades priced past their band around the mark: [{buy.pk}, {sell.pk}]"]
    # The risk engine's own trades, and trades kept without a mark, are not judged.
    Trade.objects.filter(pk=buy.pk).update(liquidation=True)
    Trade.objects.filter(pk=sell.pk).update(mark_price=None)
    assert check_invariants() == []


def test_the_band_is_the_wider_of_limit_band_and_slippage_and_its_edge_is_inside(traders, perp):
    """Band = max(priceBand, marketSlippage); a print exactly at its edge is inside."""
    a, b = traders
    buy = _match(a, b, "BUY", "64000")
    Market.objects.filter(pk=perp.pk).update(price_band=D("0.05"), market_slippage=D("0.28"))
    Trade.objects.filter(pk=buy.pk).update(mark_price=D("50000"))  # 50000 x 1.28 = 64000
    assert check_invariants() == []
    Trade.objects.filter(pk=buy.pk).update(mark_price=D("49999.5"))
    assert check_invariants() == [f"trades priced past their band around the mark: [{buy.pk}]"]


# -- marks inside the band ------------------------------------------------------------


def _mark(market: Market, price: str) -> None:
    """A mark set by hand: what a broken or manipulated mark would be."""
    Book.objects.filter(market=market, mode="PAPER").update(mark_price=D(price))


def test_a_mark_outside_its_band_around_the_index(perp, django_assert_num_queries):
    _mark(perp, "65280")  # 2% above 64000: the edge, inside
    assert check_invariants() == []
    # The books, the indexes, and the index before the latest of each underlying.
    with django_assert_num_queries(3):
        invariants._mark_bands([])
    _mark(perp, "65300")
    assert check_invariants() == [
        "book BTC-PERP/PAPER: mark 65300 is 2.03% from the index 64000, outside its 2% band"
    ]
    _mark(perp, "62000")
    assert check_invariants() == [
        "book BTC-PERP/PAPER: mark 62000 is 3.12% from the index 64000, outside its 2% band"
    ]
    # A book without a mark is not judged.
    _mark(perp, "64000")
    Book.objects.filter(market=perp, mode="REAL").update(mark_price=None)
    assert check_invariants() == []


def test_a_mark_that_has_not_followed_the_index_yet(perp):
    """The clock sets the index, then the marks: until the marks follow, a mark is
    measured from the index before too. Two index moves without them is a stale mark."""
    index_set(underlying="BTC", price=D("66000"))  # 3.03% from the mark at 64000
    assert check_invariants() == []
    index_set(underlying="BTC", price=D("68000"))
    found = check_invariants()
    assert [p.split(":")[0] for p in found] == ["book BTC-PERP/REAL", "book BTC-PERP/PAPER"]
    assert "mark 64000 is 5.88% from the index 68000" in found[0]
    marks_refresh()
    assert check_invariants() == []


def test_option_marks_and_settled_markets_are_not_judged(perp):
    """An option's mark is the model's price on the index, no fraction of it; a settled
    or delisted market is no longer marked."""
    call = call_market("BTC-C64000")
    marks_refresh()
    assert Book.objects.get(market=call, mode="PAPER").mark_price < D("64000") * D("0.98")
    future = MarketFactory(symbol="BTC-FUT", kind="FUTURE", expiry_at=timezone.now())
    _mark(future, "70000")
    assert len(check_invariants()) == 1
    for status in ("SETTLED", "DELISTED"):
        Market.objects.filter(pk=future.pk).update(status=status)
        assert check_invariants() == []
