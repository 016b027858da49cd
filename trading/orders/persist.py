"""The persist stage: every read and write of the order path's transaction, in as few
round trips as it can (`dexsite.sql`: hand-written statements, pipelined on
PostgreSQL). The book's lock and the balance rows' locks are taken here, in the order
`trading.locks` documents (the book, then balance rows in primary-key order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from dexsite import sql
from dexsite.errors import ExchangeError
from ledger.models import Balance
from ledger.selectors import balances_query
from ledger.services import balances_credit_unlocked, balances_ensure, balances_lock, ledger_insert
from trading import margin
from trading.candles import candles_record
from trading.models import (
    Book,
    Fill,
    MarketKind,
    Order,
    Position,
    Side,
    Trade,
)
from trading.orders.batch import Batch, exposures_read
from trading.orders.request import CancelRequest, OrderRequest
from trading.services.books import (
    book_lock_queries,
    book_locked,
    engine_book_return_on_commit,
    to_lots,
    to_ticks,
)

ORDER_COLUMNS = sql.Columns(Order)


# How long a group of orders waits for a row lock once it holds its book (see
# `batch_open`); past it PostgreSQL refuses with this code.
GROUP_LOCK_WAIT_MS = 50

_ORDER_CHANGES = [
    # (qty and reserve_asset: a triggered conditional order's, as it was placed)
    "qty",
    "reserve_asset",
    "filled_qty",
    "filled_notional",
    "status",
    "reserved",
    "cancel_reason",
    "updated_at",
]


def batch_open(
    symbol: str,
    mode: str,
    requests: list[OrderRequest],
    *,
    group: bool = False,
    cancels: Sequence[CancelRequest] = (),
) -> Batch:
    """Lock the book, and the balance rows that the requests reserve from (one statement,
    in primary-key order); read the takers' positions and reserve the new orders' keys.

    `group`: the transaction carries several orders. It then holds more balance rows for
    longer, and a cycle with another book's transaction (each holding a row the other
    wants) grows likelier; PostgreSQL would find it only after `deadlock_timeout` (1 s by
    default). So once the book is held, a group waits at most GROUP_LOCK_WAIT for any
    row; past that it rolls back and its orders are placed one by one.

    The statements go out together (`sql.run_all`: one round trip on PostgreSQL, where
    each still runs after the one before, the book's lock first). Which balance rows an
    order reserves from depends on its market's kind and assets, known from the
    market's last opening in this process; should the market read now differ, what it
    needs besides is locked and read after.

    `cancels`: orders the group cancels among its placings; they are read with the
    makers (`_makers_ahead`)."""
    pg = sql.default_db().vendor == "postgresql"
    queries = book_lock_queries(symbol=symbol, mode=mode)
    if group and pg:
        queries.append(sql.Query(f"SET LOCAL lock_timeout = '{GROUP_LOCK_WAIT_MS}ms'"))
    known = _shapes.get(symbol)
    guessed = None
    if known is not None and requests:
        guessed = _taker_keys(known, mode, requests)
        at_held = len(queries)
        queries.append(balances_query(guessed, lock=True))
        # The accounts the risk gate judges (derivatives, spot buys): their positions.
        margined = {t for t, asset, _ in guessed if asset == known[2]}
        if margined:
            queries.append(margin.exposures_of_query(margined, mode))
    # With the orders' keys, those of twice as many trades (and their fills) as orders
    # (a busy book's orders make fewer than one each on average): an order's trades
    # then rarely need a reservation of their own, a statement and often a round trip.
    # Keys left unused are gaps in the sequences, nothing more.
    n = len(requests)
    reserve = sql.keys_reserve_query([(Order, n), (Trade, 2 * n), (Fill, 4 * n)]) if n else None
    if reserve is not None:
        queries.append(reserve)
    answers = sql.run_all(queries)
    try:
        batch = Batch(book_locked(answers[:2]))
    except Book.DoesNotExist:
        _shapes.pop(symbol, None)
        raise ExchangeError("UNKNOWN_MARKET", f"no market {symbol}", field="market") from None
    if reserve is not None:
        batch.keys, batch.trade_keys, batch.fill_keys = answers.pop()
    market = batch.book.market
    shape = _shapes[symbol] = (market.kind, market.base, market.quote)
    read: set[int] = set()
    if guessed is not None:
        batch.held.update(answers[at_held])
        if margined:
            read = margined
            exposures_read(batch, read, answers[at_held + 1])
    keys = _taker_keys(shape, mode, requests)
    balances_hold(batch.held, keys)
    unread = {t for t, asset, _ in keys if asset == market.quote} - read
    if unread:
        exposures_read(batch, unread, margin.exposures_of(unread, mode))
    if group:
        _makers_ahead(batch, requests, cancels)
    return batch


def _makers_ahead(
    batch: Batch, requests: list[OrderRequest], cancels: Sequence[CancelRequest]
) -> None:
    """Read the makers that a group's orders would meet on the book as it stands (each
    side's orders taken together, up to their lots and their furthest limit), before
    any is matched: one round trip for the group (`makers_read`), where each order that
    crossed read its own. A maker met beyond the guess is read then, as before. The
    orders the group cancels, and their owners' balance rows, are read with them."""
    market, engine = batch.book.market, batch.engine
    met: dict[int, int] = {}
    for side in (Side.BUY, Side.SELL):
        lots, limit, unbounded = 0, None, False
        for r in requests:
            if r.side != side or (n := to_lots(r.qty, market)) is None or n <= 0:
                continue
            ticks = None if r.price is None else to_ticks(r.price, market)
            if r.price is not None and ticks is None:
                continue  # off the tick grid: refused
            lots += n
            if ticks is None:
                unbounded = True
            elif limit is None or (ticks > limit if side == Side.BUY else ticks < limit):
                limit = ticks
        if lots:
            for o in engine.resting_within(side, lots, None if unbounded else limit):
                met[o.order_id] = o.owner
    owners = set(met.values()) | {c.trader.pk for c in cancels}
    if owners:
        makers_read(batch, [*met, *(c.order_id for c in cancels)], owners, 0)


# symbol -> (kind, base, quote) of its market when an order last opened its book here:
# which balance rows the next orders reserve from, to lock them with the book.
_shapes: dict[str, tuple[str, str, str]] = {}


def _taker_keys(
    shape: tuple[str, str, str], mode: str, requests: list[OrderRequest]
) -> set[tuple[int, str, str]]:
    """The balance rows the requests reserve from in a market of `shape`."""
    kind, base, quote = shape
    return {
        (r.trader.pk, base if kind == MarketKind.SPOT and r.side == Side.SELL else quote, mode)
        for r in requests
    }


def makers_read(batch: Batch, ids: list[int], owners: set[int], trades: int) -> None:
    """What the batch does not hold yet of the makers an order met (their orders by
    `ids`, the balance rows of their `owners`, locked, and, in a derivatives market,
    their positions), read together: one round trip on PostgreSQL (`sql.run_all`), in
    the order in which they were read one by one (positions after the balance rows
    that guard them). Balance rows an owner does not have yet are created where they
    are needed (`balances_hold_or_create`). When something is read, the keys of the order's
    `trades` trades and their fills (two each) that the batch's reserved keys lack are
    reserved with it."""
    market, mode = batch.book.market, batch.book.mode
    trades = max(0, len(batch.trades) + trades - len(batch.trade_keys))
    orders = sorted(set(ids) - batch.orders.keys())
    assets = {market.quote, market.base} if market.kind == MarketKind.SPOT else {market.quote}
    keys = {(t, a, mode) for t in owners for a in assets} - batch.held.keys()
    unread = sorted(owners - batch.exposures.keys()) if market.is_derivative else []
    if not (orders or keys or unread):
        return
    where = f'"id" IN ({sql.placeholders(len(orders))})'
    queries = [sql.select_query(ORDER_COLUMNS, where, orders) if orders else None]
    queries.append(balances_query(keys, lock=True) if keys else None)
    queries.append(margin.exposures_of_query(unread, mode) if unread else None)
    queries.append(
        sql.keys_reserve_query([(Trade, trades), (Fill, 2 * trades)]) if trades else None
    )
    found, held, exposures, reserved = _run_some(queries)
    if reserved is not None:
        batch.trade_keys += reserved[0]
        batch.fill_keys += reserved[1]
    if found is not None:
        batch.orders.update((o.pk, o) for o in found)
    if held is not None:
        batch.held.update(held)
    if exposures is not None:
        exposures_read(batch, set(unread), exposures)


def _run_some(queries: list[sql.Query | None]) -> list[Any]:
    """`sql.run_all` of the queries given; None for each None."""
    answers = iter(sql.run_all([q for q in queries if q is not None]))
    return [None if q is None else next(answers) for q in queries]


def _orders_by_id(ids: Iterable[int]) -> dict[int, Order]:
    ids = sorted(set(ids))
    if not ids:
        return {}
    rows = sql.select(ORDER_COLUMNS, f'"id" IN ({sql.placeholders(len(ids))})', ids)
    return {o.pk: o for o in rows}


def orders_of(batch: Batch, ids: Iterable[int]) -> dict[int, Order]:
    """Orders by id as the batch now has them: read once, then kept in memory (those
    that do not exist left out)."""
    ids = set(ids)
    missing = ids - batch.orders.keys()
    if missing:
        batch.orders.update(_orders_by_id(missing))
    return {i: batch.orders[i] for i in ids if i in batch.orders}


def balances_hold(held: dict[tuple[int, str, str], Balance], keys) -> None:
    """Lock the existing balance rows of `keys` not yet in `held` and add them to it."""
    missing = set(keys) - held.keys()
    if missing:
        held.update(balances_lock(missing))


def balances_hold_or_create(held: dict[tuple[int, str, str], Balance], keys) -> None:
    """Lock the balance rows of `keys` not yet in `held` (creating missing ones) and add
    them to it."""
    keys = set(keys)
    balances_hold(held, keys)
    # Rows an account has never had: created at zero, then locked like the rest.
    missing = set(keys) - held.keys()
    if missing:
        balances_ensure(missing)
        held.update(balances_lock(missing))


def batch_write(batch: Batch) -> None:
    """Write what the batch's orders changed: orders, trades, fills, positions, the
    ledger, balances, makers' orders and the book, then credit the fee account (last, see
    below). The trades and fills take the keys reserved with the batch and the makers'
    reads (in order, ascending; those left over go unused), and those lacking are
    reserved first; then every statement goes out in one pipeline, without waiting for
    the one before."""
    book = batch.book
    keys = None
    if batch.trades:
        keys = [batch.trade_keys, batch.fill_keys]
        short = [(Trade, len(batch.trades) - len(keys[0])), (Fill, len(batch.fills) - len(keys[1]))]
        if short[0][1] > 0 or short[1][1] > 0:
            more = sql.keys_reserve_each(short)
            keys = None if more is None else [k + m for k, m in zip(keys, more, strict=True)]
    if keys is not None:
        for rows, reserved in zip((batch.trades, batch.fills), keys, strict=True):
            for row, key in zip(rows, reserved[: len(rows)], strict=True):
                row.pk = key
    with sql.pipeline():
        sql.insert(batch.new_orders, keyed=True)
        sql.insert(batch.trades, keyed=keys is not None)
        for f in batch.fills:
            f.trade_id = f.trade.pk
        sql.insert(batch.fills, keyed=keys is not None)
        candles_record(batch.trades)
        sql.update(
            batch.changed_positions.values(),
            ["size", "open_notional", "realized_pnl", "updated_at"],
        )
        if batch.ledger or batch.fee_postings:
            ledger_insert([*batch.ledger, *batch.fee_postings])
        sql.update([batch.held[k] for k in sorted(batch.changed_balances)], ["total", "locked"])
        new = {o.pk for o in batch.new_orders}
        sql.update([o for o in batch.changed_orders.values() if o.pk not in new], _ORDER_CHANGES)
        sql.update([book], sorted(batch.book_fields))
        # Last: the fee account is credited by every order of every book; touching it
        # at the end means its row lock is held only while this transaction commits,
        # and a holder of it never waits for another lock, so it can't join a deadlock.
        balances_credit_unlocked(batch.fee_postings)
    if batch.taken is not None:
        engine_book_return_on_commit(book, batch.taken, book.seq)


def reducible_lots(batch: Batch) -> dict[int, int]:
    """The position in the batch's market, in lots (positive long), of each owner of a
    reduce-only order resting on its book, as the batch now has it: what the engine is
    given, so that a reduce-only maker fills only what still shrinks its owner's
    position. Those the batch does not hold are read once a batch, in one query
    (positions in a book's market change only under the book's lock, which it holds)."""
    owners = batch.engine.reduce_only_owners()
    if not owners:
        return {}
    market, mode = batch.book.market, batch.book.mode
    lot = market.lot_size
    unread = [o for o in owners if o not in batch.positions and o not in batch.reducers]
    if unread:
        found = dict(
            Position.objects.filter(trader_id__in=unread, market=market, mode=mode).values_list(
                "trader_id", "size"
            )
        )
        batch.reducers.update((o, int(found.get(o, 0) / lot)) for o in unread)
    held = batch.positions
    return {o: int(held[o].size / lot) if o in held else batch.reducers[o] for o in owners}
