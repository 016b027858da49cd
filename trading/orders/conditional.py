"""Conditional orders (stop and take-profit): held off the book until their trigger is
crossed, then placed through the same stages as any order.

  order_hold      a STOP_* / TAKE_PROFIT_* order: checked as its market order or limit
                  order would be (shape, trigger on the grid, not already crossed),
                  stored UNTRIGGERED; it reserves nothing and is not on the book
  triggers_fire   the clock's sweep (every 100 ms): the orders whose trigger the mark
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

from django.db import IntegrityError, transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from dexsite.db import retrying
from dexsite.errors import ExchangeError
from trading.emit import Emitter
from trading.models import (
    Book,
    MarketKind,
    Order,
    OrderStatus,
    OrderType,
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
        try:
            book = book_lock(symbol=symbol, mode=mode)
        except Book.DoesNotExist:
            raise ExchangeError("UNKNOWN_MARKET", f"no market {symbol}", field="market") from None
        market = book.market
        market_open_check(market, risk_engine=False)
        trades_as = exec_type(request.type)
        order_shape(
            market,
            type=trades_as,
            qty=request.qty,
            price=request.price,
            tif=request.tif,
            reduce_only=request.reduce_only,
        )
        trigger_check(
            market,
            type=request.type,
            side=request.side,
            trigger_price=request.trigger_price,
            price_now=_price_now(book, request.trigger_by),
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
            source=request.source,
            created_at=now,
            updated_at=now,
        )
        events = Emitter(mode)
        events.known[request.trader.pk] = request.trader
        events.changed(market, orders=[(order, None)])
        events.send_on_commit()
        return order_dict(order, symbol, [])


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
    rising = Q(type__in=[OrderType.STOP_MARKET, OrderType.STOP_LIMIT], side=Side.BUY) | Q(
        type__in=[OrderType.TAKE_PROFIT_MARKET, OrderType.TAKE_PROFIT_LIMIT], side=Side.SELL
    )
    due = (
        Order.objects.filter(status=OrderStatus.UNTRIGGERED)
        .annotate(watched=Case(When(trigger_by=TriggerBy.LAST, then=last), default=mark))
        .filter(
            (rising & Q(watched__gte=F("trigger_price")))
            | (~rising & Q(watched__lte=F("trigger_price")))
        )
        .order_by("id")
    )
    return list(due.values_list("id", flat=True))


def triggers_fire() -> list[tuple[int, str]]:
    """Place every order whose trigger has been crossed: (id, outcome) each, where the
    outcome is PLACED, GONE (cancelled or fired meanwhile) or the refusal's code."""
    return [(order_id, order_trigger(order_id)) for order_id in triggers_due()]


class TriggerGone(Exception):
    """The order is no longer UNTRIGGERED (cancelled, or fired by another sweep)."""


def order_trigger(order_id: int) -> str:
    """Place one conditional order whose trigger fired, through the order path."""
    from trading.orders.place import place_triggered

    order = Order.objects.select_related("market", "trader").filter(pk=order_id).first()
    if order is None or order.status != OrderStatus.UNTRIGGERED:
        return "GONE"
    request = OrderRequest(
        trader=order.trader,
        side=order.side,
        type=order.type,
        qty=order.qty,
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
    return "PLACED"


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
