"""A liquidation always finishes or leaves the account visibly behind: auto-deleverage
releases what the counterparty's orders lock and takes no more than it can pay; one
account that fails does not stop the sweep; every sweep is recorded; every trader a
liquidation, auto-deleverage or expiry touches hears of it after the commit."""

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from decimal import ROUND_FLOOR, Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from ledger.models import Balance
from ledger.services import INSURANCE_ACCOUNT, system_account
from ledger.signals import balances_changed
from realtime import names
from trading import signals
from trading.invariants import check_invariants
from trading.models import Book, LiquidationSweep, Market, Order, Position, Trade
from trading.orders.place import order_place
from trading.presenters import balance_dict
from trading.services import liquidation
from trading.services.expiry import settle_expired
from trading.services.liquidation import liquidations_run
from trading.services.markets import leverage_set
from trading.services.prices import index_set, marks_refresh
from trading.tests.factories import MarketFactory, UserFactory, balance, call_market, fund
from trading.tests.test_risk_engine import future_held, index_history

D = Decimal
# The checker's sums are exact on PostgreSQL only (SQLite adds decimals in floating
# point), and a refused row lock (55P03, `lock_timeout`) is PostgreSQL's.
requires_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="exact sums and lock_timeout: PostgreSQL"
)
REAL = "REAL"


def place(user, side, qty, price, *, market="BTC-PERP", mode=REAL) -> dict:
    body, _ = order_place(
        trader=user,
        market=market,
        mode=mode,
        side=side,
        type="LIMIT",
        price=D(price),
        qty=D(qty),
    )
    return body


def move(underlying: str, price: str) -> None:
    index_set(underlying=underlying, price=D(price))
    marks_refresh()


def failures(error: str) -> float:
    value = REGISTRY.get_sample_value("dex_liquidation_failures_total", {"error": error})
    return value or 0.0


def solvent() -> None:
    """No balance below what it locks (the database refuses it too: said here in words)."""
    for b in Balance.objects.all():
        assert b.total >= b.locked >= 0, (b.trader_id, b.mode, b.total, b.locked)


def size(user, market="BTC-PERP", mode=REAL) -> Decimal:
    return Position.objects.get(trader=user, market__symbol=market, mode=mode).size


@pytest.fixture
def perp(db):
    m = MarketFactory(max_leverage=D("20"))
    move("BTC", "64000")
    return m


def bankrupt_long_against_a_locked_short(
    perp, *, btc_lock: str, eth_lock: str = "0", at_64000: Callable[[], None] | None = None
):
    """The reproduced attack, in REAL money. Alice: 1 BTC long from 64000 at 20x with
    3268 of cash. Dave takes over Bob's short at 60000; at 56000, with 4000 of
    unrealized profit, he may lock all his cash (3988) in resting orders: `btc_lock`
    BTC to sell at 57000, `eth_lock` ETH to buy at 2900. The index comes back to 60500:
    Alice is bankrupt, the book bids nothing, the fund is empty. Her cash runs out at
    60762.5, where Dave, the only short, is deleveraged and loses 762.5, more than his
    orders leave him. `at_64000` runs once Alice holds her long."""
    alice, bob, dave = UserFactory(), UserFactory(), UserFactory()
    fund(alice, "3300", mode=REAL)
    fund(bob, "100000", mode=REAL)
    fund(dave, "4000", mode=REAL)
    for u in (alice, dave):
        leverage_set(trader=u, market=perp, mode=REAL, leverage=D("20"))
    place(bob, "SELL", "1", "64000")
    place(alice, "BUY", "1", "64000")
    if at_64000 is not None:
        at_64000()
    move("BTC", "60000")
    place(dave, "SELL", "1", "60000")
    place(bob, "BUY", "1", "60000")
    move("BTC", "56000")
    orders = {}
    if D(btc_lock):
        orders["BTC"] = place(dave, "SELL", btc_lock, "57000")
    if D(eth_lock):
        eth = MarketFactory(symbol="ETH-PERP", base="ETH", underlying="ETH", mark_price=D("3000"))
        leverage_set(trader=dave, market=eth, mode=REAL, leverage=D("20"))
        move("ETH", "3000")
        orders["ETH"] = place(dave, "BUY", eth_lock, "2900", market="ETH-PERP")
    move("BTC", "60500")
    assert balance(dave, mode=REAL).total == D("3988")
    assert balance(dave, mode=REAL).total - balance(dave, mode=REAL).locked < D("762.5")
    return alice, dave, orders


