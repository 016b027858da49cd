"""The invariant checker finds what it is meant to find: after a random flow the
exchange is healthy, and each kind of damage done to it by hand is reported. Also the
`check_invariants` management command: silent success, or the violations and exit 1."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from accounts.models import Transfer, TransferStatus
from ledger.models import Balance, LedgerEntry
from trading.invariants import check_invariants
from trading.models import OPEN_STATUSES, Book, Candle, Fill, Order, Position, Trade
from trading.services import books
from trust.flows import PERP, Flow, isolated

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture(autouse=True)
def _local_channel_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def flow():
    with isolated():
        f = Flow(7)
        f.run(80)
        # Leave a queue on a book that the cache holds, an approved withdrawal and
        # trades with fees, so that every kind of damage below has a target.
        f.place(3, PERP, "REAL", "SELL", "LIMIT", "GTC", 20, 1)
        for trader in range(len(f.traders)):
            f.place(trader, PERP, "REAL", "BUY", "LIMIT", "GTC", -20, 1)
        f.withdraw(2, "USDC", 10)
        f.decide_withdrawal(0, approve=True)
        assert f.check() == []
        yield f


def _resting() -> Order:
    return Order.objects.filter(
        status__in=OPEN_STATUSES, market__kind="PERP", mode="REAL", qty=D("0.001")
    ).latest("id")


def _balance() -> Balance:
    return Balance.objects.filter(trader__is_system=False, asset="USDC").first()


def _bump_total() -> None:
    b = _balance()
    Balance.objects.filter(pk=b.pk).update(total=b.total + 1)


def _unbooked_credit() -> None:
    b = _balance()
    LedgerEntry.objects.create(trader_id=b.trader_id, asset=b.asset, mode=b.mode, amount=5)
    Balance.objects.filter(pk=b.pk).update(total=b.total + 5)


def _bump_locked() -> None:
    b = Balance.objects.filter(trader__is_system=False, total__gt=10).first()
    Balance.objects.filter(pk=b.pk).update(locked=b.locked + 1)


def _fill_short() -> None:
    f = Fill.objects.latest("id")
    Fill.objects.filter(pk=f.pk).update(qty=f.qty / 2)


def _filled_status() -> None:
    Order.objects.filter(pk=_resting().pk).update(status="FILLED")


def _position_size() -> None:
    p = Position.objects.exclude(size=0).first()
    Position.objects.filter(pk=p.pk).update(size=p.size * 2)


def _crossed() -> None:
    o = _resting()
    Order.objects.filter(pk=o.pk).update(price=o.price * 2)


def _off_grid() -> None:
    o = _resting()
    Order.objects.filter(pk=o.pk).update(price=o.price + o.market.tick_size / 2)


def _cached_engine_of(order: Order):
    _, engine = books._cache[order.market.books.get(mode=order.mode).pk]
    return engine


def _cache_diverged() -> None:
    assert _cached_engine_of(_resting()).cancel(_resting().pk) is not None


def _cache_queue_order() -> None:
    o = _resting()
    resting = _cached_engine_of(o).orders[o.pk]
    level = _cached_engine_of(o).bids[-resting.price]
    assert len(level.orders) > 1
    level.orders.move_to_end(next(iter(level.orders)))


def _fill_of_a_missing_order() -> None:
    f = Fill.objects.latest("id")
    Fill.objects.filter(pk=f.pk).update(order_id=Order.objects.latest("id").pk + 1000)


def _trade_of_a_missing_order() -> None:
    t = Trade.objects.latest("id")
    Trade.objects.filter(pk=t.pk).update(maker_order_id=Order.objects.latest("id").pk + 1000)


def _fill_of_a_missing_trade() -> None:
    f = Fill.objects.latest("id")
    Fill.objects.filter(pk=f.pk).update(trade_id=Trade.objects.latest("id").pk + 1000)


def _candle_volume() -> None:
    c = Candle.objects.filter(resolution=3600).latest("id")
    Candle.objects.filter(pk=c.pk).update(volume=c.volume + D("0.001"))


def _candle_close() -> None:
    c = Candle.objects.filter(resolution=60).latest("id")
    Candle.objects.filter(pk=c.pk).update(close=c.close + 1)


def _candle_missing() -> None:
    Candle.objects.filter(resolution=86400).delete()


def _withdrawal_reopened() -> None:
    w = Transfer.objects.filter(kind="WITHDRAWAL", status=TransferStatus.APPROVED).first()
    Transfer.objects.filter(pk=w.pk).update(status=TransferStatus.PENDING, tx_hash=None)


def _fee_changed() -> None:
    f = Fill.objects.filter(fee__gt=0).latest("id")
    Fill.objects.filter(pk=f.pk).update(fee=f.fee + D("0.01"))


DAMAGE: dict[str, tuple[Callable[[], None], str]] = {
    "balance off its ledger": (_bump_total, "!= ledger sum"),
    "money from nowhere": (_unbooked_credit, "internal movements sum to"),
    "lock without a reservation": (_bump_locked, "locked"),
    "fills short of filledQty": (_fill_short, "fills do not add up"),
    "FILLED but not filled": (_filled_status, "FILLED orders not filled in full"),
    "open interest unbalanced": (_position_size, "long - short"),
    "crossed book": (_crossed, "crossed"),
    "price off the tick grid": (_off_grid, "off the tick grid"),
    "cached book lost an order": (_cache_diverged, "differs from its open orders"),
    "cached book out of queue order": (_cache_queue_order, "differs from its open orders"),
    "fill of a missing order": (_fill_of_a_missing_order, "fills whose trade or order is missing"),
    "fill of a missing trade": (_fill_of_a_missing_trade, "fills whose trade or order is missing"),
    "trade of a missing order": (_trade_of_a_missing_order, "taker or maker order is missing"),
    "candle volume off": (_candle_volume, "candles that differ from their trades"),
    "candle close off": (_candle_close, "candles that differ from their trades"),
    "candle missing": (_candle_missing, "periods with trades but no candle"),
    "withdrawal booked but pending": (_withdrawal_reopened, "booked as"),
    "fee charged but not collected": (_fee_changed, "fees"),
}


def test_checker_reports_each_kind_of_damage(flow: Flow) -> None:
    seqs = dict(Book.objects.values_list("pk", "seq"))
    # The flow ran the services' commit callbacks: the cache holds current books, so
    # comparing it with the open orders is not vacuous.
    assert any(seqs.get(pk) == seq for pk, (seq, _) in books._cache.items())
    missed = []
    for damage, (do, expected) in DAMAGE.items():
        cache = copy.deepcopy(books._cache)
        with transaction.atomic():
            do()
            problems = check_invariants()
            transaction.set_rollback(True)
        books._cache.clear()
        books._cache.update(cache)
        if not any(expected in p for p in problems):
            missed.append((damage, problems))
        assert check_invariants() == [], damage
    assert missed == []

    ghost = Order.objects.latest("id").pk + 1000
    assert check_invariants(acknowledged=flow.acknowledged) == []
    problems = check_invariants(acknowledged=[*flow.acknowledged, ghost])
    assert problems == [f"acknowledged orders missing: [{ghost}] (1 in all)"]


def test_command_passes_and_fails(flow: Flow, tmp_path, capsys) -> None:
    ids = tmp_path / "acked.txt"
    ids.write_text("\n".join(str(i) for i in flow.acknowledged))
    call_command("check_invariants", acknowledged=str(ids))
    out = capsys.readouterr().out
    assert out.strip() == f"0 violations, {len(flow.acknowledged)} acknowledged order(s) found"
    _bump_total()
    with pytest.raises(CommandError, match=r"1 invariant violation\(s\)"):
        call_command("check_invariants")
    assert "!= ledger sum" in capsys.readouterr().out
