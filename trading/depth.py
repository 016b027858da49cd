"""Order book depth at a cost proportional to the levels asked, whatever the book holds.

Every read (REST `depth`, the trade page, a WebSocket snapshot) takes the book's `seq`
from its row, one short statement, then answers from the first of:

1. the snapshot of the book this process made last, when it is at that seq or later
   and deep enough: nothing more to do;
2. the matching engine's copy of the book (`trading/services/books.py`), when this
   process holds one at that seq or later: the best levels, read in memory;
3. the database: the best levels of each side and the seq they belong to, in one
   statement that stops after them (index `order_open_levels`).

A snapshot is kept per book, the latest made, and is served only to a read that saw its
seq or an earlier one: a change of the book moves its seq, so no read is answered with
levels older than the seq it saw. Only committed levels are kept: a read inside a
transaction (which may hold its own uncommitted orders) keeps nothing. Reads that miss
wait for one another (a lock per book): a crowd asking at the same seq costs one
computation, and a snapshot is made at least MIN_DEPTH deep, so that `levels=1` and
`levels=50` share it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection

from dexsite import sql
from dexsite.errors import ExchangeError
from trading.metrics import DEPTH_READS
from trading.presenters import dec
from trading.services.books import engine_depth

# The depths a snapshot is made at: a read of `levels` is served from the first that
# holds it (REST allows up to 1,000; a WebSocket snapshot is 500; the page shows 50).
DEPTHS = (50, 500, 1000)
MIN_DEPTH = DEPTHS[0]

Levels = list[list[str]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    depth: int  # price levels made a side
    bids: Levels  # best first; shared by every read that gets it: never changed
    asks: Levels

    def serves(self, seq: int, levels: int) -> bool:
        """Whether this snapshot answers a read that saw `seq` and wants `levels`."""
        if self.seq < seq:
            return False
        # A side shorter than the depth made is the whole side.
        whole = len(self.bids) < self.depth and len(self.asks) < self.depth
        return levels <= self.depth or whole


_snapshots: dict[int, Snapshot] = {}  # book pk -> the latest made
_book_locks: dict[int, threading.Lock] = {}
_guard = threading.Lock()


def snapshots_clear() -> None:
    with _guard:
        _snapshots.clear()


def _book_lock(pk: int) -> threading.Lock:
    with _guard:
        lock = _book_locks.get(pk)
        if lock is None:
            lock = _book_locks[pk] = threading.Lock()
        return lock


def depth_get(*, symbol: str, mode: str, levels: int = 50) -> dict[str, Any]:
    """`{"market","mode","seq","bids","asks"}`, at most `levels` a side, best first."""
    pk, market_id, seq, tick, lot = _head(symbol, mode)
    snap = _snapshots.get(pk)
    if snap is not None and snap.serves(seq, levels):
        DEPTH_READS.labels(source="snapshot").inc()
    else:
        with _book_lock(pk):
            # Another read may have made it while this one waited.
            snap = _snapshots.get(pk)
            if snap is not None and snap.serves(seq, levels):
                DEPTH_READS.labels(source="snapshot").inc()
            else:
                depth = next((d for d in DEPTHS if d >= levels), levels)
                snap = _from_engine(pk, seq, depth, tick, lot)
                if snap is not None:
                    DEPTH_READS.labels(source="engine").inc()
                else:
                    snap = _from_database(pk, market_id, mode, depth)
                    DEPTH_READS.labels(source="database").inc()
                # Inside a transaction the levels may be the transaction's own, not yet
                # committed (or about to be rolled back): good for this read only.
                if not connection.in_atomic_block:
                    _keep(pk, snap)
    return {
        "market": symbol,
        "mode": mode,
        "seq": snap.seq,
        "bids": snap.bids[:levels],
        "asks": snap.asks[:levels],
    }


def _keep(pk: int, snap: Snapshot) -> None:
    with _guard:
        kept = _snapshots.get(pk)
        if kept is None or (kept.seq, kept.depth) < (snap.seq, snap.depth):
            _snapshots[pk] = snap


_HEAD_SQL = """
    SELECT b.id, b.market_id, b.seq, m.tick_size, m.lot_size
    FROM trading_book b JOIN trading_market m ON m.id = b.market_id
    WHERE m.symbol = %s AND b.mode = %s
