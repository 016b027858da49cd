"""Attacks on the risk rules: one person with two accounts (or a fat finger) trying to
take money from the exchange's other users. Each was reproduced against the exchange
before its risk gate and price bands; each now fails and changes nothing. Besides
conservation (`check_invariants`), each checks solvency: no account ends below zero
equity, and no third party pays.

The mark price's own cases (dust quotes, deep books at a premium, the funding premium)
are in trading/tests/test_mark_price.py; the stalled sweep in
trading/tests/test_liquidation_finishes.py."""

import threading
from decimal import Decimal

import pytest
from django.db import connections

from accounts.models import LinkedWallet, User
from accounts.services import vault
from accounts.services.wallets import address_parse
from dexsite.errors import ExchangeError
from ledger.services import INSURANCE_ACCOUNT
from trading import margin
from trading.invariants import check_invariants
from trading.models import Book, Market, Order, Position, Trade
from trading.orders.cancel import orders_cancel_all
from trading.orders.place import order_place
from trading.services.liquidation import liquidations_run
from trading.services.markets import leverage_set
from trading.services.prices import index_set, marks_refresh
from trading.tests.factories import MarketFactory, UserFactory, balance, fund, spot_market

D = Decimal
requires_postgres = pytest.mark.skipif(
    connections["default"].vendor != "postgresql", reason="row locks need PostgreSQL"
)


def place(user, side, qty, price=None, market="BTC-PERP", mode="PAPER", **kw):
    body, _ = order_place(
        trader=user,
        market=market,
        mode=mode,
        side=side,
        type="LIMIT" if price is not None else "MARKET",
        price=D(price) if price is not None else None,
        qty=D(qty),
        **kw,
    )
    return body


def refused(code, *args, **kw) -> ExchangeError:
    """Place an order that must be refused with `code`; the refusal changes nothing."""
    before = (Order.objects.count(), Trade.objects.count())
    with pytest.raises(ExchangeError) as e:
        place(*args, **kw)
    assert e.value.code == code, e.value
    assert (Order.objects.count(), Trade.objects.count()) == before
    return e.value


def account(user, mode="PAPER") -> margin.Account:
    from ledger.models import Balance

    row = Balance.objects.filter(trader=user, asset="USDC", mode=mode).first()
    return margin.account_of(row, margin.exposures_for(user.pk, mode))


def mark(market: Market, price: str) -> None:
    """The index and the books' marks at `price` (the clock's next tick would agree)."""
    index_set(underlying=market.underlying, price=D(price))
    Book.objects.filter(market=market).update(mark_price=D(price))


@pytest.fixture
def perp(db):
    m = MarketFactory(max_leverage=D("20"))
    mark(m, "64000")
    return m


@pytest.fixture
def spot(db):
    m = spot_market()
    index_set(underlying="CXPT", price=D("1.25"))
    return m


def underwater_long(perp, mode="PAPER"):
    """Mallory: 0.1 BTC long from 64000 at 10x with 1000 USDC; the index falls to 60000:
    equity 596.8, initial margin 600, free margin -3.2 (maintenance 30: not liquidated).
    Honest Harry sold to her."""
    mallory, harry = UserFactory(username="mallory"), UserFactory(username="harry")
    fund(mallory, "1000", mode=mode)
    fund(harry, "100000", mode=mode)
    place(harry, "SELL", "0.1", "64000", mode=mode)
    place(mallory, "BUY", "0.1", "64000", mode=mode)
    mark(perp, "60000")
    a = account(mallory, mode)
    assert a.equity == D("596.8") and a.initial == D("600") and a.free == D("-3.2")
    return mallory, harry


