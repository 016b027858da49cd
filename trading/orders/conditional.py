"""Conditional orders (stop and take-profit): held off the book until their trigger is
crossed, then placed through the same stages as any order.

  order_hold      a STOP_* / TAKE_PROFIT_* order: checked as its market order or limit
                  order would be (shape, trigger on the grid, not already crossed),
                  stored UNTRIGGERED; it reserves nothing and is not on the book
  triggers_fire   the clock's sweep (every 50 ms): the orders whose trigger the mark
                  (MARK) or the last trade (LAST) has crossed, each placed in its own
                  transaction under its book's lock, where it is found still UNTRIGGERED
                  or left alone: a trigger fires once, and one not yet fired when the
                  process stops fires at the next sweep of any clock
  a refusal       when the triggered order is placed (bands, margin, reduce-only with
                  nothing to reduce) leaves it REJECTED with the refusal's code as its
                  cancelReason, and the trader is told on the trader channel

The rule of a trigger is `request.fires`: a stop buys as the price rises to it and sells
as it falls to it; a take-profit the other way round.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from dexsite.db import retrying
from dexsite.errors import ExchangeError
from trading.emit import Emitter
from trading.models import (
    STOP_TYPES,
    Attached,
    Book,
    MarketKind,
    MarketStatus,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TriggerBy,
)
from trading.orders.request import (
    OrderRequest,
    engine_tif,
    exec_type,
    market_open_check,
    min_notional_check,
    order_shape,
    trailing_check,
    trailing_trigger,
    trigger_check,
)
from trading.presenters import order_dict
from trading.services.books import book_lock

log = logging.getLogger(__name__)


def order_hold(symbol: str, mode: str, request: OrderRequest) -> dict[str, Any]:
    """Store a conditional order, UNTRIGGERED: the order as the API shows it."""
    try:
        return _hold(symbol, mode, request)
    except IntegrityError:
        # Two requests with one clientOrderId raced; the unique constraint let one in.
        found = Order.objects.filter(
            trader=request.trader, client_order_id=request.client_order_id
        ).first()
        if request.client_order_id and found is not None:
            return order_dict(found, symbol)
        raise


@retrying
def _hold(symbol: str, mode: str, request: OrderRequest) -> dict[str, Any]:
    with transaction.atomic():
        # Under the book's lock, as every write to its orders: a trigger sweep or a
        # cancel-all of this book sees the order whole or not at all.
        order = _hold_in(_book_locked(symbol, mode), request)
        return order_dict(order, symbol, [])


def _book_locked(symbol: str, mode: str) -> Book:
    try:
        return book_lock(symbol=symbol, mode=mode)
    except Book.DoesNotExist:
        raise ExchangeError("UNKNOWN_MARKET", f"no market {symbol}", field="market") from None


def _hold_in(book: Book, request: OrderRequest, attached: str = "") -> Order:
    """Check and store a conditional order on its locked book; its event on commit."""
    market, mode = book.market, book.mode
    market_open_check(market, risk_engine=False)
    waiting = Order.objects.filter(
        trader=request.trader, mode=mode, status=OrderStatus.UNTRIGGERED
    ).count()
    if waiting >= settings.CONDITIONAL_ORDERS_MAX:
        # Each reserves nothing, but every one is read by every sweep: an account could
        # otherwise slow everyone's stops with orders that cost it nothing.
        raise ExchangeError(
            "TOO_MANY_CONDITIONAL_ORDERS",
            f"at most {settings.CONDITIONAL_ORDERS_MAX} conditional orders may wait per mode",
            field="type",
        )
    trades_as = exec_type(request.type)
    order_shape(
        market,
        type=trades_as,
        qty=request.qty,
        price=request.price,
        tif=request.tif,
        reduce_only=request.reduce_only,
    )
    price_now = _price_now(book, request.trigger_by)
    extreme = None
    if request.type == OrderType.TRAILING_STOP_MARKET:
        trailing_check(
            market, trigger_price=request.trigger_price, callback_rate=request.callback_rate
        )
        if price_now is None:
            raise ExchangeError(
                "NO_PRICE", f"{market.symbol} has no price yet for a trailing stop to follow"
            )
        extreme = price_now
        request.trigger_price = trailing_trigger(
            market, side=request.side, extreme=extreme, rate=request.callback_rate
        )
    trigger_check(
        market,
        type=request.type,
        side=request.side,
        trigger_price=request.trigger_price,
        price_now=price_now,
    )
    # Its value at the price it would trade at: its limit, or its trigger.
    at = request.price if trades_as == OrderType.LIMIT else request.trigger_price
    min_notional_check(market, notional=at * request.qty, market_order=False, whole=True)
    now = timezone.now()
    spot_sell = market.kind == MarketKind.SPOT and request.side == Side.SELL
    order = Order.objects.create(
        trader=request.trader,
        market=market,
        mode=mode,
        side=request.side,
        type=request.type,
        time_in_force=engine_tif(request),
        price=request.price,
        qty=request.qty,
        status=OrderStatus.UNTRIGGERED,
        reduce_only=request.reduce_only,
        client_order_id=request.client_order_id,
        reserved=Decimal(0),
        reserve_asset=market.base if spot_sell else market.quote,
        trigger_price=request.trigger_price,
        trigger_by=request.trigger_by,
        callback_rate=request.callback_rate if extreme is not None else None,
        trail_extreme=extreme,
        attached=attached,
        source=request.source,
        created_at=now,
        updated_at=now,
    )
    events = Emitter(mode)
    events.known[request.trader.pk] = request.trader
    events.changed(market, orders=[(order, None)])
    events.send_on_commit()
    return order


def _price_now(book: Book, trigger_by: str) -> Decimal | None:
    """The price a trigger watches: the last trade, or the mark (the index on spot)."""
    market = book.market
    if trigger_by == TriggerBy.LAST:
        return book.last_price
    return book.mark_price or market.mark_price or market.index_price


def triggers_due() -> list[int]:
    """The UNTRIGGERED orders whose trigger the price has crossed, oldest first (one
    statement; the partial index `order_untriggered` keeps it to the orders waiting)."""
    books = Book.objects.filter(market_id=OuterRef("market_id"), mode=OuterRef("mode"))
    mark = Coalesce(
        Subquery(books.values("mark_price")[:1]), F("market__mark_price"), F("market__index_price")
    )
    last = Subquery(books.values("last_price")[:1])
    rising = Q(type__in=STOP_TYPES, side=Side.BUY) | Q(
        type__in=[OrderType.TAKE_PROFIT_MARKET, OrderType.TAKE_PROFIT_LIMIT], side=Side.SELL
    )
    due = (
        # A paused market's triggers wait for it to resume (its orders would be refused).
        Order.objects.filter(status=OrderStatus.UNTRIGGERED, market__status=MarketStatus.ACTIVE)
        .annotate(watched=Case(When(trigger_by=TriggerBy.LAST, then=last), default=mark))
        .filter(
            (rising & Q(watched__gte=F("trigger_price")))
            | (~rising & Q(watched__lte=F("trigger_price")))
        )
        .order_by("id")
    )
    return list(due.values_list("id", flat=True))


def triggers_fire() -> list[tuple[int, str]]:
    """Place every order whose trigger has been crossed (trailing stops' triggers moved
    first): (id, outcome) each, where the outcome is PLACED, GONE (cancelled or fired
    meanwhile) or the refusal's code."""
    trailing_follow()
    return [(order_id, order_trigger(order_id)) for order_id in triggers_due()]