"""


def _head(symbol: str, mode: str) -> tuple[int, int, int, Decimal, Decimal]:
    """The book's pk, its market's, its seq, and the market's tick and lot."""
    rows = sql.fetch(_HEAD_SQL, [symbol, mode])
    if not rows:
        raise ExchangeError("UNKNOWN_MARKET", f"no market {symbol}", status_code=404)
    pk, market_id, seq, tick, lot = rows[0]
    return pk, market_id, seq, _exact(tick), _exact(lot)


def _from_engine(pk: int, seq: int, depth: int, tick: Decimal, lot: Decimal) -> Snapshot | None:
    found = engine_depth(pk, seq, depth)
    if found is None:
        return None
    at, bids, asks = found
    return Snapshot(
        at,
        depth,
        [[dec(p * tick), dec(q * lot)] for p, q in bids],
        [[dec(p * tick), dec(q * lot)] for p, q in asks],
    )


# The best `depth` levels of each side and the seq they belong to, in one statement (so
# one snapshot of the database, even while orders flow). On PostgreSQL each side walks
# the index `order_open_levels` from its best price and stops after `depth` levels.
_LEVELS_SQL = """
    SELECT b.seq, s.side, s.price, s.qty, NULL
    FROM trading_book b
    LEFT JOIN LATERAL (
        (SELECT 'BUY' AS side, o.price, SUM(o.qty - o.filled_qty) AS qty
         FROM trading_order o
         WHERE o.market_id = b.market_id AND o.mode = b.mode AND o.side = 'BUY'
           AND o.status IN ('NEW', 'PARTIALLY_FILLED')
         GROUP BY o.price ORDER BY o.price DESC LIMIT %s)
        UNION ALL
        (SELECT 'SELL' AS side, o.price, SUM(o.qty - o.filled_qty) AS qty
         FROM trading_order o
         WHERE o.market_id = b.market_id AND o.mode = b.mode AND o.side = 'SELL'
           AND o.status IN ('NEW', 'PARTIALLY_FILLED')
         GROUP BY o.price ORDER BY o.price LIMIT %s)
    ) s ON TRUE
    WHERE b.id = %s
"""

# SQLite (the embedded run) has no LATERAL, and would sum in floating point: the orders
# of each side's best `depth` prices, added up in Decimal here.
_LEVELS_SQLITE = """
    SELECT b.seq, o.side, o.price, o.qty, o.filled_qty
    FROM trading_book b
    LEFT JOIN trading_order o
      ON o.market_id = b.market_id AND o.mode = b.mode
     AND o.status IN ('NEW', 'PARTIALLY_FILLED')
     AND ((o.side = 'BUY' AND o.price >= (
              SELECT MIN(price) FROM (
                  SELECT DISTINCT price FROM trading_order
                  WHERE market_id = %s AND mode = %s AND side = 'BUY'
                    AND status IN ('NEW', 'PARTIALLY_FILLED')
                  ORDER BY price DESC LIMIT %s)))
       OR (o.side = 'SELL' AND o.price <= (
              SELECT MAX(price) FROM (
                  SELECT DISTINCT price FROM trading_order
                  WHERE market_id = %s AND mode = %s AND side = 'SELL'
                    AND status IN ('NEW', 'PARTIALLY_FILLED')
                  ORDER BY price LIMIT %s))))
    WHERE b.id = %s
"""


def _from_database(pk: int, market_id: int, mode: str, depth: int) -> Snapshot:
    if connection.vendor == "postgresql":
        rows = sql.fetch(_LEVELS_SQL, [depth, depth, pk])
    else:
        params = [market_id, mode, depth]
        rows = sql.fetch(_LEVELS_SQLITE, [*params, *params, pk])
    seq = rows[0][0]
    sides: dict[str, dict[Decimal, Decimal]] = {"BUY": {}, "SELL": {}}
    for _, side, price, qty, filled in rows:
        if side is None:
            continue
        px = _exact(price)
        remaining = _exact(qty) if filled is None else _exact(qty) - _exact(filled)
        sides[side][px] = sides[side].get(px, Decimal(0)) + remaining
    bids = sorted(sides["BUY"].items(), reverse=True)
    asks = sorted(sides["SELL"].items())
    return Snapshot(
        seq,
        depth,
        [[dec(p), dec(q)] for p, q in bids],
        [[dec(p), dec(q)] for p, q in asks],
    )


def _exact(value) -> Decimal:
    # SQLite keeps decimals as floats with up to 15 significant digits; their shortest
    # repr is the decimal that was stored. PostgreSQL returns Decimal already.
    return value if isinstance(value, Decimal) else Decimal(str(value))
