"""Candles are kept as trades are recorded: each stored period is exactly what its
trades add up to, whatever order the writes come in; charts and the 24-hour figures
are built from them."""

from __future__ import annotations

import importlib
import io
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.utils import timezone
from rest_framework.test import APIClient

from trading import candles
from trading.invariants import check_invariants
from trading.models import Candle, Trade
from trading.selectors import _stats_24h, candles_get
from trading.tests.conftest import order

D = Decimal
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _trade(market_id: int, i: int, at: datetime, price: str, qty: str) -> SimpleNamespace:
    return SimpleNamespace(
        pk=i, market_id=market_id, mode="PAPER", created_at=at, price=D(price), qty=D(qty)
    )


def _scan(trades: list[SimpleNamespace], step_s: int) -> list[dict]:
    """The chart the naive way: every trade, by time, into buckets of `step_s`."""
    out: dict[int, dict] = {}
    for t in sorted(trades, key=lambda t: t.pk):
        ts = int(t.created_at.timestamp() * 1000)
        bucket = ts - ts % (step_s * 1000)
        c = out.setdefault(
            bucket,
            {"ts": bucket, "open": t.price, "high": t.price, "low": t.price, "volume": D(0)},
        )
        c["high"], c["low"] = max(c["high"], t.price), min(c["low"], t.price)
        c["close"] = t.price
        c["volume"] += t.qty
    return [
        {k: (str(v.normalize()) if isinstance(v, Decimal) else v) for k, v in c.items()}
        for _, c in sorted(out.items())
    ]


def _shown(chart: list[dict]) -> list[dict]:
    return [{k: (str(D(v).normalize()) if k != "ts" else v) for k, v in c.items()} for c in chart]


def test_fold_takes_open_and_close_by_trade_id_in_any_order():
    # Ids give the order the book matched in; the clock of two processes may disagree
    # by a little (trade 1 stamped after trade 2).
    trades = [
        (1, "REAL", T0 + timedelta(seconds=s), D(p), D("1"), i)
        for i, (s, p) in enumerate([(25, "10"), (20, "12"), (40, "9"), (59, "11")], start=1)
    ]
    for order_ in (trades, trades[::-1], trades[1:3] + trades[:1] + trades[3:]):
        (p,) = candles.fold(order_, resolutions=[60]).values()
        assert (p.open, p.high, p.low, p.close, p.volume, p.trades) == (
            D(10),
            D(12),
            D(9),
            D(11),
            D(4),
            4,
        )


@pytest.mark.django_db
def test_writes_in_any_order_end_as_the_trades_add_up(perp):
    """Trades recorded out of order (two processes' transactions) end in the same rows:
    open and close follow the trade ids, not the order of the writes."""
    rng = random.Random(5)
    trades = [
        _trade(
            perp.pk,
            i,
            T0 + timedelta(seconds=rng.randint(0, 3 * 3600)),
            str(64000 + rng.randint(-50, 50)),
            f"0.{rng.randint(1, 999):03d}",
        )
        for i in range(1, 301)
    ]
    trades.sort(key=lambda t: (t.created_at, t.pk))
    for t, i in zip(trades, range(1, 301), strict=True):
        t.pk = i  # ids in time order, as the matching transactions give them
    chunks = [trades[i : i + 7] for i in range(0, len(trades), 7)]
    rng.shuffle(chunks)
    for chunk in chunks:
        candles.candles_record(chunk)
    for interval, step in (("1m", 60), ("5m", 300), ("1h", 3600), ("4h", 14400)):
        got = candles_get(
            symbol=perp.symbol,
            mode="PAPER",
            interval=interval,
            start_ms=int(T0.timestamp() * 1000),
            end_ms=int((T0 + timedelta(hours=4)).timestamp() * 1000),
        )
        assert _shown(got) == _scan(trades, step), interval
        # `to` inside an interval: that interval still comes whole, and none after it.
        to = T0 + timedelta(hours=1, minutes=30, seconds=30)
        got = candles_get(
            symbol=perp.symbol,
            mode="PAPER",
            interval=interval,
            start_ms=int(T0.timestamp() * 1000),
            end_ms=int(to.timestamp() * 1000),
        )
        last = candles.period_start(to, step)
        upto = [t for t in trades if candles.period_start(t.created_at, step) <= last]
        assert _shown(got) == _scan(upto, step), f"{interval} to mid-interval"


