"""Funding, liquidation, auto-deleveraging and expiry with hand-computed decimals."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from ledger.services import INSURANCE_ACCOUNT, system_account
from trading import pricing
from trading.invariants import check_invariants
from trading.models import Book, FundingSample, Market, Order, Position, Trade
from trading.orders.place import order_place
from trading.services.expiry import settle_expired
from trading.services.funding import funding_settle
from trading.services.liquidation import liquidations_run
from trading.services.markets import leverage_set
from trading.services.prices import index_set, marks_refresh
from trading.services.transfers import transfers_settle
from trading.tests.factories import MarketFactory, UserFactory, balance, fund

D = Decimal
pytestmark = pytest.mark.django_db


def place(user, side, qty, price=None, market="BTC-PERP", **kw):
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


def position(user, market="BTC-PERP"):
    return Position.objects.get(trader=user, market__symbol=market, mode="PAPER")


@pytest.fixture
def perp():
    m = MarketFactory(max_leverage=D("20"), funding_interval=8 * 3600)
    index_set(underlying="BTC", price=D("64000"))
    Book.objects.filter(market=m).update(mark_price=D("64000"))
    return m


def test_black_scholes_against_textbook_values():
    call = pricing.bs_price("CALL", D(42), D(40), D("0.5"), D("0.2"), rate=0.1)
    put = pricing.bs_price("PUT", D(42), D(40), D("0.5"), D("0.2"), rate=0.1)
    assert call.quantize(D("0.01")) == D("4.76")
    assert put.quantize(D("0.01")) == D("0.81")
    assert pricing.intrinsic("CALL", D(64100), D(60000)) == D(4100)
    assert pricing.intrinsic("PUT", D(64100), D(60000)) == 0


def test_funding_long_pays_short_exactly_and_settles_once(perp):
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "10000")
    fund(bob, "10000")
    place(bob, "SELL", "0.5", "64000")
    place(alice, "BUY", "0.5", "64000")
    cash = {u: balance(u).total for u in (alice, bob)}
    book = Book.objects.get(market=perp, mode="PAPER")
    now = timezone.now()
    Book.objects.filter(pk=book.pk).update(next_funding_at=now)
    FundingSample.objects.create(book=book, premium=D("0.0002"), at=now - timedelta(minutes=1))
    event = funding_settle(book_id=book.pk, now=now)
    # rate = 0.0002 + clamp(0.0001 - 0.0002, +-0.0005) = 0.0001; 0.5 * 64000 * 0.0001 = 3.2
    assert event.rate == D("0.0001") and event.positions == 2
    assert balance(alice).total == cash[alice] - D("3.2")
    assert balance(bob).total == cash[bob] + D("3.2")
    assert event.insurance_remainder == 0
    # The same funding time again: nothing more.
    Book.objects.filter(pk=book.pk).update(next_funding_at=now)
    assert funding_settle(book_id=book.pk, now=now) is None
    assert balance(alice).total == cash[alice] - D("3.2")
    assert check_invariants() == []


def test_stale_index_pauses_funding(perp, settings):
    settings.INDEX_STALE_SECONDS = 60
    book = Book.objects.get(market=perp, mode="PAPER")
    later = timezone.now() + timedelta(minutes=5)
    Book.objects.filter(pk=book.pk).update(next_funding_at=later)
    assert funding_settle(book_id=book.pk, now=later) is None


def levered_long(perp):
    """Alice: 1 BTC long from 64000 at 20x, 3268 USDC of cash after the 32 fee."""
    alice, bob, carol = (
        UserFactory(username="alice"),
        UserFactory(username="bob"),
        UserFactory(username="carol"),
    )
    fund(alice, "3300")
    fund(bob, "100000")
    fund(carol, "100000")
    leverage_set(trader=alice, market=perp, mode="PAPER", leverage=D("20"))
    place(bob, "SELL", "1", "64000")
    place(alice, "BUY", "1", "64000")
    assert balance(alice).total == D("3268")
    return alice, bob, carol


def test_liquidation_when_the_index_moves_against_a_20x_long(perp):
    alice, _bob, carol = levered_long(perp)
    place(carol, "BUY", "1", "60900")
    index_set(underlying="BTC", price=D("61000"))
    marks_refresh()
    assert Book.objects.get(market=perp, mode="PAPER").mark_price == D("61000")
    # equity 3268 - 3000 = 268 < maintenance 61000 * 0.5% = 305
    (liq,) = liquidations_run()
    assert liq.equity == D("268") and liq.maintenance == D("305")
    assert position(alice).size == 0
    # Sold into Carol's bid at 60900: -3100 realized, 30.45 fee, 137.55 left, all of it
    # (below 0.5% of 60900) the liquidation fee, to the insurance fund.
    insurance = system_account(INSURANCE_ACCOUNT)
    assert balance(alice).total == 0
    assert balance(insurance).total == D("137.55")
    assert liq.fee == D("137.55") and liq.insurance_paid == 0
    assert Trade.objects.filter(liquidation=True).count() == 1
    assert position(carol).size == D("1")
    assert liquidations_run() == []  # idempotent
    assert check_invariants() == []


def test_bankrupt_account_is_covered_by_the_insurance_fund(perp):
    insurance = system_account(INSURANCE_ACCOUNT)
    fund(insurance, "10000")
    alice, _bob, carol = levered_long(perp)
    place(carol, "BUY", "1", "60000")
    index_set(underlying="BTC", price=D("60500"))
    marks_refresh()
    (liq,) = liquidations_run()
    # Nothing bids at the bankruptcy price 60732; the fund lets it sell at 60000:
    # 3268 - 4000 - 30 fee = -762, which the fund pays.
    assert liq.insurance_paid == D("762") and liq.fee == 0
    assert balance(alice).total == 0 and position(alice).size == 0
    assert balance(insurance).total == D("10000") - D("762")
    assert liq.adl_qty == 0
    assert check_invariants() == []


def test_auto_deleverage_when_the_fund_is_empty(perp):
    alice, bob, carol = levered_long(perp)
    place(carol, "BUY", "1", "60000")
    index_set(underlying="BTC", price=D("60500"))
    marks_refresh()
    (liq,) = liquidations_run()
    # No fund: the book may not take it below 60762.5, where Alice's cash (3268) is
    # exhausted with fees; nobody bids there, so Bob, the profitable short, is
    # deleveraged at that price.
    assert liq.adl_qty == D("1")
    assert position(alice).size == 0 and position(bob).size == 0
    assert position(bob).realized_pnl == D("64000") - D("60762.5")
    # Carol's bid was never hit below the limit.
    assert not Position.objects.filter(trader=carol).exclude(size=0).exists()
    assert Order.objects.filter(source="ADL").count() == 2
    assert Trade.objects.filter(liquidation=True).get().price == D("60762.5")
    assert balance(alice).total >= 0
    assert check_invariants() == []


def dated(kind: str, **kw) -> Market:
    expiry = timezone.now() - timedelta(minutes=1)
    base = {"symbol": f"BTC-X-{kind}", "kind": kind, "expiry_at": expiry}
    if kind == "OPTION":
        base.update(
            tick_size=D("5"),
            lot_size=D("0.01"),
            min_notional=D("1"),
            mark_iv=D("0.5"),
            mark_price=None,
        )
    base.update(kw)
    return MarketFactory(**base)


def index_history(prices):
    now = timezone.now()
    for i, p in enumerate(prices):
        index_set(underlying="BTC", price=D(p), at=now - timedelta(minutes=20 - 5 * i))


def future_held():
    """A dated BTC future expiring tomorrow; Alice long and Bob short 0.5 from 63000."""
    fut = dated("FUTURE")
    Market.objects.filter(pk=fut.pk).update(expiry_at=timezone.now() + timedelta(days=1))
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "100000")
    fund(bob, "100000")
    place(bob, "SELL", "0.5", "63000", market=fut.symbol)
    place(alice, "BUY", "0.5", "63000", market=fut.symbol)
    return fut, alice, bob


def test_future_settles_at_the_30_minute_average_index():
    fut, alice, bob = future_held()
    resting = place(alice, "BUY", "0.1", "62000", market=fut.symbol)
    Market.objects.filter(pk=fut.pk).update(expiry_at=timezone.now())
    index_history(["64000", "64100", "64200"])
    (settlement,) = settle_expired()
    assert settlement.price == D("64100")
    assert position(alice, fut.symbol).size == 0
    assert position(alice, fut.symbol).realized_pnl == D("550")  # 0.5 * (64100 - 63000)
    assert position(bob, fut.symbol).realized_pnl == D("-550")
    assert Order.objects.get(pk=resting["id"]).status == "CANCELED"
    assert Market.objects.get(pk=fut.pk).status == "SETTLED"
    assert settle_expired() == []
    assert check_invariants() == []


@pytest.mark.parametrize(
    ("option_type", "strike", "payout"),
    [
        ("CALL", "60000", "4100"),
        ("PUT", "60000", "0"),
        ("PUT", "66000", "1900"),
        ("CALL", "66000", "0"),
    ],
)
def test_options_settle_at_intrinsic_value(option_type, strike, payout):
    opt = dated(
        "OPTION",
        option_type=option_type,
        strike=D(strike),
        symbol=f"BTC-X-{strike}-{option_type[0]}",
    )
    Market.objects.filter(pk=opt.pk).update(expiry_at=timezone.now() + timedelta(days=1))
    index_set(underlying="BTC", price=D("64100"))
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "100000")
    fund(bob, "100000")
    place(bob, "SELL", "1", "3000", market=opt.symbol)
    place(alice, "BUY", "1", "3000", market=opt.symbol)
    # The buyer paid the premium up front, plus the taker fee; the seller received it.
    assert balance(alice).total == D("100000") - D("3000") - D("1.5")
    assert balance(bob).total == D("100000") + D("3000") - D("0.6")
    Market.objects.filter(pk=opt.pk).update(expiry_at=timezone.now())
    index_history(["64000", "64100", "64200"])
    settle_expired()
    assert balance(alice).total == D("100000") - D("3001.5") + D(payout)
    assert balance(bob).total == D("100000") + D("2999.4") - D(payout)
    assert position(alice, opt.symbol).size == 0
    assert check_invariants() == []


def test_option_buyer_without_balance_is_refused():
    from dexsite.errors import ExchangeError

    opt = dated("OPTION", option_type="CALL", strike=D("60000"))
    Market.objects.filter(pk=opt.pk).update(expiry_at=timezone.now() + timedelta(days=1))
    poor = UserFactory()
    fund(poor, "100")
    with pytest.raises(ExchangeError) as e:
        place(poor, "BUY", "1", "3000", market=opt.symbol)
    assert e.value.code == "INSUFFICIENT_BALANCE"
    assert not Order.objects.exists()


def test_short_option_needs_margin():
    from dexsite.errors import ExchangeError

    opt = dated("OPTION", option_type="CALL", strike=D("70000"))
    Market.objects.filter(pk=opt.pk).update(expiry_at=timezone.now() + timedelta(days=1))
    index_set(underlying="BTC", price=D("64000"))
    seller = UserFactory()
    fund(seller, "5000")
    # Per unit: max(15% * 64000 - 6000 OTM, 10% * 64000) = 6400, plus the mark premium.
    with pytest.raises(ExchangeError) as e:
        place(seller, "SELL", "1", "900", market=opt.symbol)
    assert e.value.code == "INSUFFICIENT_MARGIN"
    fund(seller, "5000")
    place(seller, "SELL", "1", "900", market=opt.symbol)
    assert balance(seller).locked >= D("6400")


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        (["NOPE", "5"], "no market trades NOPE"),
        (["BTC", "1e400"], "not a price"),
        (["BTC", "1E16"], "not a price"),
        (["BTC", "NaN"], "not a price"),
        (["BTC", "0"], "must be positive"),
        (["BTC", "64000.0000000000001"], "decimal places"),
    ],
)
def test_set_index_price_refuses_what_no_market_could_use(perp, args, refused):
    from django.core.management import CommandError, call_command

    before = Market.objects.get(symbol="BTC-PERP").index_price
    with pytest.raises(CommandError, match=refused):
        call_command("set_index_price", *args)
    assert Market.objects.get(symbol="BTC-PERP").index_price == before
    call_command("set_index_price", "BTC-PERP", "64123.5")
    assert Market.objects.get(symbol="BTC-PERP").index_price == Decimal("64123.5")
    # The marks follow at once (no book: the index).
    assert Book.objects.get(market=perp, mode="PAPER").mark_price == Decimal("64123.5")


def test_option_sells_beyond_a_held_long_are_margined_and_never_open_a_naked_short():
    """X holds 1 call and little cash. One sell of 1 is covered by it and reserves
    nothing; a second, with the long already promised, must be margined as a short and
    is refused. A buyer of 5 then takes only the covered 1: X ends flat, never short."""
    from dexsite.errors import ExchangeError

    opt = dated("OPTION", option_type="CALL", strike=D("70000"))
    Market.objects.filter(pk=opt.pk).update(expiry_at=timezone.now() + timedelta(days=1))
    index_set(underlying="BTC", price=D("64000"))
    x, writer, buyer = UserFactory(), UserFactory(), UserFactory()
    fund(x, "3100")
    fund(writer, "100000")
    fund(buyer, "100000")
    place(writer, "SELL", "1", "3000", market=opt.symbol)
    place(x, "BUY", "1", "3000", market=opt.symbol)
    assert position(x, opt.symbol).size == D("1")
    covered = place(x, "SELL", "1", "3000", market=opt.symbol)
    assert covered["status"] == "NEW"
    assert Order.objects.get(pk=covered["id"]).reserved == 0
    with pytest.raises(ExchangeError) as e:
        place(x, "SELL", "1", "3000", market=opt.symbol)
    assert e.value.code == "INSUFFICIENT_MARGIN"
    taken = place(buyer, "BUY", "5", market=opt.symbol)
    assert taken["filledQty"] == "1"
    assert position(x, opt.symbol).size == 0
    assert check_invariants() == []


def test_a_covered_option_sell_whose_long_is_sold_otherwise_leaves_the_book():
    opt = dated("OPTION", option_type="CALL", strike=D("70000"))
    Market.objects.filter(pk=opt.pk).update(expiry_at=timezone.now() + timedelta(days=1))
    index_set(underlying="BTC", price=D("64000"))
    x, writer, buyer = UserFactory(), UserFactory(), UserFactory()
    fund(x, "100000")
    fund(writer, "100000")
    fund(buyer, "100000")
    place(writer, "SELL", "1", "3000", market=opt.symbol)
    place(x, "BUY", "1", "3000", market=opt.symbol)
    covered = place(x, "SELL", "1", "3500", market=opt.symbol)
    # X sells the long another way: a margined sell at a better price, taken first.
    margined = place(x, "SELL", "2", "3100", market=opt.symbol)
    assert Order.objects.get(pk=margined["id"]).reserved > 0
    place(buyer, "BUY", "1", "3100", market=opt.symbol)
    assert position(x, opt.symbol).size == 0
    row = Order.objects.get(pk=covered["id"])
    assert (row.status, row.cancel_reason) == ("CANCELED", "UNCOVERED")
    assert check_invariants() == []


def test_money_a_pending_withdrawal_holds_counts_for_no_margin(perp):
    """Alice, 1 BTC long from 64000 at 20x in REAL with 3268 of cash, withdraws the 68
    that is free. At a mark of 61050 she has 3268 - 68 - 2950 = 250 of equity against
    305.25 of maintenance: she is liquidated. Counting the 68 on its way out as hers,
    she would not have been (318 of equity)."""
    from accounts.models import LinkedWallet
    from accounts.services.vault import withdrawal_reject, withdrawal_request
    from accounts.services.wallets import address_parse

    wallet = "0x" + "ab" * 20
    alice, bob, carol = UserFactory(), UserFactory(), UserFactory()
    fund(alice, "3300", mode="REAL")
    fund(bob, "100000", mode="REAL")
    fund(carol, "100000", mode="REAL")
    leverage_set(trader=alice, market=perp, mode="REAL", leverage=D("20"))

    def real(user, side, price):
        return order_place(
            trader=user,
            market="BTC-PERP",
            mode="REAL",
            side=side,
            type="LIMIT",
            price=D(price),
            qty=D("1"),
        )

    real(bob, "SELL", "64000")
    real(alice, "BUY", "64000")
    LinkedWallet.objects.create(trader=alice, address=address_parse(wallet))
    w = withdrawal_request(trader=alice, asset="USDC", amount=D("68"), address=wallet)
    assert balance(alice, mode="REAL").withdrawing == D("68")
    real(carol, "BUY", "61000")
    index_set(underlying="BTC", price=D("61050"))
    marks_refresh()
    shown = Position.objects.get(trader=alice, mode="REAL")
    assert shown.size == D("1")
    (liq,) = liquidations_run()
    assert (liq.equity, liq.maintenance) == (D("250"), D("305.25"))
    assert Position.objects.get(trader=alice, mode="REAL").size == 0
    # The withdrawal still holds its 68, out of reach of the loss.
    assert balance(alice, mode="REAL").locked >= D("68")
    withdrawal_reject(withdrawal_id=w.pk, by=None)
    assert balance(alice, mode="REAL").withdrawing == 0
    assert check_invariants() == []


@pytest.mark.parametrize("together", [False, True])
def test_a_resting_order_its_owner_cannot_carry_goes_and_the_taker_trades_on(perp, together):
    """Alice, 1 BTC long from 64000 with 3268 of cash, rests a reduce-only sell at 61000:
    filled, it would lose 3000, which her cash carried when she placed it. She has paid
    500 of funding since. A buyer reaching her order is not refused for her loss: her
    order is cancelled (MARGIN) and the buyer takes the next ask."""
    from trading.orders.place import _place_together
    from trading.orders.request import OrderRequest

    alice, bob, carol = levered_long(perp)
    doomed = place(alice, "SELL", "1", "61000", reduce_only=True)
    transfers_settle(
        amounts={alice.pk: D("-500"), carol.pk: D("500")},
        asset="USDC",
        mode="PAPER",
        reason="FUNDING",
        ref="funding:test",
    )
    place(carol, "SELL", "1", "61500")
    if together:
        req = OrderRequest(bob, "BUY", "MARKET", D("1"), None, "GTC", False, None, "USER")
        other = OrderRequest(
            carol, "BUY", "LIMIT", D("0.1"), D("50000"), "GTC", False, None, "USER"
        )
        (taken, _), (rested, _) = _place_together("BTC-PERP", "PAPER", [req, other])
        assert rested["status"] == "NEW"
    else:
        taken = place(bob, "BUY", "1")
    assert taken["filledQty"] == "1"
    assert [f["px"] for f in taken["fills"]] == ["61500"]
    row = Order.objects.get(pk=doomed["id"])
    assert (row.status, row.cancel_reason, row.filled_qty) == ("CANCELED", "MARGIN", 0)
    assert position(alice).size == D("1") and balance(alice).total == D("2768")
    assert check_invariants() == []


def test_a_funding_settled_early_leaves_its_samples_to_no_later_funding(perp, settings):
    """Funding settled by hand at t1 used the premium sampled before t1. Settled again
    at t2, within the same 8 hours, its rate comes from the samples after t1 only."""
    settings.INDEX_STALE_SECONDS = 10**6
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "10000")
    fund(bob, "10000")
    place(bob, "SELL", "0.5", "64000")
    place(alice, "BUY", "0.5", "64000")
    book = Book.objects.get(market=perp, mode="PAPER")
    t1 = timezone.now()
    FundingSample.objects.create(book=book, premium=D("0.003"), at=t1 - timedelta(minutes=1))
    Book.objects.filter(pk=book.pk).update(next_funding_at=t1)
    first = funding_settle(book_id=book.pk, now=t1)
    # 0.003 + clamp(0.0001 - 0.003, +-0.0005) = 0.0025
    assert first.rate == D("0.0025")
    t2 = t1 + timedelta(minutes=30)
    FundingSample.objects.create(book=book, premium=D("0.001"), at=t2 - timedelta(minutes=1))
    Book.objects.filter(pk=book.pk).update(next_funding_at=t2)
    second = funding_settle(book_id=book.pk, now=t2)
    # Only the sample after t1: 0.001 - 0.0005 = 0.0005. (With the first counted again,
    # the average 0.002 would have given 0.0015.)
    assert second.rate == D("0.0005")
    assert check_invariants() == []


def test_reduce_only_orders_of_a_deleveraged_position_leave_the_book(perp):
    """Bob, short 1, rests a reduce-only buy. Auto-deleverage closes his short: the
    buy could now only open a long, so it is cancelled (REDUCE_ONLY) and leaves the book."""
    _alice, bob, carol = levered_long(perp)
    ro = place(bob, "BUY", "1", "50000", reduce_only=True)
    place(carol, "BUY", "1", "60000")
    index_set(underlying="BTC", price=D("60500"))
    marks_refresh()
    (liq,) = liquidations_run()
    assert liq.adl_qty == D("1") and position(bob).size == 0
    row = Order.objects.get(pk=ro["id"])
    assert (row.status, row.cancel_reason) == ("CANCELED", "REDUCE_ONLY")
    assert not Order.objects.filter(trader=bob, status__in=["NEW", "PARTIALLY_FILLED"]).exists()
    assert check_invariants() == []


def test_lowering_leverage_past_the_cash_is_refused_even_with_unrealized_profit(perp):
    """Alice's long is far in profit, so her free margin is large, but her cash is not:
    the open order's reservation at the lower leverage would exceed it. Refused with
    INSUFFICIENT_MARGIN, not a database error; nothing changes."""
    from dexsite.errors import ExchangeError

    alice, bob = UserFactory(), UserFactory()
    fund(alice, "100000")
    fund(bob, "100000")
    leverage_set(trader=alice, market=perp, mode="PAPER", leverage=D("20"))
    place(bob, "SELL", "1", "64000")
    place(alice, "BUY", "1", "64000")
    index_set(underlying="BTC", price=D("200000"))
    marks_refresh()
    place(alice, "BUY", "30", "64000")  # 30 * 64000 / 20 + 960 = 96960 reserved
    locked = balance(alice).locked
    with pytest.raises(ExchangeError) as e:
        leverage_set(trader=alice, market=perp, mode="PAPER", leverage=D("10"))
    assert e.value.code == "INSUFFICIENT_MARGIN"
    assert balance(alice).locked == locked
    assert position(alice).leverage == D("20")
    assert check_invariants() == []


def test_a_delisted_future_still_settles_its_positions_at_expiry():
    from trading.services.markets import market_delist

    fut, alice, _bob = future_held()
    market_delist(market=Market.objects.get(pk=fut.pk))
    Market.objects.filter(pk=fut.pk).update(expiry_at=timezone.now())
    index_history(["64000", "64100", "64200"])
    (settlement,) = settle_expired()
    assert settlement.price == D("64100")
    assert position(alice, fut.symbol).size == 0
    assert position(alice, fut.symbol).realized_pnl == D("550")
    assert Market.objects.get(pk=fut.pk).status == "SETTLED"
    assert check_invariants() == []