def trailing_follow() -> int:
    """Move each waiting trailing stop's trigger after the price it watches, where that
    price has gone its way (up for a sell, down for a buy) since the last look; the
    trigger never moves back. Returns how many moved."""
    trailing = list(
        Order.objects.filter(
            status=OrderStatus.UNTRIGGERED,
            type=OrderType.TRAILING_STOP_MARKET,
            market__status=MarketStatus.ACTIVE,
        ).select_related("market")
    )
    if not trailing:
        return 0
    books = {
        (b.market_id, b.mode): b
        for b in Book.objects.filter(market_id__in={o.market_id for o in trailing})
    }
    now = timezone.now()
    moved = 0
    for order in trailing:
        book = books[(order.market_id, order.mode)]
        book.market = order.market
        price = _price_now(book, order.trigger_by)
        if price is None or order.trail_extreme is None:
            continue
        gone_its_way = (
            price > order.trail_extreme if order.side == Side.SELL else price < order.trail_extreme
        )
        if not gone_its_way:
            continue
        trigger = trailing_trigger(
            order.market, side=order.side, extreme=price, rate=order.callback_rate
        )
        # Only while it waits: a cancel or a fire under the book's lock wins.
        moved += Order.objects.filter(pk=order.pk, status=OrderStatus.UNTRIGGERED).update(
            trail_extreme=price, trigger_price=trigger, updated_at=now
        )
    return moved


