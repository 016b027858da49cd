"""Cancelling orders: off the engine, their reservations released, one book delta,
events on commit; by the trader, for everyone's orders (admin, liquidation), or the
reduce-only orders that can no longer reduce anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dexsite import sql
from dexsite.db import retrying
from dexsite.errors import ExchangeError, NotFound
from ledger.services import balances_lock
from trading import engine as eng
from trading.emit import Emitter
from trading.models import (
    LIVE_STATUSES,
    OPEN_STATUSES,
    Book,
    Market,
    Order,
    OrderStatus,
    Position,
    Side,
)
from trading.orders.batch import Batch
from trading.orders.fills import ChangeSet, mark_canceled
from trading.orders.match import only_grows, reduce_only_reason
from trading.orders.persist import balances_hold, orders_of
from trading.orders.request import CancelRequest
from trading.presenters import order_dict
from trading.services.books import (
    book_lock,
    engine_book_return_on_commit,
    engine_book_take,
    to_ticks,
)

log = logging.getLogger(__name__)


# -- cancels ------------------------------------------------------------------------


def orders_cancel_in_book(book: Book, orders: list[Order], reason: str) -> list[Order]:
    """Cancel open `orders` of one locked book: off the engine, reservations released,
    one book delta, events on commit. Conditional orders waiting for their trigger are
    on no book and reserve nothing: they are only marked."""
    if not orders:
        return []
    waiting = [o for o in orders if o.status == OrderStatus.UNTRIGGERED]
    on_book = [o for o in orders if o.status != OrderStatus.UNTRIGGERED]
    if waiting:
        _waiting_cancel(book, waiting, reason)
    if on_book:
        _on_book_cancel(book, on_book, reason)
    return orders


def _on_book_cancel(book: Book, orders: list[Order], reason: str) -> None:
    engine = engine_book_take(book)
    market = book.market
    now = timezone.now()
    changes = ChangeSet()
    deltas = _off_engine(engine, market, orders)
    for order in orders:
        mark_canceled(order, reason, now, changes)
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
    events = Emitter(book.mode)
    events.changed(market, seq=seq, deltas=deltas, orders=[(o, None) for o in orders])
    events.paid(locked.values())
    events.send_on_commit()


def _off_engine(
    engine: eng.OrderBook, market: Market, orders: list[Order]
) -> tuple[dict[int, int], dict[int, int]]:
    """Take resting `orders` off the engine book: the book's deltas (bids, asks), each
    level's lots as they leave it."""
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
    return bid_deltas, ask_deltas


def _waiting_cancel(book: Book, orders: list[Order], reason: str) -> None:
    _waiting_mark(orders, reason, timezone.now())
    sql.update(orders, ["status", "cancel_reason", "updated_at"])
    events = Emitter(book.mode)
    events.changed(book.market, orders=[(o, None) for o in orders])
    events.send_on_commit()


def _waiting_mark(orders: list[Order], reason: str, now) -> None:
    """Conditional orders waiting for their trigger, cancelled: on no book, they reserve
    nothing."""
    for order in orders:
        order.status = OrderStatus.CANCELED
        order.cancel_reason = reason
        order.updated_at = now


def cancel_in(batch: Batch, request: CancelRequest) -> Callable[[], dict[str, Any]]:
    """Cancel one of a trader's orders in a batch's transaction, among the batch's
    placings (a matcher's batch): refused (NOT_FOUND, ORDER_NOT_OPEN) before it changes
    anything, as `order_cancel` refuses; otherwise taken off the engine, its reservation
    released on the batch's balance row, the book's seq moved, all written with the
    batch. Returns what to call once the batch is written: the order as the API shows
    it (its events go with the batch's)."""
    book = batch.book
    market = book.market
    order = orders_of(batch, [request.order_id]).get(request.order_id)
    if (
        order is None
        or order.trader_id != request.trader.pk
        or (order.market_id, order.mode) != (book.market_id, book.mode)
    ):
        raise NotFound("order")
    if order.status not in LIVE_STATUSES:
        raise ExchangeError(
            "ORDER_NOT_OPEN", f"order {order.pk} is {order.status}", status_code=400
        )
    now = timezone.now()
    seq, deltas = None, None
    if order.status == OrderStatus.UNTRIGGERED:
        _waiting_mark([order], "USER", now)
    else:
        deltas = _off_engine(batch.engine, market, [order])
        changes = ChangeSet()
        mark_canceled(order, "USER", now, changes)
        keys = set(changes.lock_deltas)
        balances_hold(batch.held, keys)
        for key, delta in changes.lock_deltas.items():
            batch.held[key].locked += delta
        batch.changed_balances |= keys
        batch.mutated = True
        book.seq += 1
        batch.book_fields.add("seq")
        seq = book.seq
    batch.changed_orders[order.pk] = order
    payload = order_dict(order, market.symbol)

    def finish() -> dict[str, Any]:
        batch.events.known[request.trader.pk] = request.trader
        batch.events.changed(market, seq=seq, deltas=deltas, orders=[(order, payload)])
        return payload

    return finish


def orders_shrinking_cleared(*, book: Book, positions: Iterable[Position]) -> list[Order]:
    """Cancel the resting orders of `book` that could now only grow these positions
    (reduce-only orders and covered option sells on the side that no longer shrinks
    them), after positions moved outside the order path (auto-deleverage). The order
    path clears them itself (`reduce_only_cleared`). The caller holds the book's lock."""
    wrong = Q()
    for p in positions:
        for side in (Side.BUY, Side.SELL):
            if only_grows(side, p.size):
                wrong |= Q(trader_id=p.trader_id, side=side)
    if not wrong:
        return []
    found = Order.objects.filter(
        wrong, market_id=book.market_id, mode=book.mode, status__in=OPEN_STATUSES
    ).order_by("id")
    gone = [o for o in found if o.shrinks_only]
    for reason in ("REDUCE_ONLY", "UNCOVERED"):
        orders_cancel_in_book(book, [o for o in gone if reduce_only_reason(o) == reason], reason)
    return gone


@retrying
def order_cancel(*, trader: AbstractBaseUser, order_id: int) -> dict[str, Any]:
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
        if order.status not in LIVE_STATUSES:
            raise ExchangeError(
                "ORDER_NOT_OPEN", f"order {order_id} is {order.status}", status_code=400
            )
        orders_cancel_in_book(book, [order], "USER")
        return order_dict(order, book.market.symbol)


@retrying
def orders_cancel_all(
    *,
    trader: AbstractBaseUser | None,
    mode: str | None = None,
    market: str | None = None,
    reason: str = "USER",
    conditional: bool = True,
) -> list[int]:
    """Cancel open orders (of one trader, or everyone's when trader is None), book by
    book in book-pk order, and the conditional orders waiting for their trigger unless
    `conditional` is false. Returns the cancelled ids."""
    filters = Q(status__in=LIVE_STATUSES if conditional else OPEN_STATUSES)
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