def test_adl_releases_the_counterpartys_orders_and_the_liquidation_finishes(perp):
    """(a) The reproduced attack: Dave's loss at the ADL price did not fit beside what his
    order locks, the database refused his balance, and every sweep aborted at Alice,
    bankrupt and open. His order is cancelled, he pays, Alice is closed."""
    alice, dave, orders = bankrupt_long_against_a_locked_short(perp, btc_lock="1.3")

    (liq,) = liquidations_run()

    assert liq.trader_id == alice.pk and liq.adl_qty == D("1")
    assert size(alice) == 0 and size(dave) == 0
    # Dave's order in the market was cancelled, its lock released, and he paid his
    # 60000 - 60762.5 in full; Alice's 3268 paid 3237.5, and her last 30.5 the fee.
    row = Order.objects.get(pk=orders["BTC"]["id"])
    assert (row.status, row.cancel_reason) == ("CANCELED", "ADL")
    dave_cash = balance(dave, mode=REAL)
    assert (dave_cash.total, dave_cash.locked) == (D("3988") - D("762.5"), 0)
    assert balance(alice, mode=REAL).total == 0
    assert liq.insurance_paid == 0 and liq.fee == D("30.5")
    solvent()
    assert check_invariants() == []
    sweep = LiquidationSweep.objects.get()
    assert (sweep.liquidated, sweep.failed, sweep.left_below) == (1, 0, [])
    assert liquidations_run() == []


@requires_postgres
def test_adl_takes_no_more_than_the_counterparty_has_and_the_fund_covers_the_rest(perp):
    """Dave's ETH orders (another market: not his ADL's business) keep 3500 locked; once
    his BTC order is cancelled he has 488 of the 762.5 he owes. He pays 488, the fund
    the rest; his ETH order stays."""
    insurance = system_account(INSURANCE_ACCOUNT)
    fund(insurance, "1000", mode=REAL)
    alice, dave, orders = bankrupt_long_against_a_locked_short(
        perp, btc_lock="0.1", eth_lock="23.9"
    )
    eth_locked = Order.objects.get(pk=orders["ETH"]["id"]).reserved
    has = D("3988") - eth_locked
    assert has < D("762.5")

    (liq,) = liquidations_run()

    assert size(alice) == 0 and size(dave) == 0
    assert Order.objects.get(pk=orders["ETH"]["id"]).status == "NEW"
    assert Order.objects.get(pk=orders["BTC"]["id"]).cancel_reason == "ADL"
    dave_cash = balance(dave, mode=REAL)
    assert dave_cash.total == dave_cash.locked == eth_locked
    shortfall = D("762.5") - has
    assert liq.insurance_paid == shortfall
    (step,) = liq.detail["steps"]
    assert D(step["adlShortfall"]) == shortfall and "adlSocialised" not in step
    # The fund advanced for a worse price no book gave, and got it back before the ADL:
    # it paid only Dave's shortfall, and got the fee.
    assert balance(insurance, mode=REAL).total == D("1000") - shortfall + liq.fee
    solvent()
    assert check_invariants() == []