def test_collateral_cannot_leave_through_the_spot_market(perp, spot):
    """Attack 1: an account with negative free margin buys spot from an accomplice at 80x
    the index. Refused by the band; and in the band, a spot buy is paid from free margin,
    not from cash."""
    mallory, _harry = underwater_long(perp)
    eve = UserFactory(username="eve")
    fund(eve, "100000", asset="CXPT")
    place(eve, "SELL", "4000", "100", market="CXPT-USDC")  # passive: it may rest
    refused("PRICE_OUT_OF_BAND", mallory, "BUY", "4000", "100", market="CXPT-USDC")
    # A market buy stops at the slippage limit (1.25 x 1.05): nothing there to fill.
    swept = place(mallory, "BUY", "4000", market="CXPT-USDC")
    assert swept["filledQty"] == "0" and swept["cancelReason"] == "PRICE_BAND"
    # At a fair price the cash is there (996.8) but the free margin is not.
    place(eve, "SELL", "400", "1.26", market="CXPT-USDC")
    e = refused("INSUFFICIENT_BALANCE", mallory, "BUY", "400", "1.26", market="CXPT-USDC")
    assert "free margin" in str(e)
    assert balance(mallory).total == D("996.8") and balance(eve, "CXPT").total == D("100000")
    assert check_invariants() == []


def test_a_spot_buy_within_free_margin_goes_through(perp, spot):
    """The gate is not a wall: with free margin, spot is bought from it."""
    alice, eve = UserFactory(), UserFactory()
    fund(alice, "1000")
    fund(eve, "1000", asset="CXPT")
    place(eve, "SELL", "400", "1.25", market="CXPT-USDC")
    got = place(alice, "BUY", "400", "1.25", market="CXPT-USDC")
    assert got["status"] == "FILLED"
    assert balance(alice, "CXPT").total == D("400")


def test_reduce_only_is_no_exemption_from_solvency(perp):
    """Attack 2: a reduce-only sell far below the mark into an accomplice's bid. Refused
    by the band; in a market whose band lets the price through, refused by the gate
    (equity would end below zero); a close that leaves equity above zero goes."""
    alice = UserFactory(username="alice")
    eve = UserFactory(username="eve")
    harry = UserFactory(username="harry")
    fund(alice, "3300")
    fund(eve, "100000")
    fund(harry, "100000")
    leverage_set(trader=alice, market=perp, mode="PAPER", leverage=D("20"))
    place(harry, "SELL", "1", "64000")
    place(alice, "BUY", "1", "64000")
    assert balance(alice).total == D("3268")
    place(eve, "BUY", "1", "50000")
    refused("PRICE_OUT_OF_BAND", alice, "SELL", "1", "50000", reduce_only=True)
    Market.objects.filter(pk=perp.pk).update(price_band=D("0.5"))
    e = refused("INSUFFICIENT_MARGIN", alice, "SELL", "1", "50000", reduce_only=True)
    assert "below zero" in str(e)
    # The same order without reduceOnly was always refused.
    refused("INSUFFICIENT_MARGIN", alice, "SELL", "1", "50000")
    # Sold at 61000: 3000 lost, 30.5 of fee, 237.5 of equity left.
    orders_cancel_all(trader=eve, mode="PAPER")
    place(eve, "BUY", "1", "61000")
    got = place(alice, "SELL", "1", "61000", reduce_only=True)
    assert got["status"] == "FILLED"
    assert position(alice).size == 0 and balance(alice).total == D("237.5")
    assert check_invariants() == []


def position(user, market="BTC-PERP", mode="PAPER"):
    return Position.objects.get(trader=user, market__symbol=market, mode=mode)


def test_fat_fingers_are_stopped_by_the_bands(perp):
    """A market buy of 100,000 BTC fills within the slippage band and no further; a
    limit buy at 15x the mark is refused."""
    whale, makers = UserFactory(), UserFactory()
    fund(whale, "100000000")
    fund(makers, "100000000")
    for px in ("64100", "66000", "67500", "90000"):
        place(makers, "SELL", "1", px)
    refused("PRICE_OUT_OF_BAND", whale, "BUY", "1", "960000")
    got = place(whale, "BUY", "100000")
    # 64000 x 1.05 = 67200: 64100 and 66000 fill, 67500 and 90000 do not.
    assert got["filledQty"] == "2" and got["cancelReason"] == "PRICE_BAND"
    assert [f["px"] for f in got["fills"]] == ["64100", "66000"]
    assert Order.objects.filter(trader=makers, status="NEW").count() == 2
    assert check_invariants() == []