class TriggerGone(Exception):
    """The order is no longer UNTRIGGERED (cancelled, or fired by another sweep)."""


def order_trigger(order_id: int) -> str:
    """Place one conditional order whose trigger fired, through the order path."""
    from trading.orders.place import place_triggered

    order = Order.objects.select_related("market", "trader").filter(pk=order_id).first()
    if order is None or order.status != OrderStatus.UNTRIGGERED:
        return "GONE"
    qty = order.qty
    if order.attached:
        # A position's TP/SL closes the position as it is now.
        size = _position_size(order)
        if not _reduces(order.side, size):
            _attached_cancel([order_id], "POSITION_CLOSED")
            return "GONE"
        qty = abs(size)
    request = OrderRequest(
        trader=order.trader,
        side=order.side,
        type=order.type,
        qty=qty,
        price=order.price,
        tif=order.time_in_force,
        reduce_only=order.reduce_only,
        client_order_id=order.client_order_id,
        source=order.source,
        trigger_price=order.trigger_price,
        trigger_by=order.trigger_by,
        triggered=order,
    )
    try:
        place_triggered(order.market.symbol, order.mode, request)
    except TriggerGone:
        return "GONE"
    except ExchangeError as e:
        _reject(order_id, e.code)
        return e.code
    if order.attached:
        # One cancels the other: the position's other TP/SL goes.
        others = Order.objects.filter(
            trader_id=order.trader_id,
            market_id=order.market_id,
            mode=order.mode,
            status=OrderStatus.UNTRIGGERED,
        ).exclude(attached="")
        _attached_cancel(list(others.values_list("id", flat=True)), "OCO")
    return "PLACED"


def _position_size(order: Order) -> Decimal:
    found = Position.objects.filter(
        trader_id=order.trader_id, market_id=order.market_id, mode=order.mode
    ).values_list("size", flat=True)
    return found.first() or Decimal(0)


def _reduces(side: str, size: Decimal) -> bool:
    """Whether an order of `side` shrinks a position of `size`."""
    return size > 0 if side == Side.SELL else size < 0


@retrying
def _attached_cancel(order_ids: list[int], reason: str) -> None:
    """Cancel waiting orders (a position's TP/SL), book by book under its lock."""
    from trading.orders.cancel import orders_cancel_in_book

    with transaction.atomic():
        rows = Order.objects.filter(pk__in=order_ids).values_list("market_id", "mode").distinct()
        for market_id, mode in sorted(set(rows)):
            book = book_lock(market_id=market_id, mode=mode)
            waiting = Order.objects.filter(
                pk__in=order_ids, market_id=market_id, mode=mode, status=OrderStatus.UNTRIGGERED
            ).order_by("id")
            orders_cancel_in_book(book, list(waiting), reason)


def tpsl_tidy() -> list[int]:
    """Cancel the TP/SL orders whose position has closed or turned (POSITION_CLOSED), so
    that none outlives its position: the clock's job, once a second."""
    size = Subquery(
        Position.objects.filter(
            trader_id=OuterRef("trader_id"), market_id=OuterRef("market_id"), mode=OuterRef("mode")
        ).values("size")[:1]
    )
    stale = (
        Order.objects.filter(status=OrderStatus.UNTRIGGERED)
        .exclude(attached="")
        .annotate(size=Coalesce(size, Decimal(0)))
        .filter(Q(side=Side.SELL, size__lte=0) | Q(side=Side.BUY, size__gte=0))
    )
    ids = list(stale.values_list("id", flat=True))
    if ids:
        _attached_cancel(ids, "POSITION_CLOSED")
    return ids


UNSET: Any = object()


def position_tpsl_set(
    *,
    trader: Any,
    symbol: str,
    mode: str,
    take_profit: Decimal | None = UNSET,
    stop_loss: Decimal | None = UNSET,
    trigger_by: str = TriggerBy.MARK,
) -> dict[str, Any]:
    """Set (a price), remove (None) or leave (UNSET) the take-profit and the stop-loss of
    the trader's position: market orders that close the whole position when the watched
    price reaches them. The position's TP and SL as they now are, as orders (or None)."""
    return _tpsl_set(trader, symbol, mode, take_profit, stop_loss, trigger_by)