@requires_postgres
def test_an_adl_nobody_can_pay_is_refused_and_the_sweep_goes_on(perp):
    """(b) With an empty REAL fund Dave's shortfall has nobody to fall on (Bob took the
    profit it stood for long ago): Alice's liquidation is refused and rolled back whole.
    Erin, below maintenance in PAPER and after her in the sweep, is still liquidated;
    the sweep records Alice as left below, at negative equity. Once the fund is topped
    up the next sweep finishes her."""
    erin, frank = [], []

    def erin_long_in_paper() -> None:
        erin.append(UserFactory())
        frank.append(UserFactory())
        fund(erin[0], "3300")
        fund(frank[0], "100000")
        leverage_set(trader=erin[0], market=perp, mode="PAPER", leverage=D("20"))
        place(frank[0], "SELL", "1", "64000", mode="PAPER")
        place(erin[0], "BUY", "1", "64000", mode="PAPER")

    alice, dave, orders = bankrupt_long_against_a_locked_short(
        perp, btc_lock="0.1", eth_lock="23.9", at_64000=erin_long_in_paper
    )
    (erin,), (frank,) = erin, frank
    place(frank, "BUY", "1", "60800", mode="PAPER")
    assert alice.pk < erin.pk
    before = failures("INSURANCE_FUND_EXHAUSTED")

    done = liquidations_run()

    assert [liq.trader_id for liq in done] == [erin.pk]
    assert size(erin, mode="PAPER") == 0
    assert size(alice) == 1 and size(dave) == -1
    # Rolled back whole: Dave's BTC order is still there.
    assert Order.objects.get(pk=orders["BTC"]["id"]).status == "NEW"
    assert failures("INSURANCE_FUND_EXHAUSTED") == before + 1
    sweep = LiquidationSweep.objects.get()
    assert (sweep.liquidated, sweep.failed) == (1, 1)
    assert [row[:2] for row in sweep.left_below] == [[alice.pk, REAL]]
    assert D(sweep.left_below[0][2]) < 0
    solvent()
    # The checker reports what the sweep left: a loss open for others to carry.
    (problem,) = check_invariants()
    assert problem.startswith("accounts below zero equity that the last liquidation sweep")
    assert f"({alice.pk}, 'REAL'," in problem

    fund(system_account(INSURANCE_ACCOUNT), "1000", mode=REAL)
    (liq,) = liquidations_run()
    assert liq.trader_id == alice.pk and size(alice) == 0
    assert LiquidationSweep.objects.order_by("-pk").first().left_below == []
    solvent()
    assert check_invariants() == []


@requires_postgres
def test_a_long_option_left_to_auto_deleverage_goes_at_its_mark(perp):
    """Alice holds a call beside a bankrupt 20x long. Nobody bids for the call: it is
    deleveraged against Gina, who wrote it, at its mark, and the premium moves in cash
    (at 0, its price before, the account's asset went to whoever was short it)."""
    call = call_market("BTC-C64K")
    marks_refresh()
    premium = Book.objects.get(market=call, mode=REAL).mark_price.quantize(D("5"))
    alice, bob, gina, carol = (UserFactory() for _ in range(4))
    fund(alice, "3300", mode=REAL)
    fund(alice, str(premium * D("0.1") * D("1.0005")), mode=REAL)
    for u in (bob, gina, carol):
        fund(u, "100000", mode=REAL)
    place(gina, "SELL", "0.1", premium, market=call.symbol)
    place(alice, "BUY", "0.1", premium, market=call.symbol)
    leverage_set(trader=alice, market=perp, mode=REAL, leverage=D("20"))
    place(bob, "SELL", "1", "64000")
    place(alice, "BUY", "1", "64000")
    move("BTC", "60500")
    place(carol, "BUY", "1", "60800")
    mark = Book.objects.get(market=call, mode=REAL).mark_price
    assert mark > 0
    gina_cash = balance(gina, mode=REAL).total

    (liq,) = liquidations_run()

    assert size(alice, call.symbol) == 0 and size(gina, call.symbol) == 0
    assert size(alice) == 0 and size(carol) == 1
    (adl,) = Trade.objects.filter(market=call, taker_order__source="ADL")
    assert adl.price == (mark / 5).to_integral_value(ROUND_FLOOR) * 5 > 0
    assert balance(gina, mode=REAL).total == gina_cash - adl.price * D("0.1")
    assert liq.adl_qty == D("0.1")
    solvent()
    assert check_invariants() == []


