"""Placing and cancelling orders: the write path of the exchange.

Orders are placed in transactions of one book (`_Batch`): an order alone, or a group of
orders that threads of this process placed on one book at the same time (`_group`,
`group_commit`):
  1. lock the book row (serialises matching per book across processes), and the
     balance rows the orders reserve from; read the takers' positions;
  2. per order, in arrival order: validate against the market, check margin or balance
     against the balance rows and positions as the orders before it left them (in
     memory), match in the in-memory engine, write the order row, lock the makers'
     balance rows; a refused order changes nothing;
  3. write once what the orders changed: trades, fills, positions, ledger rows,
     balances, makers' orders, the book's seq; credit the fee account last;
  4. on commit: return the engine book to the cache and send the domain events.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import groupby
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Balance, LedgerReason, User
from accounts.selectors import balances_query, public_trader_ids
from accounts.services import (
    Posting,
    balances_credit_unlocked,
    balances_ensure,
    balances_lock,
    ledger_insert,
    ledger_post,
    system_account_id,
)
from accounts.signals import balances_changed
from dexsite import sql
from dexsite.db import RETRYABLE_PGCODES, retrying
from dexsite.errors import ExchangeError, NotFound
from trading import engine as eng
from trading import margin, risk, signals
from trading.candles import candles_record
from trading.models import (
    OPEN_STATUSES,
    Book,
    Fill,
    IndexPrice,
    Liquidity,
    Market,
    MarketKind,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    Trade,
)
from trading.orders.gate import (
    band_check,
    covered_sell,
    order_shortfall,
    refusal,
    reservation,
    slippage_limit,
)
from trading.orders.request import (
    market_open_check,
    min_notional_check,
    order_shape,
    reduce_only_qty,
)
from trading.presenters import dec, fill_dict, order_dict, trade_dict
from trading.selectors import position_shown
from trading.services.books import (
    book_lock,
    book_lock_queries,
    book_locked,
    engine_book_return,
    engine_book_return_on_commit,
    engine_book_take,
    shrinks_only,
    to_lots,
    to_ticks,
)
from trading.services.group_commit import GroupCommit
from trading.settle import position_settle

log = logging.getLogger(__name__)


_ORDER = sql.Columns(Order)


def _orders_by_id(ids: Iterable[int]) -> dict[int, Order]:
    ids = sorted(set(ids))
    if not ids:
        return {}
    rows = sql.select(_ORDER, f'"id" IN ({sql.placeholders(len(ids))})', ids)
    return {o.pk: o for o in rows}


@dataclass
class _ChangeSet:
    """Everything one order (or one cancel) changes, gathered for bulk writes and
    events."""

    postings: list[Posting] = field(default_factory=list)
    fee_postings: list[Posting] = field(default_factory=list)
    lock_deltas: dict[tuple[int, str, str], Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )
    touched_orders: dict[int, Order] = field(default_factory=dict)


def order_place(
    *,
    trader: User,
    market: str,
    mode: str,
    side: str,
    type: str,
    qty: Decimal,
    price: Decimal | None = None,
    time_in_force: str = TimeInForce.GTC,
    reduce_only: bool = False,
    client_order_id: str | None = None,
    source: str = "USER",
) -> tuple[dict[str, Any], bool]:
    """Place an order. Returns (the order as the API shows it, created?). A repeated
    clientOrderId returns the first order and created=False.

    `source` LIQUIDATION marks the risk engine's own orders: they may trade in a paused
    market, are exempt from the minimum notional, and their trades are flagged on the
    public tape.

    Orders that callers on several threads of this process place on one book at the
    same time are matched one after another in one transaction (group commit, see
    `group_commit`): each is acknowledged only once that transaction has committed."""
    if client_order_id:
        existing = _order_by_client_id(trader, client_order_id)
        if existing is not None:
            return existing, False
    request = _Request(
        trader=trader,
        side=side,
        type=type,
        qty=qty,
        price=price,
        tif=time_in_force,
        reduce_only=reduce_only,
        client_order_id=client_order_id,
        source=source,
    )
    if (
        settings.ORDER_GROUP_MAX > 1
        and source == "USER"
        and not transaction.get_connection().in_atomic_block
    ):
        return _group.place((market, mode), request)
    return _place_alone(market, mode, request)


def orders_place_many(
    *, trader: User, orders: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], bool] | ExchangeError]:
    """Place a trader's list of orders (`order_place`'s arguments, without `trader`),
    each on its own: per order, (the order, created?) or the ExchangeError that refused
    it. Consecutive orders of one book share a transaction, as a group (`_group`) does;
    each ends as if placed alone, in the list's order."""
    results: list[Any] = [None] * len(orders)
    pending: list[tuple[int, tuple[str, str], _Request]] = []
    for i, o in enumerate(orders):
        cid = o.get("client_order_id")
        existing = _order_by_client_id(trader, cid) if cid else None
        if existing is not None:
            results[i] = (existing, False)
            continue
        request = _Request(
            trader=trader,
            side=o["side"],
            type=o["type"],
            qty=o["qty"],
            price=o.get("price"),
            tif=o.get("time_in_force", TimeInForce.GTC),
            reduce_only=o.get("reduce_only", False),
            client_order_id=cid,
            source="USER",
        )
        pending.append((i, (o["market"], o["mode"]), request))
    for (market, mode), run in groupby(pending, key=lambda p: p[1]):
        run = list(run)
        outcomes = _place_together(market, mode, [r for _, _, r in run])
        for (i, _, _), outcome in zip(run, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, ExchangeError):
                raise outcome
            results[i] = outcome
    return results


@dataclass(slots=True)
class _Request:
    """One order to place, as `order_place` was given it."""

    trader: User
    side: str
    type: str
    qty: Decimal
    price: Decimal | None
    tif: str
    reduce_only: bool
    client_order_id: str | None
    source: str


# How many times an order is placed again after makers it met could not carry their
# fills (`_MakersCannotCarry`) before it is refused.
UNCARRIED_RETRIES = 5


def _place_alone(symbol: str, mode: str, request: _Request) -> tuple[dict[str, Any], bool]:
    """Place one order in its own transaction: (the order, created?). Makers that could
    not carry what the order would fill of them (the loss it realizes past their cash)
    are cancelled (`MARGIN`), and the order is placed again against the book left."""
    for _ in range(UNCARRIED_RETRIES):
        try:
            return _place_alone_once(symbol, mode, request)
        except _MakersCannotCarry as e:
            _cancel_uncarried(symbol, mode, e.order_ids)
    raise ExchangeError(
        "BOOK_BUSY", "the book kept changing under the order; send it again", status_code=503
    )