@pytest.mark.django_db
def test_the_24_hour_figures_come_from_the_minutes_of_the_last_day(perp, monkeypatch):
    now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: now)  # no minute passes meanwhile
    edge = candles.period_start(now - timedelta(hours=24), 60)
    old = _trade(perp.pk, 1, now - timedelta(hours=25), "60000", "5")
    before = _trade(perp.pk, 2, edge - timedelta(seconds=1), "61000", "3")
    first = _trade(perp.pk, 3, edge, "63000", "0.5")
    last = _trade(perp.pk, 4, now - timedelta(minutes=1), "64000", "0.25")
    candles.candles_record([old, before, first, last])
    stats = _stats_24h("PAPER", None)[perp.pk]
    # From the start of the minute 24 hours ago: `first` in, `before` out.
    assert (stats["volume"], stats["open"]) == (D("0.75"), D("63000"))


@pytest.mark.django_db
def test_orders_keep_the_candles_and_the_backfill_rebuilds_them(perp, api_alice, api_bob):
    for qty in ("0.04", "0.06"):
        api_alice.post("/api/v1/trade", order(side="SELL", price="64000", qty=qty), format="json")
        api_bob.post("/api/v1/trade", order(price="64000", qty=qty), format="json")
    assert Trade.objects.count() == 2
    # (Two candles of a resolution when the trades straddle its period.)
    stored = {r: D(0) for r in candles.RESOLUTIONS}
    for resolution, volume in Candle.objects.values_list("resolution", "volume"):
        stored[resolution] += volume
    assert stored == {60: D("0.1"), 3600: D("0.1"), 86400: D("0.1")}
    assert check_invariants() == []
    chart = APIClient().get("/api/v1/metrics?market=BTC-PERP&mode=PAPER&interval=1d").json()
    assert sum(D(c["volume"]) for c in chart) == D("0.1") and chart[-1]["close"] == "64000"

    # A database from before candles were kept: the migration sums up its trades.
    kept = sorted(Candle.objects.values_list("resolution", "start", "volume", "trades"))
    Candle.objects.all().delete()
    assert any("no candle" in p for p in check_invariants())
    migration = importlib.import_module("trading.migrations.0005_candles")
    migration.backfill(apps, None)
    assert sorted(Candle.objects.values_list("resolution", "start", "volume", "trades")) == kept
    assert check_invariants() == []


@pytest.mark.django_db
def test_a_rebuild_in_chunks_ends_as_one_fold_of_every_trade(perp):
    """`rebuild_candles` reads the trades a chunk at a time, each chunk merged into what
    the chunks before it stored; the result is the fold of them all, also past one
    statement's worth of rows."""
    from django.core.management import call_command

    rng = random.Random(9)
    trades = [
        Trade(
            id=i,
            market=perp,
            mode="PAPER",
            price=D(64000 + rng.randint(-40, 40)),
            qty=D(rng.randint(1, 500)) / 1000,
            taker_side="BUY",
            taker_order_id=1,
            maker_order_id=2,
            created_at=T0 + timedelta(minutes=i // 2, seconds=rng.randint(0, 59)),
        )
        for i in range(1, 6001)
    ]
    Trade.objects.bulk_create(trades, batch_size=2000)
    rows = [(t.market_id, t.mode, t.created_at, t.price, t.qty, t.pk) for t in trades]
    expected = candles.fold(rows)
    assert len(expected) > 3000
    # 1,000 trades a chunk: periods split between chunks; all at once: more rows than
    # one statement carries.
    for chunk in (1000, 6000):
        call_command("rebuild_candles", chunk=chunk, stdout=io.StringIO())
        stored = {
            (c.market_id, c.mode, c.resolution, c.start): candles.period_of(c)
            for c in Candle.objects.all()
        }
        assert stored == expected, chunk
    # (The trades' orders are made up: only the candles are checked here.)
    assert [p for p in check_invariants() if "candle" in p] == []
