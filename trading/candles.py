"""Candles: the trades of each book summed up per minute, hour and day (UTC).

`candles_record` folds the trades a transaction records into their `Candle` rows, in
the same transaction: one statement that adds to the rows already there. `fold` is the
summing itself, also used to check the rows against the trades (`check_invariants`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any, Protocol

from dexsite import sql

# Seconds per stored period. A chart's interval is built from the largest that divides
# it (`resolution_for`).
RESOLUTIONS = (60, 3600, 86400)


@dataclass(slots=True)
class Period:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    first_trade_id: int
    last_trade_id: int

    def add(self, other: Period) -> None:
        """Merge another part of the same period (from trades before or after these)."""
        if other.first_trade_id < self.first_trade_id:
            self.open, self.first_trade_id = other.open, other.first_trade_id
        if other.last_trade_id > self.last_trade_id:
            self.close, self.last_trade_id = other.close, other.last_trade_id
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        self.volume += other.volume
        self.trades += other.trades


# The columns of a stored `Candle` that a `Period` holds, in its order.
PERIOD_FIELDS = tuple(f.name for f in fields(Period))
_COLUMNS = ("market_id", "mode", "resolution", "start", *PERIOD_FIELDS)

Key = tuple[int, str, int, datetime]  # market id, mode, resolution, start


def period_of(candle: Any) -> Period:
    """The period a stored `Candle` holds."""
    return Period(*(getattr(candle, f) for f in PERIOD_FIELDS))


def period_start(at: datetime, resolution: int) -> datetime:
    """The start of the period of `resolution` seconds that `at` falls in."""
    seconds = int(at.timestamp())
    return datetime.fromtimestamp(seconds - seconds % resolution, tz=UTC)


def resolution_for(interval_seconds: int) -> int:
    """The largest stored resolution that divides a chart interval."""
    return max(r for r in RESOLUTIONS if interval_seconds % r == 0)


def fold(
    trades: Iterable[tuple[int, str, datetime, Decimal, Decimal, int]],
    resolutions: Sequence[int] = RESOLUTIONS,
) -> dict[Key, Period]:
    """The periods of `trades`, given as (market id, mode, time, price, qty, trade id)
    in any order."""
    out: dict[Key, Period] = {}
    for market_id, mode, at, price, qty, trade_id in trades:
        for resolution in resolutions:
            key = (market_id, mode, resolution, period_start(at, resolution))
            one = Period(price, price, price, price, qty, 1, trade_id, trade_id)
            found = out.get(key)
            if found is None:
                out[key] = one
            else:
                found.add(one)
    return out


class TradeRow(Protocol):
    """What `candles_record` reads of a recorded trade."""

    pk: int
    market_id: int
    mode: str
    created_at: datetime
    price: Decimal
    qty: Decimal


def candles_record(trades: Sequence[TradeRow]) -> None:
    """Add recorded trades (with their keys) to their candles."""
    periods_add(fold((t.market_id, t.mode, t.created_at, t.price, t.qty, t.pk) for t in trades))


def periods_add(periods: dict[Key, Period]) -> None:
    """Add periods to the stored candles: one statement per batch of rows, each row
    merged into the one stored for its period, if any."""
    if not periods:
        return
    db = sql.default_db()
    columns, head, row, merge = _upsert(db.vendor)
    items = sorted(periods.items())
    # PostgreSQL takes at most 65,535 parameters a statement; SQLite's reads below build
    # one condition per period.
    size = 2000 if db.vendor == "postgresql" else 200
    for at in range(0, len(items), size):
        part = dict(items[at : at + size])
        if db.vendor != "postgresql":
            # SQLite would add the volumes up in floating point: merge here, in Decimal,
            # the rows as they are (the caller holds the book, so nobody else changes
            # them); the statement then writes the merged rows as they are.
            _merge_read(part)
        params: list = []
        for key, p in part.items():
            values = (*key, p.open, p.high, p.low, p.close, p.volume, p.trades)
            values += (p.first_trade_id, p.last_trade_id)
            params += sql.prepared(columns, values, db)
        sql.execute(head + ", ".join([row] * len(part)) + merge, params)


@cache
def _upsert(vendor: str) -> tuple[tuple, str, str, str]:
    """(fields, head, one row of VALUES, conflict clause) of `periods_add`'s statement."""
    from trading.models import Candle

    table = sql.qn(Candle._meta.db_table)
    columns = tuple(Candle._meta.get_field(c) for c in _COLUMNS)
    head = f"INSERT INTO {table} ({', '.join(sql.qn(c) for c in _COLUMNS)}) VALUES "  # noqa: S608
    row = f"({sql.placeholders(len(_COLUMNS))})"
    if vendor == "postgresql":
        sets = [
            f'"open" = CASE WHEN EXCLUDED."first_trade_id" < {table}."first_trade_id"'
            f' THEN EXCLUDED."open" ELSE {table}."open" END',
            f'"close" = CASE WHEN EXCLUDED."last_trade_id" > {table}."last_trade_id"'
            f' THEN EXCLUDED."close" ELSE {table}."close" END',
            f'"high" = GREATEST({table}."high", EXCLUDED."high")',
            f'"low" = LEAST({table}."low", EXCLUDED."low")',
            f'"volume" = {table}."volume" + EXCLUDED."volume"',
            f'"trades" = {table}."trades" + EXCLUDED."trades"',
            f'"first_trade_id" = LEAST({table}."first_trade_id", EXCLUDED."first_trade_id")',
            f'"last_trade_id" = GREATEST({table}."last_trade_id", EXCLUDED."last_trade_id")',
        ]
    else:
        sets = [f"{sql.qn(c)} = EXCLUDED.{sql.qn(c)}" for c in PERIOD_FIELDS]
    merge = ' ON CONFLICT ("market_id", "mode", "resolution", "start") DO UPDATE SET '
    return columns, head, row, merge + ", ".join(sets)


def candles_rebuild(chunk: int = 10_000) -> int:
    """Every candle again from the trades, read `chunk` at a time in id order (memory
    stays bounded however long the history): for a database whose candles are missing
    or wrong. Trades recorded meanwhile would be counted twice or not at all, so run it
    while nothing trades (the migration that added candles does). Returns the trades
    read."""
    from trading.models import Candle, Trade

    Candle.objects.all().delete()
    last, read = 0, 0
    columns = ("market_id", "mode", "created_at", "price", "qty", "id")
    while True:
        rows = list(Trade.objects.filter(id__gt=last).order_by("id").values_list(*columns)[:chunk])
        if not rows:
            return read
        periods_add(fold(rows))
        last, read = rows[-1][5], read + len(rows)


def _merge_read(periods: dict[Key, Period]) -> None:
    """Fold the stored rows of `periods` into them (they then hold the whole period)."""
    from django.db.models import Q

    from trading.models import Candle

    where = Q()
    for market_id, mode, resolution, start in periods:
        where |= Q(market_id=market_id, mode=mode, resolution=resolution, start=start)
    for c in Candle.objects.filter(where):
        stored = period_of(c)
        stored.add(periods[(c.market_id, c.mode, c.resolution, c.start)])
        periods[(c.market_id, c.mode, c.resolution, c.start)] = stored