def test_wash_trades_at_off_market_prices_move_nothing_past_the_band(perp):
    """Two accounts of one person trade with each other to move value: past the band the
    taker is refused; inside it, the loser stays solvent and nobody else pays."""
    a, b = UserFactory(), UserFactory()
    fund(a, "1000")
    fund(b, "1000")
    place(b, "BUY", "0.1", "20000")  # passive, far below: may rest
    refused("PRICE_OUT_OF_BAND", a, "SELL", "0.1", "20000")
    place(b, "BUY", "0.1", "61000")
    got = place(a, "SELL", "0.1", "61000")
    assert got["status"] == "FILLED"
    for who in (a, b):
        assert account(who).equity > 0 and account(who).free >= 0
    assert check_invariants() == []


def test_two_dust_quotes_do_not_liquidate_a_healthy_short(perp):
    """Attack 3: a bid at 72,000 and an offer at 72,000.5, 0.001 BTC each, with the index
    at 64,000, moved the mark to 72,000 in one tick: a healthy 10x short was liquidated
    into the attacker's own long. Now the bid is past the band; at the band's edge the
    two quotes leave the mark at the index, the short open, and, once they go, the basis
    average at zero."""
    honest, mallory, eve = UserFactory(), UserFactory(), UserFactory()
    fund(honest, "1000")
    fund(mallory, "100000")
    fund(eve, "100000")
    place(mallory, "BUY", "0.1", "64000")
    place(honest, "SELL", "0.1", "64000")  # 10x: 640 of margin, maintenance 32
    # The bid at 72,000 is past the band now; at its edge, 67,200, it is let through.
    refused("PRICE_OUT_OF_BAND", eve, "BUY", "0.001", "72000")
    place(eve, "BUY", "0.001", "67200")
    place(eve, "SELL", "0.001", "67200.5")
    for _ in range(5):
        marks_refresh()
    book = Book.objects.get(market=perp, mode="PAPER")
    assert book.mark_price == D("64000")
    assert liquidations_run() == []
    assert position(honest).size == D("-0.1")
    orders_cancel_all(trader=eve, mode="PAPER")
    marks_refresh()
    assert not Book.objects.get(pk=book.pk).basis_avg  # never sampled
    assert check_invariants() == []


def test_a_bid_waiting_far_below_the_mark_does_not_buy_a_liquidation_from_the_fund(perp):
    """A liquidation used to close into the book as far as the insurance fund could pay
    for: a bid resting far below the mark (passive, so allowed) bought the position
    there, its owner pocketing the fund's money. The liquidation now trades no worse
    than the band; what the book does not take there is deleveraged."""
    from ledger.services import system_account

    insurance = system_account(INSURANCE_ACCOUNT)
    fund(insurance, "1000000")
    mallory, harry = underwater_long(perp)
    vulture = UserFactory(username="vulture")
    fund(vulture, "100000")
    place(vulture, "BUY", "0.1", "40000")
    mark(perp, "54000")  # equity -3.2: below maintenance, and bankrupt
    fund_before = balance(insurance).total
    liquidations_run()
    assert position(mallory).size == 0
    assert not Position.objects.filter(trader=vulture).exclude(size=0).exists()
    assert Order.objects.get(trader=vulture).status == "NEW"
    # Closed against Harry's short (auto-deleverage) at the price Mallory's cash pays.
    assert position(harry).size == 0
    assert balance(insurance).total >= fund_before
    assert check_invariants() == []