class _MakersCannotCarry(Exception):
    """A fill would leave a maker's balance below what it has locked (a loss past its
    cash): the transaction rolls back, and `order_ids`, its orders the taker met, go."""

    def __init__(self, order_ids: list[int]) -> None:
        super().__init__(f"makers' orders {order_ids} cannot carry their fills")
        self.order_ids = order_ids


@retrying
def _cancel_uncarried(symbol: str, mode: str, order_ids: list[int]) -> None:
    with transaction.atomic():
        book = book_lock(symbol=symbol, mode=mode)
        orders = Order.objects.filter(pk__in=order_ids, status__in=OPEN_STATUSES).order_by("id")
        orders_cancel_in_book(book, list(orders), "MARGIN")


@retrying
def _place_alone_once(symbol: str, mode: str, request: _Request) -> tuple[dict[str, Any], bool]:
    try:
        with transaction.atomic():
            batch = _batch_open(symbol, mode, [request])
            try:
                finish = _place_in(batch, request)
            except ExchangeError:
                batch.give_back()
                raise
            _batch_write(batch)
            (placed,) = _batch_finish(batch, [finish])
            return placed, True
    except IntegrityError as e:
        # Two requests with one clientOrderId raced; the unique constraint let one in.
        if request.client_order_id:
            existing = _order_by_client_id(request.trader, request.client_order_id)
            if existing is not None:
                return existing, False
        if "balance_available_nonneg" in str(e):
            # A fill would overdraw an account (a loss beyond its funds): the database
            # refused it and the whole order rolled back.
            raise ExchangeError(
                "INSUFFICIENT_MARGIN", "the account cannot carry this trade", field="qty"
            ) from e
        raise
    except ArithmeticError as e:
        # A size whose margin or fee does not fit the arithmetic's precision; the
        # transaction has rolled back.
        raise ExchangeError("INVALID_QTY", "the order is too large", field="qty") from e


def _place_together(symbol: str, mode: str, requests: list[_Request]) -> list[Any]:
    """Place `requests` (one book) one after another in one transaction. Returns, per
    request, (its order, created?) or the exception that refused it. A refusal writes nothing,
    so it leaves the others standing; anything else (a deadlock, a constraint, a fault)
    undoes them all, and each is then placed alone, as if it had come by itself."""
    if len(requests) > 1:
        committing = False
        try:
            with transaction.atomic():
                batch = _batch_open(symbol, mode, requests, group=True)
                outcomes: list[Any] = []
                for request in requests:
                    try:
                        outcomes.append(_place_in(batch, request))
                    except ExchangeError as e:
                        if batch.placing:
                            # Refused after it had changed the batch: undo them all.
                            raise RuntimeError("an order was refused half-placed") from e
                        outcomes.append(e)
                _batch_write(batch)
                placed = iter(_batch_finish(batch, [o for o in outcomes if callable(o)]))
                answers = [
                    o if isinstance(o, ExchangeError) else (next(placed), True) for o in outcomes
                ]
                committing = True
            return answers
        except ExchangeError as e:
            # Of the book itself (an unknown market): the same answer for every order.
            return [e] * len(requests)
        except Exception as e:
            if committing and not _rolled_back(e):
                # The COMMIT itself failed in a way that leaves its outcome unknown (the
                # connection dropped): placing the orders again could place them twice.
                log.exception("a group of %d orders on %s: COMMIT failed", len(requests), symbol)
                return [e] * len(requests)
            log.info(
                "a group of %d orders on %s rolled back; placing each alone", len(requests), symbol
            )
    outcomes = []
    for request in requests:
        try:
            outcomes.append(_place_alone(symbol, mode, request))
        except Exception as e:
            outcomes.append(e)
    return outcomes


def _rolled_back(e: Exception) -> bool:
    """Whether a failed COMMIT surely undid the transaction: the server refused it (a
    constraint checked at COMMIT, a serialization failure or deadlock, a lock it waited
    for too long, e.g. a deferred foreign key's behind a delisting's lock on the market).
    A connection that failed leaves it unknown."""
    if isinstance(e, IntegrityError | DataError):
        return True
    code = getattr(getattr(e, "__cause__", None), "sqlstate", None)
    return code in RETRYABLE_PGCODES or code == LOCK_NOT_AVAILABLE


# Orders that threads of this process place on one book at the same time share its
# next transaction (see `group_commit`).
_group = GroupCommit(
    lambda key, requests: _place_together(key[0], key[1], requests),
    lambda: settings.ORDER_GROUP_MAX,
)


def _order_by_client_id(trader: User, client_order_id: str) -> dict[str, Any] | None:
    order = (
        Order.objects.select_related("market")
        .filter(trader=trader, client_order_id=client_order_id)
        .first()
    )
    if order is None:
        return None
    fills = [fill_dict(f, order.market.symbol) for f in order.fills.order_by("id")]
    return order_dict(order, order.market.symbol, fills)


# How long a group of orders waits for a row lock once it holds its book (see
# `_batch_open`); past it PostgreSQL refuses with this code.
GROUP_LOCK_WAIT_MS = 50
LOCK_NOT_AVAILABLE = "55P03"

_ORDER_CHANGES = [
    "filled_qty",
    "filled_notional",
    "status",
    "reserved",
    "cancel_reason",
    "updated_at",
]


@dataclass
class _Batch:
    """The orders of one transaction on one locked book: what they changed in memory,
    written once by `_batch_write`. Balance rows, once locked, stay in `held` and carry
    every order's changes, so that each order's checks see the orders before it."""

    book: Book
    held: dict[tuple[int, str, str], Balance] = field(default_factory=dict)
    # Orders this transaction wrote or read, as they now are.
    orders: dict[int, Order] = field(default_factory=dict)
    changed_orders: dict[int, Order] = field(default_factory=dict)
    changed_balances: set[tuple[int, str, str]] = field(default_factory=set)
    ledger: list[Posting] = field(default_factory=list)
    fee_postings: list[Posting] = field(default_factory=list)
    book_fields: set[str] = field(default_factory=set)
    trades: list[Trade] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    # Positions in this book's market by trader, as they now are (they change only
    # under the book's lock), and those to write.
    positions: dict[int, Position] = field(default_factory=dict)
    changed_positions: dict[int, Position] = field(default_factory=dict)
    # Takers' exposures as read when the batch began. Their positions in other markets
    # cannot move meanwhile: that takes their balance row, which the batch holds.
    exposures: dict[int, list[margin.Exposure]] = field(default_factory=dict)
    taken: eng.OrderBook | None = None
    mutated: bool = False
    # An order is between its match and its last write: nothing may refuse it now.
    placing: bool = False
    events: _Events | None = None
    # The new orders' keys, reserved when the batch opened (None where there are no
    # sequences to reserve from); their rows are written together.
    keys: list[int] | None = None
    new_orders: list[Order] = field(default_factory=list)
    # Keys for the trades and fills, reserved with the makers' reads (`_makers_read`),
    # ascending; `_batch_write` reserves what they lack.
    trade_keys: list[int] = field(default_factory=list)
    fill_keys: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = _Events(self.book.market, self.book.mode)

    def order_add(self, order: Order) -> None:
        """Give a new order its key, from those reserved for the batch's orders
        (ascending, so that ids keep arrival order); its row is written with the
        others by `_batch_write`. Where there are no sequences to reserve from (SQLite),
        each is written as it comes."""
        if self.keys:
            order.pk = self.keys.pop(0)
            self.new_orders.append(order)
        else:
            sql.insert([order])

    @property
    def engine(self) -> eng.OrderBook:
        if self.taken is None:
            self.taken = engine_book_take(self.book)
        return self.taken

    def give_back(self) -> None:
        """Return an engine book that no order changed (the transaction is about to roll
        back): it still matches the database."""
        if self.taken is not None and not self.mutated:
            engine_book_return(self.book, self.taken, self.book.seq)