@contextmanager
def held_elsewhere(rows) -> Iterator[None]:
    """`rows` locked by another connection's transaction until the block ends."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                list(rows.select_for_update())
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        yield
    finally:
        release.set()
        holder.join(10)


@contextmanager
def lock_timeout(ms: int) -> Iterator[None]:
    with connection.cursor() as c:
        c.execute(f"SET lock_timeout = '{ms}ms'")
    try:
        yield
    finally:
        with connection.cursor() as c:
            c.execute("RESET lock_timeout")


@requires_postgres
@pytest.mark.parametrize("inside_a_transaction", [False, True])
@pytest.mark.django_db(transaction=True)
def test_an_account_the_database_refuses_does_not_stop_the_sweep(inside_a_transaction):
    """(b) The database refuses the first account's liquidation: its balance row is held
    by another transaction past the lock timeout (55P03). The second is liquidated in
    the same sweep, and, when the sweep runs inside a caller's transaction, in the same
    transaction: only the failed account's savepoint rolled back. The next sweep, with
    the row free, liquidates the first."""
    perp = MarketFactory(max_leverage=D("20"))
    move("BTC", "64000")
    alice, erin, bob, carol = (UserFactory() for _ in range(4))
    for u, amount in ((alice, "3300"), (erin, "3300"), (bob, "100000"), (carol, "100000")):
        fund(u, amount)
    for u in (alice, erin):
        leverage_set(trader=u, market=perp, mode="PAPER", leverage=D("20"))
        place(bob, "SELL", "1", "64000", mode="PAPER")
        place(u, "BUY", "1", "64000", mode="PAPER")
    place(carol, "BUY", "2", "60900", mode="PAPER")
    move("BTC", "61000")  # both: 3268 - 3000 = 268 of equity < 305 of maintenance
    before = failures("OperationalError")

    with (
        held_elsewhere(Balance.objects.filter(trader=alice, mode="PAPER")),
        lock_timeout(200),
        transaction.atomic() if inside_a_transaction else nullcontext(),
    ):
        done = liquidations_run()

    assert [liq.trader_id for liq in done] == [erin.pk]
    assert size(erin, mode="PAPER") == 0 and size(alice, mode="PAPER") == 1
    assert failures("OperationalError") == before + 1
    sweep = LiquidationSweep.objects.get()
    assert (sweep.liquidated, sweep.failed) == (1, 1)
    assert sweep.left_below == [[alice.pk, "PAPER", "268", "305"]]

    (liq,) = liquidations_run()
    assert liq.trader_id == alice.pk and size(alice, mode="PAPER") == 0
    assert LiquidationSweep.objects.latest("pk").left_below == []
    solvent()
    assert check_invariants() == []


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_market_that_cannot_settle_does_not_hold_up_the_others_at_expiry():
    """The database refuses the first due market's settlement (its row held past the
    lock timeout): the second still settles; the first settles on the next run."""
    first, alice, _bob = future_held()
    second = MarketFactory(symbol="BTC-Y-FUTURE", kind="FUTURE", expiry_at=timezone.now())
    Market.objects.filter(pk=first.pk).update(expiry_at=timezone.now())
    index_history(["64000", "64100", "64200"])
    label = {"error": "OperationalError"}
    before = REGISTRY.get_sample_value("dex_expiry_failures_total", label) or 0.0

    with held_elsewhere(Market.objects.filter(pk=first.pk)), lock_timeout(200):
        done = settle_expired()

    assert [s.market_id for s in done] == [second.pk]
    assert REGISTRY.get_sample_value("dex_expiry_failures_total", label) == before + 1
    assert size(alice, first.symbol, "PAPER") == D("0.5")
    (settled,) = settle_expired()
    assert settled.market_id == first.pk and size(alice, first.symbol, "PAPER") == 0
    assert check_invariants() == []


def test_only_the_newest_sweeps_are_kept(perp, monkeypatch):
    monkeypatch.setattr(liquidation, "SWEEPS_KEPT", 3)
    for _ in range(5):
        liquidations_run()
    kept = list(LiquidationSweep.objects.order_by("pk").values_list("pk", flat=True))
    assert len(kept) == 3 and kept[-1] == LiquidationSweep.objects.latest("pk").pk


# -- events -----------------------------------------------------------------------------


@pytest.fixture
def heard():
    """The trader events sent while the test runs, as (event, trader pk or uuid,
    payload), each payload round-tripped through JSON."""
    events: list[tuple[str, str, dict]] = []

    def private(name):
        def receiver(sender, *, trader_id, **kw):
            payload = kw.get("fill") or kw.get("order") or kw.get("liquidation")
            events.append((name, str(trader_id), json.loads(json.dumps(payload))))

        return receiver

    def positions(sender, *, market, mode, position_ids, **kw):
        for trader_pk, _ in position_ids:
            events.append(("position", str(trader_pk), {"market": market, "mode": mode}))

    def balances(sender, *, balances, **kw):
        for b in balances:
            events.append(("balance", str(b.trader_id), json.loads(json.dumps(balance_dict(b)))))

    receivers = [
        (signals.fill_created, private("fill")),
        (signals.order_updated, private("order")),
        (signals.liquidated, private("liquidation")),
        (signals.position_updated, positions),
        (balances_changed, balances),
    ]
    for signal, fn in receivers:
        signal.connect(fn)
    yield events
    for signal, fn in receivers:
        signal.disconnect(fn)


def of(events, user) -> dict[str, list[dict]]:
    keys = {str(user.pk), str(user.trader_id)}
    out: dict[str, list[dict]] = {}
    for name, who, payload in events:
        if who in keys:
            out.setdefault(name, []).append(payload)
    return out


def test_the_adl_counterparty_hears_of_it_after_the_commit(
    perp, heard, django_capture_on_commit_callbacks
):
    """(c) Dave, deleveraged, gets his fill, his position and his balance (and the
    cancellation of his order) on his channel, once the liquidation commits, as a
    trader whose resting order filled would; Alice gets hers and `liquidation`."""
    alice, dave, _ = bankrupt_long_against_a_locked_short(perp, btc_lock="1.3")
    heard.clear()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        liquidations_run()
    assert heard == [] and callbacks

    def commit() -> None:
        for cb in callbacks:
            cb()

    # Through the realtime app to Dave's trader channel (Redis), too.
    wanted = {"fill", "positionUpdate", "balanceUpdate", "orderUpdate"}
    kinds = async_to_sync(kinds_heard_on)(names.trader_channel(dave.trader_id), commit, wanted)
    assert wanted <= kinds

    dave_heard = of(heard, dave)
    (fill,) = dave_heard["fill"]
    assert (fill["side"], fill["px"], fill["qty"], fill["liquidity"]) == (
        "BUY",
        "60762.5",
        "1",
        "MAKER",
    )
    assert {"market": "BTC-PERP", "mode": REAL} in dave_heard["position"]
    assert {(o["status"], o.get("cancelReason")) for o in dave_heard["order"]} >= {
        ("CANCELED", "ADL"),
        ("FILLED", None),
    }
    # The last balance he hears is the one the liquidation left him.
    assert dave_heard["balance"][-1]["total"] == "3225.5"
    assert dave_heard["balance"][-1]["locked"] == "0"
    alice_heard = of(heard, alice)
    assert alice_heard["fill"] and alice_heard["position"] and alice_heard["liquidation"]
    assert alice_heard["balance"][-1]["total"] == "0"


async def kinds_heard_on(group: str, commit: Callable[[], None], wanted: set[str]) -> set[str]:
    """The kinds of the messages `group` receives once `commit` has run (on the test's
    thread, with its database connection), until every kind `wanted` has come or no
    message has for two seconds."""
    layer = get_channel_layer()
    inbox = await layer.new_channel()
    await layer.group_add(group, inbox)
    kinds: set[str] = set()
    try:
        await sync_to_async(commit)()
        while not wanted <= kinds:
            try:
                message = await asyncio.wait_for(layer.receive(inbox), 2)
            except TimeoutError:
                break
            kinds.add(message["kind"])
    finally:
        await layer.flush()
    return kinds


@pytest.mark.django_db
def test_holders_at_expiry_hear_of_it_after_the_commit(heard, django_capture_on_commit_callbacks):
    """(d) Both sides of an expiring future get their position (now flat) and their
    balance as settled."""
    fut, alice, bob = future_held()
    Market.objects.filter(pk=fut.pk).update(expiry_at=timezone.now())
    index_history(["64000", "64100", "64200"])
    heard.clear()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        settle_expired()
    assert heard == []
    for cb in callbacks:
        cb()

    for user, pnl in ((alice, D("550")), (bob, D("-550"))):
        got = of(heard, user)
        assert {"market": fut.symbol, "mode": "PAPER"} in got["position"]
        assert D(got["balance"][-1]["total"]) == balance(user).total
        assert Position.objects.get(trader=user, market=fut).realized_pnl == pnl
    assert check_invariants() == []
