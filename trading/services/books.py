"""In-process cache of matching-engine books, and the conversions at the engine's edge.

The database is the source of truth. A cached engine book is valid only while its
`seq` equals the locked book row's `seq`. A transaction takes the book out of the cache
before it mutates it and puts it back only from `on_commit`, so a rolled-back
transaction simply never returns its (now wrong) copy: the next order rebuilds the book
from open orders.
"""

from __future__ import annotations

import threading
from decimal import Decimal

from django.db import transaction
from django.db.models import BigIntegerField, F, Value
from django.db.models.functions import Cast, Round

from dexsite import sql
from trading.engine import OrderBook
from trading.models import OPEN_STATUSES, Book, Market, Order

_cache: dict[int, tuple[int, OrderBook]] = {}
_cache_lock = threading.Lock()


def to_ticks(price: Decimal, market: Market) -> int | None:
    """Price in ticks, or None when it is not on the tick grid."""
    ticks, rest = divmod(price, market.tick_size)
    return int(ticks) if rest == 0 else None


def to_lots(qty: Decimal, market: Market) -> int | None:
    lots, rest = divmod(qty, market.lot_size)
    return int(lots) if rest == 0 else None


def engine_book_take(book: Book) -> OrderBook:
    """The engine book for a locked `book` row: the cached copy if current, else one
    rebuilt from the open orders. The caller must hold the row lock."""
    with _cache_lock:
        cached = _cache.pop(book.pk, None)
    if cached is not None and cached[0] == book.seq:
        return cached[1]
    return engine_book_build(book)


def engine_book_build(book: Book) -> OrderBook:
    market = book.market
    engine = OrderBook()
    tick, lot = market.tick_size, market.lot_size
    # Ticks and lots worked out by the database: prices and sizes lie on the grid, so
    # the rounded quotient is exact. Dividing Decimals here cost 12-15 µs an order (a
    # matcher's restart with 100,000 resting orders spent 1.2-1.5 s on it).
    ticks = Cast(Round(F("price") / Value(tick)), BigIntegerField())
    lots = Cast(Round((F("qty") - F("filled_qty")) / Value(lot)), BigIntegerField())
    rows = (
        Order.objects.filter(market_id=book.market_id, mode=book.mode, status__in=OPEN_STATUSES)
        .order_by("id")
        .values_list("id", "trader_id", "side", ticks, lots, "reduce_only", "covered")
    )
    add = engine.add_resting
    for oid, trader_id, side, price_ticks, size_lots, reduce_only, covered in rows:
        add(oid, trader_id, side, price_ticks, size_lots, reduce_only or covered)
    return engine


def engine_book_return(book: Book, engine: OrderBook, seq: int) -> None:
    """Put an engine book that matches the database at `seq` (committed, or never
    changed by the caller's transaction) back in the cache."""
    with _cache_lock:
        current = _cache.get(book.pk)
        # A later transaction may already have stored a newer copy.
        if current is None or current[0] < seq:
            _cache[book.pk] = (seq, engine)


def engine_book_return_on_commit(book: Book, engine: OrderBook, seq: int) -> None:
    """Give the mutated engine book back to the cache once the transaction commits."""
    transaction.on_commit(lambda: engine_book_return(book, engine, seq))


def engine_depth(
    book_pk: int, seq: int, levels: int
) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]] | None:
    """(its seq, bids, asks) in ticks and lots, at most `levels` a side, from the
    cached engine book when it is at `seq` or later; else None. A cached copy is
    committed state (it comes back only from `on_commit`, or unchanged), and one that
    an order is changing is out of the cache: the levels are read under the cache's
    lock, so no writer can take the copy while they are."""
    with _cache_lock:
        cached = _cache.get(book_pk)
        if cached is None or cached[0] < seq:
            return None
        bids, asks = cached[1].depth(levels)
        return cached[0], bids, asks


def engine_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


_BOOK = sql.Columns(Book)
_MARKET = sql.Columns(Market)


def book_lock(
    *,
    market_id: int | None = None,
    symbol: str | None = None,
    mode: str | None = None,
    pk: int | None = None,
) -> Book:
    """Lock one book row (and read its market, fresh) for the rest of the transaction.
    Every write to a book's orders happens under this lock, so one order per book is
    matched at a time across all processes."""
    return book_locked(
        sql.run_all(book_lock_queries(market_id=market_id, symbol=symbol, mode=mode, pk=pk))
    )


def book_lock_queries(
    *,
    market_id: int | None = None,
    symbol: str | None = None,
    mode: str | None = None,
    pk: int | None = None,
) -> list[sql.Query]:
    """The two statements of `book_lock` (sent together; `book_locked` reads their
    answers): the book row, locked, then its market. The market is read by a statement
    of its own, after the lock is granted: a statement that waited for the lock sees
    the rows it joined as they were when it started waiting, so a delisting or expiry
    that held the lock would go unseen."""
    market_table = sql.qn(Market._meta.db_table)
    book_table = sql.qn(Book._meta.db_table)
    if pk is not None:
        where, params = '"id" = %s', [pk]
        market_where = f'"id" = (SELECT "market_id" FROM {book_table} WHERE "id" = %s)'  # noqa: S608
        market_params = [pk]
    elif market_id is not None:
        where, params = '"market_id" = %s AND "mode" = %s', [market_id, mode]
        market_where, market_params = '"id" = %s', [market_id]
    else:
        where = (
            f'"market_id" = (SELECT "id" FROM {market_table} WHERE "symbol" = %s)'  # noqa: S608
            ' AND "mode" = %s'
        )
        params = [symbol, mode]
        market_where, market_params = '"symbol" = %s', [symbol]
    return [
        sql.select_query(_BOOK, where, params, lock=True),
        sql.select_query(_MARKET, market_where, market_params),
    ]


def book_locked(answers: list) -> Book:
    """The book of `book_lock_queries`' answers, with its market."""
    books, markets = answers
    if not books:
        raise Book.DoesNotExist("no such book")
    book = books[0]
    (book.market,) = markets
    return book


# -- quiet books ----------------------------------------------------------------------

# (book pk) -> (seq at the last look, announced?): the clock's memory between looks.
_last_seen: dict[int, tuple[int, bool]] = {}


def books_gone_quiet() -> list[tuple[str, str, int]]:
    """(symbol, mode, seq) of each book that moved before the previous look and not
    since: its last delta is now final. A subscriber that has not seen it (its web
    process died between commit and publish) learns so from this and resyncs; a busy
    book needs no such notice, its next delta shows the gap. Each change is announced
    once."""
    quiet = []
    for pk, symbol, mode, seq in Book.objects.values_list("pk", "market__symbol", "mode", "seq"):
        before = _last_seen.get(pk)
        if before is None:
            _last_seen[pk] = (seq, True)
        elif before[0] != seq:
            _last_seen[pk] = (seq, False)
        elif not before[1]:
            _last_seen[pk] = (seq, True)
            quiet.append((symbol, mode, seq))
    return quiet


def books_quiet_announce() -> int:
    """Send `book_quiet` for each book gone quiet (the clock runs this every 2 s);
    returns how many."""
    from trading import signals

    quiet = books_gone_quiet()
    for symbol, mode, seq in quiet:
        signals.book_quiet.send(sender=Book, market=symbol, mode=mode, seq=seq)
    return len(quiet)