def _batch_open(symbol: str, mode: str, requests: list[_Request], *, group: bool = False) -> _Batch:
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
    needs besides is locked and read after."""
    pg = sql.default_db().vendor == "postgresql"
    queries = book_lock_queries(symbol=symbol, mode=mode)
    if group and pg:
        queries.append(sql.Query(f"SET LOCAL lock_timeout = '{GROUP_LOCK_WAIT_MS}ms'"))
    known = _shapes.get(symbol)
    guessed = None
    if known is not None:
        guessed = _taker_keys(known, mode, requests)
        at_held = len(queries)
        queries.append(balances_query(guessed, lock=True))
        # The accounts the risk gate judges (derivatives, spot buys): their positions.
        margined = {t for t, asset, _ in guessed if asset == known[2]}
        if margined:
            queries.append(margin.exposures_of_query(margined, mode))
    reserve = sql.keys_reserve_query([(Order, len(requests))])
    if reserve is not None:
        queries.append(reserve)
    answers = sql.run_all(queries)
    try:
        batch = _Batch(book_locked(answers[:2]))
    except Book.DoesNotExist:
        _shapes.pop(symbol, None)
        raise ExchangeError("UNKNOWN_MARKET", f"no market {symbol}", field="market") from None
    if reserve is not None:
        (batch.keys,) = answers.pop()
    market = batch.book.market
    shape = _shapes[symbol] = (market.kind, market.base, market.quote)
    read: set[int] = set()
    if guessed is not None:
        batch.held.update(answers[at_held])
        if margined:
            read = margined
            _exposures_read(batch, read, answers[at_held + 1])
    keys = _taker_keys(shape, mode, requests)
    _balances_hold(batch.held, keys)
    unread = {t for t, asset, _ in keys if asset == market.quote} - read
    if unread:
        _exposures_read(batch, unread, margin.exposures_of(unread, mode))
    return batch


# symbol -> (kind, base, quote) of its market when an order last opened its book here:
# which balance rows the next orders reserve from, to lock them with the book.
_shapes: dict[str, tuple[str, str, str]] = {}


def _taker_keys(
    shape: tuple[str, str, str], mode: str, requests: list[_Request]
) -> set[tuple[int, str, str]]:
    """The balance rows the requests reserve from in a market of `shape`."""
    kind, base, quote = shape
    return {
        (r.trader.pk, base if kind == MarketKind.SPOT and r.side == Side.SELL else quote, mode)
        for r in requests
    }


def _exposures_read(batch: _Batch, traders: set[int], exposures: list[margin.Exposure]) -> None:
    """Keep the exposures read of `traders` (all of each one's positions in the mode)."""
    for t in traders:
        batch.exposures.setdefault(t, [])
    for e in exposures:
        _exposures_keep(batch, e.position.trader_id, e)


def _exposures_keep(batch: _Batch, trader_id: int, e: margin.Exposure) -> None:
    batch.exposures.setdefault(trader_id, []).append(e)
    if e.position.market_id == batch.book.market_id:
        # The batch's copy wins over one read later.
        batch.positions.setdefault(trader_id, e.position)


def _exposures_now(batch: _Batch, trader_id: int) -> list[margin.Exposure]:
    """The account's exposures, its position in this book's market as the batch has it
    (the caller holds the account's balance row)."""
    read = batch.exposures.get(trader_id)
    if read is None:
        found = margin.exposures_for(trader_id, batch.book.mode, include_flat=True)
        _exposures_read(batch, {trader_id}, found)
        read = batch.exposures[trader_id]
    market_id = batch.book.market_id
    out = [e for e in read if e.position.market_id != market_id]
    here = batch.positions.get(trader_id)
    if here is not None:
        if not hasattr(here, "book_mark"):
            # Created or read by the batch itself: the mark and index a read would join.
            market = batch.book.market
            here.market = market
            here.book_mark = batch.book.mark_price
            here.index_now = _index_now(batch)
        out.append(margin.exposure_of(here))
    return out


def _batch_write(batch: _Batch) -> None:
    """Write what the batch's orders changed: orders, trades, fills, positions, the
    ledger, balances, makers' orders and the book, then credit the fee account (last, see
    below). The trades and fills take the keys reserved with the makers' reads, and
    those lacking are reserved first; then every statement goes out in one pipeline,
    without waiting for the one before."""
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
            for row, key in zip(rows, reserved, strict=True):
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


def _batch_finish(batch: _Batch, finishers: list[Callable[[], dict[str, Any]]]) -> list[dict]:
    """After `_batch_write`: the placed orders as the API shows them; their events are
    sent together once the transaction commits."""
    placed = [finish() for finish in finishers]
    batch.events.positions_shown = _positions_shown(batch)
    batch.events.send_on_commit()
    return placed


def _positions_shown(batch: _Batch) -> dict[int, dict] | None:
    """Each moved position of the batch's market as `positions_list` shows it, from what
    the batch holds (its account's positions, marks and cash, as it leaves them): what
    the position events carry, so that nobody reads them again after the commit. None
    if the batch lacks any of it."""
    traders = {t for t, _ in batch.events.positions}
    if not traders:
        return None
    mode, symbol = batch.book.mode, batch.book.market.symbol
    shown = {}
    for t in traders:
        cash = batch.held.get((t, "USDC", mode))
        if t not in batch.exposures or cash is None:
            return None
        found = position_shown(_exposures_now(batch, t), cash, symbol)
        if found is not None:
            shown[t] = found
    return shown


@dataclass(slots=True)
class _Admitted:
    """An order the request stage and the risk gate let through, as they left it."""

    qty: Decimal  # trimmed to the position, for a reduce-only order
    lots: int
    limit: int | None  # the engine's limit in ticks: the price, or a market order's slippage limit
    band_limited: bool  # a market order held to its slippage limit
    reducing: bool  # may only shrink a position (reduce-only, or a covered option sell)
    reserve_asset: str
    reserve: Decimal
    reference: Decimal | None  # the mark (the index on spot) the bands measured from
    position: Callable[[int], int] | None
    # The order's key in the engine until its row has one.
    provisional: object = field(default_factory=object)


def _place_in(batch: _Batch, request: _Request) -> Callable[[], dict[str, Any]]:
    """Place one order in the batch's transaction: admit it (request, gate), match it,
    record what it changed in the batch. An ExchangeError (the order refused) is raised
    before the order changes anything. Returns what to call once the batch is written:
    it sends the order's events on commit and returns the order as the API shows it."""
    admitted = _admit(batch, request)
    result = _match(batch, request, admitted)
    # From here on the order is placed: nothing below refuses it.
    batch.mutated = batch.placing = True
    finish = _record(batch, request, admitted, result)
    batch.placing = False
    return finish


def _admit(batch: _Batch, request: _Request) -> _Admitted:
    """The request stage and the risk gate, on the batch's locked rows: refused with an
    ExchangeError, or admitted as the engine is to match it."""
    book = batch.book
    market, mode = book.market, book.mode
    trader, side, qty, price = request.trader, request.side, request.qty, request.price
    tif, reduce_only = request.tif, request.reduce_only
    risk_engine = request.source != "USER"
    # -- request: its shape against the market --------------------------------------
    market_open_check(market, risk_engine=risk_engine)
    is_market_order = request.type == OrderType.MARKET
    shape = order_shape(
        market, type=request.type, qty=qty, price=price, tif=tif, reduce_only=reduce_only
    )
    ticks, lots = shape.ticks, shape.lots

    derivative = market.is_derivative
    held = batch.held
    # What the account's margin is judged in: derivatives and spot buys are paid from
    # the USDC account that carries the positions too.
    margined = derivative or side == Side.BUY
    if margined:
        # Every change to this account's positions and margin cash happens under its
        # USDC balance row lock (as taker here, as maker below): taken first, the
        # positions read next cannot move under the risk gate.
        _balances_hold(held, [(trader.pk, market.quote, mode)])
    exposures = _exposures_now(batch, trader.pk) if margined else []
    own = next((e for e in exposures if e.position.market_id == market.pk), None)
    if reduce_only:
        qty = reduce_only_qty(side=side, qty=qty, size=own.size if own else Decimal(0))
        lots = to_lots(qty, market)

    # -- gate: price bands (the risk engine's own orders are exempt: a liquidation
    # closes at the bankruptcy price, wherever the mark is) ---------------------------
    reference = _band_reference(batch)
    band_ticks = None
    if reference is not None and not risk_engine:
        if is_market_order:
            band_ticks = slippage_limit(market, side=side, reference=reference)
        else:
            band_check(market, side=side, price=price, reference=reference)

    engine = batch.engine
    position = _position_lots(batch) if derivative else None
    if is_market_order:
        fillable, cost_tl = engine.sweep(side, lots, band_ticks, trader.pk, position)
        est_notional = cost_tl * market.tick_size * market.lot_size
    else:
        fillable, est_notional = lots, price * qty
    if not risk_engine:
        min_notional_check(
            market, notional=est_notional, market_order=is_market_order, whole=fillable == lots
        )

    # -- gate: what it reserves, and whether the account carries it -------------------
    promised = 0
    if market.kind == MarketKind.OPTION and side == Side.SELL:
        resting = engine.reduce_only_resting(trader.pk)
        promised = sum(o.qty for o in resting if o.side == eng.SELL)
    covered = covered_sell(
        market,
        side=side,
        qty=qty,
        reduce_only=reduce_only,
        long=own.size if own else Decimal(0),
        promised=promised * market.lot_size,
    )
    reducing = reduce_only or covered
    mark = book.mark_price or market.mark_price or (est_notional / qty)
    held_for = reservation(
        market,
        side=side,
        qty=qty,
        notional=est_notional,
        reducing=reducing,
        leverage=own.position.leverage if own else None,
        mark=mark,
        index=(own.index if own else None) or _index_now(batch) or mark,
    )
    reserve_asset, reserve = held_for.asset, held_for.amount

    # The taker's own balance row is locked before matching, so that its check and
    # the writes below see the same funds. Makers are locked after matching, in
    # primary-key order; the rare cross-book cycle (A takes from B in one book while B
    # takes from A in another) is a deadlock PostgreSQL breaks and `retrying` runs
    # again.
    taker_key = (trader.pk, reserve_asset, mode)
    if reserve > 0:
        _balances_hold(held, [taker_key])
    if not risk_engine:
        cash = held.get(taker_key)
        available = cash.total - cash.locked if cash else Decimal(0)
        if margined:
            if derivative and own is None:
                flat = Position(trader_id=trader.pk, market=market, mode=mode)
                own = margin.exposure_new(flat, mark=reference or mark, index=_index_now(batch))
            lacking = order_shortfall(
                market,
                margin.account_of(held.get((trader.pk, market.quote, mode)), exposures),
                own,
                side=side,
                fill_qty=fillable * market.lot_size,
                fill_notional=est_notional,
                reserve=reserve,
                reducing=reducing,
            )
        else:
            # A spot sell pays in the base asset, which backs no margin.
            lacking = reserve - available
        if lacking > 0:
            raise refusal(
                market,
                held_for,
                lacking=lacking,
                available=available,
                reducing=reducing,
                margined=margined,
            )
    return _Admitted(
        qty=qty,
        lots=lots,
        limit=band_ticks if is_market_order else ticks,
        band_limited=band_ticks is not None,
        reducing=reducing,
        reserve_asset=reserve_asset,
        reserve=reserve,
        reference=reference,
        position=position,
    )


def _match(batch: _Batch, request: _Request, admitted: _Admitted) -> eng.MatchResult:
    """The engine's match of an admitted order; a POST_ONLY that would cross or a FOK
    that cannot fill in full is refused, the book unchanged."""
    trader, side = request.trader, request.side
    engine_tif = _engine_tif(request)
    # A covered option sell rests as a reduce-only one does: it reserved nothing, so it
    # may only ever sell the long it is covered by. A market order runs as an IOC at
    # its slippage limit, if it has one.
    result = batch.engine.place(
        admitted.provisional,
        trader.pk,
        side,
        admitted.lots,
        admitted.limit,
        engine_tif,
        admitted.reducing,
        admitted.position,
    )
    if result.status == eng.book.REJECTED:
        if result.reject_reason == "WOULD_CROSS":
            raise ExchangeError(
                "WOULD_CROSS", "a POST_ONLY order would cross the book", field="price"
            )
        raise ExchangeError(
            "FOK_UNFILLABLE", "a FOK order could not be filled in full", field="qty"
        )
    return result


def _engine_tif(request: _Request) -> str:
    """A market order never rests: it runs as IOC (or FOK if asked)."""
    if request.type == OrderType.MARKET and request.tif != TimeInForce.FOK:
        return TimeInForce.IOC
    return request.tif


def _record(
    batch: _Batch, request: _Request, admitted: _Admitted, result: eng.MatchResult
) -> Callable[[], dict[str, Any]]:
    """Record a matched order in the batch: its row, its makers' orders, the trades and
    fills, the settled positions and the balances they move, the book's seq."""
    book = batch.book
    market, mode, engine, held = book.market, book.mode, batch.engine, batch.held
    trader, side, price, tif = request.trader, request.side, request.price, request.tif
    qty, reserve, reserve_asset = admitted.qty, admitted.reserve, admitted.reserve_asset
    taker_key = (trader.pk, reserve_asset, mode)

    now = timezone.now()
    lot, tick = market.lot_size, market.tick_size
    filled_qty = result.filled * lot
    order = sql.new(
        Order,
        trader=trader,
        market=market,
        mode=mode,
        side=side,
        type=request.type,
        # A market order never rests: it is IOC (or FOK if asked), as the engine ran it.
        time_in_force=_engine_tif(request),
        price=price,
        qty=qty,
        filled_qty=filled_qty,
        filled_notional=sum((f.price * tick * f.qty * lot for f in result.fills), Decimal(0)),
        status=result.status,
        reduce_only=request.reduce_only,
        client_order_id=request.client_order_id,
        reserved=risk.scale_reserve(reserve, qty, qty - filled_qty)
        if result.rested
        else Decimal(0),
        reserve_asset=reserve_asset,
        cancel_reason="" if result.rested or result.status == OrderStatus.FILLED else tif,
        source=request.source,
        created_at=now,
        updated_at=now,
    )
    if request.type == OrderType.MARKET and order.cancel_reason:
        # Cut short by its slippage limit where the book held more beyond it.
        left = admitted.lots - result.filled
        beyond = admitted.band_limited and (
            engine.sweep(side, left, None, trader.pk, admitted.position)[0] > 0
        )
        order.cancel_reason = "PRICE_BAND" if beyond else "MARKET"
    batch.order_add(order)
    batch.orders[order.pk] = order
    if result.rested:
        engine.rekey(admitted.provisional, order.pk)

    changes = _ChangeSet()
    changes.lock_deltas[taker_key] += order.reserved
    reduce_only_canceled = [oid for oid, _ in result.reduce_only_canceled]
    maker_ids = [f.maker_id for f in result.fills] + [oid for oid, _ in result.stp_canceled]
    maker_ids += reduce_only_canceled
    _makers_read(batch, maker_ids, {f.maker_owner for f in result.fills}, len(result.fills))
    makers = _orders_of(batch, maker_ids)
    if makers:
        # Lock the makers' balances (pk order) before their positions change.
        assets = {market.quote, market.base} if market.kind == MarketKind.SPOT else {market.quote}
        _balances_hold_or_create(
            held, {(o.trader_id, a, mode) for o in makers.values() for a in assets}
        )

    for oid, _ in result.stp_canceled:
        _mark_canceled(makers[oid], "SELF_TRADE", now, changes)

    trades, fills = _record_fills(
        market, mode, order, result, makers, now, changes, admitted.reference
    )
    # After their fills: what a reduce-only maker could not fill without growing its
    # owner's position is cancelled.
    for oid in reduce_only_canceled:
        _mark_canceled(makers[oid], _reduce_only_reason(makers[oid]), now, changes)
    batch.trades += trades
    batch.fills += fills
    position_events = _apply_positions(batch, fills, changes) if market.is_derivative else []
    if position_events:
        _reduce_only_cleared(batch, result, position_events, now, changes)
    batch.changed_positions.update((p.pk, p) for p in position_events)

    # The balances this order moved (everyone's but the fee account's), in memory: the
    # batch writes them once.
    keys = {k for k, delta in changes.lock_deltas.items() if delta}
    keys |= {(p.trader_id, p.asset, p.mode) for p in changes.postings}
    _balances_hold_or_create(held, keys)
    ledger_post(changes.postings, held)
    for key, delta in changes.lock_deltas.items():
        if delta:
            held[key].locked += delta
    short = sorted({k[0] for k in keys if k[0] != trader.pk and held[k].total < held[k].locked})
    if short:
        # The database would refuse the write (available may not go negative) and roll
        # back the taker's order with it: the makers' orders go instead.
        raise _MakersCannotCarry([f.maker_id for f in result.fills if f.maker_owner in short])
    batch.ledger += changes.postings
    batch.fee_postings += changes.fee_postings
    batch.changed_balances |= keys
    batch.changed_orders.update(changes.touched_orders)

    if result.changed:
        book.seq += 1
        batch.book_fields.add("seq")
    if result.fills:
        book.last_price = result.fills[-1].price * tick
        batch.book_fields.add("last_price")

    # The orders as this one left them; their fills' and trades' ids exist once the
    # batch has written them (`finish`).
    symbol_ = market.symbol
    taker_payload = order_dict(order, symbol_, [])
    orders = [(order, taker_payload)]
    orders += [(o, order_dict(o, symbol_)) for o in changes.touched_orders.values()]
    seq = book.seq
    balances = [held[k] for k in keys]

    def finish() -> dict[str, Any]:
        taker_payload["fills"] = [fill_dict(f, symbol_) for f in fills if f.order_id == order.pk]
        _emit_on_commit(
            market=market,
            mode=mode,
            seq=seq,
            result=result,
            orders=orders,
            trades=trades,
            fills=fills,
            balances=balances,
            positions=position_events,
            known=[trader],
            into=batch.events,
        )
        return taker_payload

    return finish


def _reduce_only_cleared(
    batch: _Batch, result: eng.MatchResult, moved: list[Position], now, changes: _ChangeSet
) -> None:
    """Resting reduce-only orders that could now only grow their owner's position (it
    has closed or turned) leave the book (REDUCE_ONLY), in the order's book delta: the
    book shows no depth that would not trade. (A taker reaching one would find it
    cancelled anyway, see `_position_lots`.)"""
    engine = batch.engine
    gone = [
        o
        for p in moved
        for o in engine.reduce_only_resting(p.trader_id)
        if _only_grows(o.side, p.size)
    ]
    if not gone:
        return
    rows = _orders_of(batch, [o.order_id for o in gone])
    for o in gone:
        _, level_total = engine.cancel(o.order_id)
        (result.bid_deltas if o.side == eng.BUY else result.ask_deltas)[o.price] = level_total
        _mark_canceled(rows[o.order_id], _reduce_only_reason(rows[o.order_id]), now, changes)


def _band_reference(batch: _Batch) -> Decimal | None:
    """The price the market's bands are measured from: the book's mark, or the index of
    the underlying where the market has no mark (spot); None where there is neither."""
    book, market = batch.book, batch.book.market
    if market.is_derivative:
        mark = book.mark_price or market.mark_price
        if mark or market.kind == MarketKind.OPTION:
            # An option is worth no fraction of its underlying's index to measure from.
            return mark or None
    return _index_now(batch)


def _index_now(batch: _Batch) -> Decimal | None:
    """The index of the batch's underlying: the market row's copy, read with the book
    (`index_set` writes it in the same transaction as the index itself); read from the
    index only for a market listed since the index last moved, which has no copy yet."""
    market = batch.book.market
    if market.index_price is None and not getattr(market, "index_read", False):
        found = IndexPrice.objects.filter(underlying=market.underlying)
        market.index_price = found.values_list("price", flat=True).first()
        market.index_read = True  # none to read: not again for this batch
    return market.index_price


def _only_grows(side: str, size: Decimal) -> bool:
    """Whether an order of `side` could only grow (or open) a position of `size`."""
    return size <= 0 if side == Side.SELL else size >= 0


def _reduce_only_reason(order: Order) -> str:
    """Why a resting order that may only shrink a position was cancelled: it was
    reduce-only, or a covered option sell whose long is gone."""
    return "REDUCE_ONLY" if order.reduce_only else "UNCOVERED"


def _position_lots(batch: _Batch) -> Callable[[int], int]:
    """An owner's position in the batch's market, in lots (positive long), as the batch
    now has it: for the engine, when it meets a reduce-only maker. Positions in a
    book's market change only under the book's lock, which the batch holds."""
    market, mode = batch.book.market, batch.book.mode
    read: dict[int, Decimal] = {}  # owners the batch does not hold, read once

    def lots(owner: int) -> int:
        held = batch.positions.get(owner)
        if held is not None:
            size = held.size
        elif owner in read:
            size = read[owner]
        else:
            found = Position.objects.filter(trader_id=owner, market=market, mode=mode)
            size = read[owner] = found.values_list("size", flat=True).first() or Decimal(0)
        return int(size / market.lot_size)

    return lots


def _makers_read(batch: _Batch, ids: list[int], owners: set[int], trades: int) -> None:
    """What the batch does not hold yet of the makers an order met (their orders by
    `ids`, the balance rows of their `owners`, locked, and, in a derivatives market,
    their positions), read together: one round trip on PostgreSQL (`sql.run_all`), in
    the order in which they were read one by one (positions after the balance rows
    that guard them). Balance rows an owner does not have yet are created where they
    are needed (`_balances_hold_or_create`). When something is read, the keys of the order's
    `trades` trades and their fills (two each) are reserved with it."""
    market, mode = batch.book.market, batch.book.mode
    orders = sorted(set(ids) - batch.orders.keys())
    assets = {market.quote, market.base} if market.kind == MarketKind.SPOT else {market.quote}
    keys = {(t, a, mode) for t in owners for a in assets} - batch.held.keys()
    unread = sorted(owners - batch.exposures.keys()) if market.is_derivative else []
    if not (orders or keys or unread):
        return
    where = f'"id" IN ({sql.placeholders(len(orders))})'
    queries = [sql.select_query(_ORDER, where, orders) if orders else None]
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
        _exposures_read(batch, set(unread), exposures)


def _run_some(queries: list[sql.Query | None]) -> list[Any]:
    """`sql.run_all` of the queries given; None for each None."""
    answers = iter(sql.run_all([q for q in queries if q is not None]))
    return [None if q is None else next(answers) for q in queries]


def _orders_of(batch: _Batch, ids: Iterable[int]) -> dict[int, Order]:
    """Orders by id as the batch now has them: read once, then kept in memory."""
    ids = set(ids)
    missing = ids - batch.orders.keys()
    if missing:
        batch.orders.update(_orders_by_id(missing))
    return {i: batch.orders[i] for i in ids}


def _balances_hold(held: dict[tuple[int, str, str], Balance], keys) -> None:
    """Lock the existing balance rows of `keys` not yet in `held` and add them to it."""
    missing = set(keys) - held.keys()
    if missing:
        held.update(balances_lock(missing))


def _balances_hold_or_create(held: dict[tuple[int, str, str], Balance], keys) -> None:
    """Lock the balance rows of `keys` not yet in `held` (creating missing ones) and add
    them to it."""
    keys = set(keys)
    _balances_hold(held, keys)
    # Rows an account has never had: created at zero, then locked like the rest.
    missing = set(keys) - held.keys()
    if missing:
        balances_ensure(missing)
        held.update(balances_lock(missing))


def _mark_canceled(order: Order, reason: str, now, changes: _ChangeSet) -> None:
    changes.lock_deltas[(order.trader_id, order.reserve_asset, order.mode)] -= order.reserved
    order.reserved = Decimal(0)
    order.status = OrderStatus.CANCELED
    order.cancel_reason = reason
    order.updated_at = now
    changes.touched_orders[order.pk] = order


def _record_fills(
    market: Market,
    mode: str,
    taker: Order,
    result: eng.MatchResult,
    makers: dict[int, Order],
    now,
    changes: _ChangeSet,
    mark: Decimal | None,
) -> tuple[list[Trade], list[Fill]]:
    """The trades and fills of `result` (not yet written), with the makers' orders, the
    postings and the reservations they move recorded in `changes`; each trade keeps the
    `mark` its price band was measured from."""
    if not result.fills:
        return [], []
    tick, lot = market.tick_size, market.lot_size
    fee_id = system_account_id(User.FEE_ACCOUNT)
    trades = [
        sql.new(
            Trade,
            market=market,
            mode=mode,
            price=f.price * tick,
            qty=f.qty * lot,
            taker_side=taker.side,
            taker_order=taker,
            maker_order_id=f.maker_id,
            liquidation=taker.source != "USER",
            mark_price=mark,
            created_at=now,
        )
        for f in result.fills
    ]
    fills: list[Fill] = []
    ref = f"order:{taker.pk}"
    total_fees = Decimal(0)
    maker_side = Side.SELL if taker.side == Side.BUY else Side.BUY
    for f, trade in zip(result.fills, trades, strict=True):
        px, q = trade.price, trade.qty
        notional = px * q
        maker = makers[f.maker_id]
        taker_fee = risk.fee_for(notional, market.taker_fee)
        maker_fee = risk.fee_for(notional, market.maker_fee)
        total_fees += taker_fee + maker_fee
        fills.append(
            sql.new(
                Fill,
                trade=trade,
                order=taker,
                trader_id=taker.trader_id,
                market=market,
                mode=mode,
                side=taker.side,
                price=px,
                qty=q,
                fee=taker_fee,
                liquidity=Liquidity.TAKER,
                created_at=now,
            )
        )
        fills.append(
            sql.new(
                Fill,
                trade=trade,
                order=maker,
                trader_id=maker.trader_id,
                market=market,
                mode=mode,
                side=maker_side,
                price=px,
                qty=q,
                fee=maker_fee,
                liquidity=Liquidity.MAKER,
                created_at=now,
            )
        )
        # The maker's order: fill it and shrink its reservation to what remains.
        remaining_before = maker.qty - maker.filled_qty
        maker.filled_qty += q
        maker.filled_notional += notional
        remaining_after = maker.qty - maker.filled_qty
        new_reserved = risk.scale_reserve(maker.reserved, remaining_before, remaining_after)
        changes.lock_deltas[(maker.trader_id, maker.reserve_asset, mode)] -= (
            maker.reserved - new_reserved
        )
        maker.reserved = new_reserved
        maker.status = OrderStatus.FILLED if remaining_after == 0 else OrderStatus.PARTIALLY_FILLED
        maker.updated_at = now
        changes.touched_orders[maker.pk] = maker

        mref = f"order:{maker.pk}"
        if taker_fee:
            changes.postings.append(
                Posting(taker.trader_id, market.quote, mode, -taker_fee, LedgerReason.FEE, ref)
            )
        if maker_fee:
            changes.postings.append(
                Posting(maker.trader_id, market.quote, mode, -maker_fee, LedgerReason.FEE, mref)
            )
        if market.kind == MarketKind.SPOT:
            # Spot swaps base for quote; derivatives settle in `_apply_positions`.
            buyer, seller = (taker, maker) if taker.side == Side.BUY else (maker, taker)
            bref, sref = f"order:{buyer.pk}", f"order:{seller.pk}"
            changes.postings += [
                Posting(buyer.trader_id, market.quote, mode, -notional, LedgerReason.TRADE, bref),
                Posting(seller.trader_id, market.quote, mode, notional, LedgerReason.TRADE, sref),
                Posting(buyer.trader_id, market.base, mode, q, LedgerReason.TRADE, bref),
                Posting(seller.trader_id, market.base, mode, -q, LedgerReason.TRADE, sref),
            ]
    if total_fees:
        changes.fee_postings.append(
            Posting(fee_id, market.quote, mode, total_fees, LedgerReason.FEE, ref)
        )
    return trades, fills


def _apply_positions(batch: _Batch, fills: list[Fill], changes: _ChangeSet) -> list[Position]:
    """Settle the fills (`trading.settle`): move the positions of everyone who traded
    (in the batch's memory; new ones are created now) and book the cash they move: an
    option's premium per fill, a trader's realized PnL once per order."""
    if not fills:
        return []
    market, mode = batch.book.market, batch.book.mode
    cached = batch.positions
    # Positions of one (market, mode) change only under that book's lock, held here;
    # an account's others, under its balance row's, which the batch holds for everyone
    # who traded. Read with them (one query), they give the account's margin and the
    # position's liquidation price as its event shows them (`_positions_shown`).
    ids = sorted({f.trader_id for f in fills} - cached.keys())
    if ids:
        # (An account read already, a taker's at the group's opening, is not read again:
        # its positions would count twice.)
        unread = {t for t in ids if t not in batch.exposures}
        _exposures_read(batch, unread, margin.exposures_of(unread, mode))
        new = [Position(trader_id=t, market=market, mode=mode) for t in ids if t not in cached]
        if new:
            sql.insert(new)
            cached.update({p.trader_id: p for p in new})
    realized: dict[int, Decimal] = defaultdict(Decimal)
    moved: dict[int, Position] = {}
    for f in fills:
        p = moved[f.trader_id] = cached[f.trader_id]
        p.market = market
        settled = position_settle(p, f.qty if f.side == Side.BUY else -f.qty, f.price)
        if settled.reason == LedgerReason.TRADE:
            if settled.cash:
                changes.postings.append(
                    Posting(
                        f.trader_id, market.quote, mode, settled.cash, settled.reason,
                        f"order:{f.order_id}",
                    )
                )  # fmt: skip
        else:
            realized[f.trader_id] += settled.cash
    for trader_id, amount in realized.items():
        if amount:
            changes.postings.append(
                Posting(
                    trader_id,
                    market.quote,
                    mode,
                    amount,
                    LedgerReason.REALIZED_PNL,
                    f"market:{market.symbol}",
                )
            )
    return list(moved.values())


def _emit_on_commit(
    *,
    market: Market,
    mode: str,
    seq: int,
    result: eng.MatchResult | None,
    orders: list[tuple[Order, dict]],
    trades: list[Trade],
    fills: list[Fill],
    balances: list[Balance],
    positions: list[Position],
    deltas: tuple[dict[int, int], dict[int, int]] | None = None,
    known: Iterable[User] = (),
    into: _Events | None = None,
) -> None:
    """Build every event payload now (inside the transaction, from what it wrote) and
    send them once it commits, in a fixed order: book, trades, then private events.
    `into`: add them to the events of a batch of orders, sent together; otherwise they
    are sent on their own."""
    symbol = market.symbol
    tick, lot = market.tick_size, market.lot_size
    bid_deltas, ask_deltas = deltas if deltas else (result.bid_deltas, result.ask_deltas)
    book_event = None
    if bid_deltas or ask_deltas:
        book_event = {
            "bids": [
                [dec(p * tick), dec(q * lot)] for p, q in sorted(bid_deltas.items(), reverse=True)
            ],
            "asks": [[dec(p * tick), dec(q * lot)] for p, q in sorted(ask_deltas.items())],
        }
    trade_events = [trade_dict(t) for t in trades]
    # Private events go to trading accounts only: system accounts have no channel.
    trader_uuid = public_trader_ids(
        {o.trader_id for o, _ in orders} | {f.trader_id for f in fills}, known=known
    )
    order_events = [(trader_uuid[o.trader_id], p) for o, p in orders if o.trader_id in trader_uuid]
    fill_events = [
        (trader_uuid[f.trader_id], fill_dict(f, symbol))
        for f in fills
        if f.trader_id in trader_uuid
    ]
    position_events = [(p.trader_id, p.pk) for p in positions]
    balance_list = [b for b in balances if b.trader_id in trader_uuid]

    def send_each() -> None:
        if book_event is not None:
            signals.book_changed.send(
                sender=Market, market=symbol, mode=mode, seq=seq, **book_event
            )
        for t in trade_events:
            signals.trade_executed.send(sender=Market, market=symbol, mode=mode, trade=t)
        for trader_id, payload in order_events:
            signals.order_updated.send(sender=Order, trader_id=trader_id, order=payload)
        for trader_id, payload in fill_events:
            signals.fill_created.send(sender=Fill, trader_id=trader_id, fill=payload)

    events = into if into is not None else _Events(market, mode)
    events.sends.append(send_each)
    if book_event is not None:
        events.seqs.append(seq)
    events.positions.update(position_events)
    events.balance_rows.update({(b.trader_id, b.asset, b.mode): b for b in balance_list})
    if into is None:
        events.send_on_commit()


@dataclass
class _Events:
    """The events of a batch of orders: each order's book, trade, order and fill events
    in turn, then one position and one balance event for everything they moved (each
    position and balance is sent as the batch left it)."""

    market: Market
    mode: str
    sends: list[Callable[[], None]] = field(default_factory=list)
    # The book's seq after each send that changed it.
    seqs: list[int] = field(default_factory=list)
    positions: set[tuple[int, int]] = field(default_factory=set)
    # The moved positions as shown, per trader, if the batch could tell (else the
    # receivers read them).
    positions_shown: dict[int, dict] | None = None
    balance_rows: dict[tuple[int, str, str], Balance] = field(default_factory=dict)

    def send_on_commit(self) -> None:
        if not self.sends:
            return
        book = (self.market.symbol, self.mode)
        first = self.seqs[0] if self.seqs else None
        last = self.seqs[-1] if self.seqs else None

        def send() -> None:
            with signals.in_commit_order(book, first, last), signals.events_of_one_commit():
                for send_each in self.sends:
                    send_each()
                if self.positions:
                    signals.position_updated.send(
                        sender=Position,
                        market=self.market.symbol,
                        mode=self.mode,
                        position_ids=sorted(self.positions),
                        shown=self.positions_shown,
                    )
                if self.balance_rows:
                    balances_changed.send(sender=Balance, balances=list(self.balance_rows.values()))

        # Delivery is best effort and the orders are committed: a receiver's failure is
        # logged, never raised into the code that placed them.
        transaction.on_commit(send, robust=True)


# -- cancels ------------------------------------------------------------------------


def orders_cancel_in_book(book: Book, orders: list[Order], reason: str) -> list[Order]:
    """Cancel open `orders` of one locked book: off the engine, reservations released,
    one book delta, events on commit."""
    if not orders:
        return []
    engine = engine_book_take(book)
    market = book.market
    now = timezone.now()
    changes = _ChangeSet()
    bid_deltas: dict[int, int] = {}
    ask_deltas: dict[int, int] = {}
    for order in orders:
        removed = engine.cancel(order.pk)
        if removed is not None:
            resting, level_total = removed
            (bid_deltas if resting.side == eng.BUY else ask_deltas)[resting.price] = level_total
        else:
            log.warning("order %s was open in the database but not on the book", order.pk)
            t = to_ticks(order.price, market)
            side_deltas = bid_deltas if order.side == Side.BUY else ask_deltas
            side_deltas[t] = engine.level_qty(order.side, t)
        _mark_canceled(order, reason, now, changes)
    keys = list(changes.lock_deltas)
    locked = balances_lock(keys)
    for key, delta in changes.lock_deltas.items():
        locked[key].locked += delta
    sql.update(locked.values(), ["locked"])
    sql.update(orders, ["status", "reserved", "cancel_reason", "updated_at"])
    book.seq += 1
    sql.update([book], ["seq"])
    seq = book.seq
    engine_book_return_on_commit(book, engine, seq)
    _emit_on_commit(
        market=market,
        mode=book.mode,
        seq=seq,
        result=None,
        orders=[(o, order_dict(o, market.symbol)) for o in orders],
        trades=[],
        fills=[],
        balances=list(locked.values()),
        positions=[],
        deltas=(bid_deltas, ask_deltas),
    )
    return orders


def orders_shrinking_cleared(*, book: Book, positions: Iterable[Position]) -> list[Order]:
    """Cancel the resting orders of `book` that could now only grow these positions
    (reduce-only orders and covered option sells on the side that no longer shrinks
    them), after positions moved outside the order path (auto-deleverage). The order
    path clears them itself (`_reduce_only_cleared`). The caller holds the book's lock."""
    wrong = Q()
    for p in positions:
        for side in (Side.BUY, Side.SELL):
            if _only_grows(side, p.size):
                wrong |= Q(trader_id=p.trader_id, side=side)
    if not wrong:
        return []
    market = book.market
    found = Order.objects.filter(
        wrong, market_id=book.market_id, mode=book.mode, status__in=OPEN_STATUSES
    ).order_by("id")
    gone = [o for o in found if shrinks_only(market, o.side, o.reduce_only, o.reserved)]
    for reason in ("REDUCE_ONLY", "UNCOVERED"):
        orders_cancel_in_book(book, [o for o in gone if _reduce_only_reason(o) == reason], reason)
    return gone


@retrying
def order_cancel(*, trader: User, order_id: int) -> dict[str, Any]:
    found = (
        Order.objects.filter(pk=order_id, trader=trader).values_list("market_id", "mode").first()
    )
    if found is None:
        raise NotFound("order")
    market_id, mode = found
    with transaction.atomic():
        book = book_lock(market_id=market_id, mode=mode)
        # Read under the book lock: a fill that raced us has either happened or not.
        order = Order.objects.get(pk=order_id)
        if order.status not in OPEN_STATUSES:
            raise ExchangeError(
                "ORDER_NOT_OPEN", f"order {order_id} is {order.status}", status_code=400
            )
        orders_cancel_in_book(book, [order], "USER")
        return order_dict(order, book.market.symbol)


@retrying
def orders_cancel_all(
    *,
    trader: User | None,
    mode: str | None = None,
    market: str | None = None,
    reason: str = "USER",
) -> list[int]:
    """Cancel open orders (of one trader, or everyone's when trader is None), book by
    book in book-pk order. Returns the cancelled ids."""
    filters = Q(status__in=OPEN_STATUSES)
    if trader is not None:
        filters &= Q(trader=trader)
    if mode:
        filters &= Q(mode=mode)
    if market:
        filters &= Q(market__symbol=market)
    books = sorted(set(Order.objects.filter(filters).values_list("market_id", "mode")))
    canceled: list[int] = []
    with transaction.atomic():
        for market_id, book_mode in books:
            book = book_lock(market_id=market_id, mode=book_mode)
            orders = list(
                Order.objects.filter(filters, market_id=market_id, mode=book_mode).order_by("id")
            )
            canceled += [o.pk for o in orders_cancel_in_book(book, orders, reason)]
    return canceled
