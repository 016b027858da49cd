"""Defects the trust scenarios found in the services, each pinned by a test."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from accounts.models import User
from accounts.services.paper import paper_reset
from dexsite.errors import ExchangeError
from ledger.services import INSURANCE_ACCOUNT, system_account
from trading.invariants import check_invariants
from trading.models import OPEN_STATUSES, Book, Market, Order, Position
from trading.orders.place import order_place
from trading.services import expiry
from trading.services.liquidation import liquidations_run
from trading.services.prices import index_set, marks_refresh
from trading.tests.factories import MarketFactory, UserFactory, balance, call_market, fund

D = Decimal
requires_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks across connections need PostgreSQL"
)


@pytest.mark.django_db
def test_an_order_arriving_while_a_market_expires_does_not_outlive_it(monkeypatch):
    """Expiry cancelled the open orders in one transaction and settled in the next: an
    order placed in between stayed open in the SETTLED market, its funds locked."""
    fut = MarketFactory(
        symbol="BTC-EXP", kind="FUTURE", expiry_at=timezone.now() + timedelta(days=1)
    )
    index_set(underlying="BTC", price=D("64000"))
    late = UserFactory()
    fund(late, "10000")
    real_cancel_all = expiry.orders_cancel_all

    def cancel_all_then_an_order_arrives(**kw):
        canceled = real_cancel_all(**kw)
        if kw.get("reason") == "EXPIRED" and not Order.objects.filter(trader=late).exists():
            order_place(
                trader=late,
                market=fut.symbol,
                mode="PAPER",
                side="BUY",
                type="LIMIT",
                price=D("60000"),
                qty=D("0.01"),
            )
        return canceled

    monkeypatch.setattr(expiry, "orders_cancel_all", cancel_all_then_an_order_arrives)
    Market.objects.filter(pk=fut.pk).update(expiry_at=timezone.now())
    assert len(expiry.settle_expired()) == 1
    assert Market.objects.get(pk=fut.pk).status == "SETTLED"
    assert not Order.objects.filter(market=fut, status__in=OPEN_STATUSES).exists()
    assert Order.objects.get(trader=late).cancel_reason == "EXPIRED"
    assert check_invariants() == []


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_an_order_waiting_on_a_delisting_book_sees_the_delisting():
    """The book lock read the market in the same statement: an order that queued behind
    a delisting (which holds the book's lock while it sets the status and cancels) saw
    the market as it was when it started waiting, ACTIVE, and rested in a DELISTED book."""
    perp = MarketFactory(symbol="BTC-DLS")
    trader = UserFactory()
    fund(trader, "10000")
    with connection.cursor() as c:
        c.execute("SELECT pg_backend_pid()")
        (placing,) = c.fetchone()  # the connection the order is placed on
    locked, done = threading.Event(), threading.Event()
    queued: list[bool] = []

    def delist() -> None:
        try:
            with transaction.atomic():
                Book.objects.select_for_update().get(market=perp, mode="PAPER")
                Market.objects.filter(pk=perp.pk).update(status="DELISTED")
                locked.set()
                # Commit only once the order waits for this lock (polled: PostgreSQL
                # signals no such thing), so that it started while the market was ACTIVE.
                queued.append(_until_blocked_by_me(placing))
        finally:
            connections.close_all()
            done.set()

    t = threading.Thread(target=delist)
    t.start()
    assert locked.wait(10)
    with pytest.raises(ExchangeError) as refused:
        order_place(
            trader=trader,
            market=perp.symbol,
            mode="PAPER",
            side="BUY",
            type="LIMIT",
            price=D("60000"),
            qty=D("0.01"),
        )
    t.join()
    assert done.is_set() and queued == [True], "the order never queued behind the delisting"
    assert refused.value.code == "MARKET_DELISTED"
    assert not Order.objects.filter(market=perp).exists()
    assert check_invariants() == []


def _until_blocked_by_me(pid: int, timeout: float = 30) -> bool:
    """Whether backend `pid` came to wait for a lock this connection holds within
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as c:
        while time.monotonic() < deadline:
            c.execute("SELECT pg_backend_pid() = ANY(pg_blocking_pids(%s))", [pid])
            if c.fetchone()[0]:
                return True
            time.sleep(0.005)
    return False


@pytest.mark.django_db
def test_an_insurance_fund_holding_a_position_pays_its_loss_only_once():
    """The insurance fund holds positions (a paper reset hands them over). When it lost
    on one at expiry, its cash was counted twice, once as what it paid as a position
    holder and again as the buffer for what payers could not pay: it paid out more than
    it had and its balance went negative (the database refused the settlement)."""
    fut = MarketFactory(
        symbol="BTC-INS", kind="FUTURE", expiry_at=timezone.now() + timedelta(days=1)
    )
    index_set(underlying="BTC", price=D("64000"))
    Book.objects.filter(market=fut).update(mark_price=D("64000"))
    insurance = system_account(INSURANCE_ACCOUNT)
    fund(insurance, "100")
    bob, carol = UserFactory(), UserFactory()
    fund(bob, "10000")
    fund(carol, "10000")
    for trader, side in ((carol, "SELL"), (bob, "BUY")):
        order_place(
            trader=trader,
            market=fut.symbol,
            mode="PAPER",
            side=side,
            type="LIMIT",
            price=D("64000"),
            qty=D("0.5"),
        )
    paper_reset(trader=User.objects.get(pk=bob.pk))  # the fund is now long 0.5 at 64000
    assert Position.objects.get(trader=insurance, market=fut).size == D("0.5")
    index_set(underlying="BTC", price=D("60000"))
    Market.objects.filter(pk=fut.pk).update(expiry_at=timezone.now())
    assert len(expiry.settle_expired()) == 1
    # Settled at the average index, 62000: the fund owed 0.5 x 2000 = 1000 and had 100.
    # It pays 100, carol gets that 100 (the rest is socialised) and the fund ends at
    # zero, not below.
    assert balance(insurance).total == 0
    assert balance(carol).total == D("10000") - D("6.4") + D("100")
    assert check_invariants() == []


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [156, 284])
def test_flows_that_drove_the_paper_insurance_fund_negative(seed, settings):
    """Seeded flows in which the PAPER insurance fund lost more on positions handed to it
    than it held: at an expiry where every holder lost (the payout factor divided by
    nothing owed) and in an auto-deleveraging against its position (its balance went
    negative). Paper money is free: the fund is topped up from the faucet instead."""
    from trust.flows import Flow, isolated

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with isolated():
        flow = Flow(seed)
        flow.run(200)
        assert flow.check() == []