@retrying
def _tpsl_set(trader, symbol, mode, take_profit, stop_loss, trigger_by) -> dict[str, Any]:
    with transaction.atomic():
        book = _book_locked(symbol, mode)
        size = (
            Position.objects.filter(trader=trader, market=book.market, mode=mode)
            .values_list("size", flat=True)
            .first()
        ) or Decimal(0)
        if size == 0:
            raise ExchangeError(
                "NO_POSITION", f"no open {mode} position in {symbol}", status_code=400
            )
        side = Side.SELL if size > 0 else Side.BUY
        current = {
            o.attached: o
            for o in Order.objects.filter(
                trader=trader, market=book.market, mode=mode, status=OrderStatus.UNTRIGGERED
            ).exclude(attached="")
        }
        from trading.orders.cancel import orders_cancel_in_book

        wanted = [
            (Attached.TAKE_PROFIT, take_profit, OrderType.TAKE_PROFIT_MARKET),
            (Attached.STOP_LOSS, stop_loss, OrderType.STOP_MARKET),
        ]
        for kind, price, type in wanted:
            if price is UNSET:
                continue
            if kind in current:
                orders_cancel_in_book(book, [current.pop(kind)], "USER")
            if price is None:
                continue
            request = OrderRequest(
                trader=trader,
                side=side,
                type=type,
                qty=abs(size),
                price=None,
                tif="IOC",
                reduce_only=True,
                client_order_id=None,
                source="USER",
                trigger_price=price,
                trigger_by=trigger_by,
            )
            try:
                current[kind] = _hold_in(book, request, attached=kind)
            except ExchangeError as e:
                # Named for the field the trader gave.
                field = "takeProfit" if kind == Attached.TAKE_PROFIT else "stopLoss"
                raise ExchangeError(e.code, e.message, field=field) from None
        shown = {k: order_dict(o, symbol) for k, o in current.items()}
        return {
            "takeProfit": shown.get(Attached.TAKE_PROFIT),
            "stopLoss": shown.get(Attached.STOP_LOSS),
        }


def orders_tpsl_arm(order_ids: list[int] | None = None) -> list[int]:
    """Set the position's TP/SL from each order that carries them and has filled (of
    `order_ids`, or every one: the clock's look, each sweep). Returns the orders armed.

    Each order arms once: it is claimed (`tpsl_armed`) in the transaction that sets the
    TP/SL. Where the position is gone (closed again already) or the price has crossed a
    level since the order was placed, that level is not set; the order still arms."""
    pending = Order.objects.filter(tpsl_armed=False, filled_qty__gt=0).filter(
        Q(take_profit__isnull=False) | Q(stop_loss__isnull=False)
    )
    if order_ids is not None:
        pending = pending.filter(pk__in=order_ids)
    armed = []
    for order in pending.select_related("market", "trader").order_by("id"):
        with transaction.atomic():
            if not Order.objects.filter(pk=order.pk, tpsl_armed=False).update(tpsl_armed=True):
                continue  # armed meanwhile by another look
            for field, price in (
                ("take_profit", order.take_profit),
                ("stop_loss", order.stop_loss),
            ):
                if price is None:
                    continue
                try:
                    _tpsl_set(
                        order.trader,
                        order.market.symbol,
                        order.mode,
                        price if field == "take_profit" else UNSET,
                        price if field == "stop_loss" else UNSET,
                        TriggerBy.MARK,
                    )
                except ExchangeError as e:
                    log.info(
                        "order %s: its %s (%s) was not set: %s", order.pk, field, price, e.code
                    )
        armed.append(order.pk)
    return armed


@retrying
def _reject(order_id: int, code: str) -> None:
    """A triggered order the order path refused: REJECTED, with the refusal's code."""
    with transaction.atomic():
        order = Order.objects.select_related("market").get(pk=order_id)
        book_lock(market_id=order.market_id, mode=order.mode)
        order.refresh_from_db(fields=["status"])
        if order.status != OrderStatus.UNTRIGGERED:
            return
        order.status = OrderStatus.REJECTED
        order.cancel_reason = code[:32]
        order.updated_at = timezone.now()
        order.save(update_fields=["status", "cancel_reason", "updated_at"])
        events = Emitter(order.mode)
        events.changed(order.market, orders=[(order, None)])
        events.send_on_commit()
    log.info("conditional order %s refused when triggered: %s", order_id, code)