def test_a_withdrawal_while_below_maintenance_is_refused(perp):
    """An account about to be liquidated asks for its cash: nothing can be withdrawn,
    and the next sweep liquidates it whole."""
    mallory, harry = underwater_long(perp, mode="REAL")
    address = address_parse("0x" + "ab" * 20)
    LinkedWallet.objects.create(trader=mallory, address=address)
    with pytest.raises(ExchangeError) as e:
        vault.withdrawal_request(trader=mallory, asset="USDC", amount=D("10"), address=address)
    assert e.value.code == "INSUFFICIENT_BALANCE"
    place(harry, "BUY", "0.1", "56000", mode="REAL")
    mark(perp, "56000")  # equity 196.8, maintenance 28
    assert account(mallory, "REAL").below_maintenance() is False
    mark(perp, "54300")  # equity 26.8 < maintenance 27.15
    assert account(mallory, "REAL").below_maintenance()
    with pytest.raises(ExchangeError):
        vault.withdrawal_request(trader=mallory, asset="USDC", amount=D("1"), address=address)
    assert [x.trader_id for x in liquidations_run()] == [mallory.pk]
    assert position(mallory, mode="REAL").size == 0
    assert balance(mallory, mode="REAL").total >= 0
    assert check_invariants() == []


def test_raising_leverage_never_refused_lowering_judged_by_the_gate(perp):
    """Leverage goes through the gate: lowering it past what the account carries is
    refused and changes nothing."""
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "1000")
    fund(bob, "100000")
    place(bob, "SELL", "0.2", "64000")
    leverage_set(trader=alice, market=perp, mode="PAPER", leverage=D("20"))
    place(alice, "BUY", "0.2", "64000")  # 640 of margin at 20x
    with pytest.raises(ExchangeError) as e:
        leverage_set(trader=alice, market=perp, mode="PAPER", leverage=D("5"))
    assert e.value.code == "INSUFFICIENT_MARGIN"
    assert position(alice).leverage == D("20")
    # 15x: 853.33 of margin fits the 993.6 of equity.
    assert leverage_set(trader=alice, market=perp, mode="PAPER", leverage=D("15")) == D("15")


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_spot_buy_raced_against_a_withdrawal_spends_the_free_margin_once():
    """A spot buy and a withdrawal of the same free margin, at the same moment, many
    times over: never both."""
    perp = MarketFactory(max_leverage=D("20"))
    mark(perp, "64000")
    spot = spot_market()
    index_set(underlying="CXPT", price=D("1.25"))
    alice, eve, harry = (User.objects.create_user(n, password="a-long-pw-1") for n in "aeh")
    fund(alice, "2000", mode="REAL")
    fund(harry, "100000", mode="REAL")
    fund(eve, "100000", asset="CXPT", mode="REAL")
    place(harry, "SELL", "0.2", "64000", mode="REAL")
    # 0.2 BTC at 10x: 1280 of margin, 6.4 of fee: 713.6 free.
    place(alice, "BUY", "0.2", "64000", mode="REAL")
    place(eve, "SELL", "4000", "1.25", market=spot.symbol, mode="REAL")
    address = address_parse("0x" + "cd" * 20)
    LinkedWallet.objects.create(trader=alice, address=address)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        trader = User.objects.get(pk=alice.pk)
        try:
            barrier.wait()
            if i % 2:
                vault.withdrawal_request(
                    trader=trader, asset="USDC", amount=D("400"), address=address
                )
                outcomes.append("withdrawn")
            else:
                place(trader, "BUY", "320", "1.25", market=spot.symbol, mode="REAL")
                outcomes.append("bought")
        except ExchangeError as e:
            outcomes.append(e.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # Each success takes 400 or 400.2 of the 713.6 free: one fits, whichever it is.
    assert len([o for o in outcomes if o in ("withdrawn", "bought")]) == 1, outcomes
    a = account(alice, "REAL")
    assert a.free >= 0
    assert check_invariants() == []