def _short_call_below_maintenance():
    opt = call_market("BTC-C64K")
    perp = MarketFactory(max_leverage=D("20"))
    index_set(underlying="BTC", price=D("64000"))
    marks_refresh()
    seller, buyer, maker, short, long_ = (UserFactory() for _ in range(5))
    fund(seller, "2000")
    for rich in (buyer, maker, long_):
        fund(rich, "1000000")
    fund(short, "5000")

    def place(trader, market, side, qty, price):
        order_place(
            trader=trader,
            market=market.symbol,
            mode="PAPER",
            side=side,
            type="LIMIT",
            price=D(price),
            qty=D(qty),
        )

    place(seller, opt, "SELL", "0.1", "1800")
    place(buyer, opt, "BUY", "0.1", "1800")
    place(long_, perp, "BUY", "0.5", "64000")
    place(short, perp, "SELL", "0.5", "64000")
    index_set(underlying="BTC", price=D("80000"))
    marks_refresh()
    place(maker, opt, "SELL", "0.1", "17000")
    return seller, short, opt


@pytest.mark.django_db
def test_a_liquidation_the_engine_cannot_carry_out_does_not_stop_the_sweep():
    """A liquidation that failed raised out of the sweep, so every account after it
    stayed below maintenance until the failing one recovered."""
    _, short, _ = _short_call_below_maintenance()
    done = liquidations_run()
    assert short.pk in {liq.trader_id for liq in done}
    assert Position.objects.get(trader=short, market__kind="PERP").size == 0
    assert check_invariants() == []


@pytest.mark.django_db
def test_a_short_option_below_maintenance_is_bought_back():
    """A reduce-only option buy was held to free margin (equity less initial margin),
    which an account below maintenance does not have: the risk engine could not buy
    back a short option (INSUFFICIENT_BALANCE)."""
    seller, _, opt = _short_call_below_maintenance()
    cash_before = balance(seller).total
    liquidations_run()
    assert Position.objects.get(trader=seller, market=opt).size == 0
    # It paid the maker's 17000 x 0.1 and its fee out of its own cash.
    assert balance(seller).total < cash_before - D("1700")
    assert balance(seller).total >= 0
    assert check_invariants() == []


@pytest.mark.django_db
def test_a_reduce_only_option_buy_is_still_held_to_cash():
    """Reduce-only lifts the margin test, not the cash one: a buy-back costing more cash
    than the account holds is refused and changes nothing."""
    seller, _, opt = _short_call_below_maintenance()
    # Priced where the band lets it through: the cash is what refuses it.
    Market.objects.filter(pk=opt.pk).update(price_band=D("10"))
    with pytest.raises(ExchangeError) as e:
        order_place(
            trader=seller, market=opt.symbol, mode="PAPER", side="BUY", type="LIMIT",
            price=D("25000"), qty=D("0.1"), reduce_only=True,
        )  # fmt: skip
    assert e.value.code == "INSUFFICIENT_BALANCE"
    assert Position.objects.get(trader=seller, market=opt).size == D("-0.1")


@pytest.mark.django_db
def test_a_system_account_created_by_a_rolled_back_transaction_is_not_remembered():
    """The process remembered the id of a system account created inside a transaction
    that then rolled back (a refused liquidation creating the insurance fund): every
    later posting to it referred to a row that did not exist."""
    from ledger import services as ledger_services
    from trust.flows import committed

    with pytest.raises(RuntimeError), transaction.atomic():
        ledger_services.system_account_id(INSURANCE_ACCOUNT)
        raise RuntimeError
    assert INSURANCE_ACCOUNT not in ledger_services._system_ids
    with committed():
        pk = ledger_services.system_account_id(INSURANCE_ACCOUNT)
    assert ledger_services._system_ids[INSURANCE_ACCOUNT] == pk
    assert User.objects.get(username=INSURANCE_ACCOUNT).pk == pk
