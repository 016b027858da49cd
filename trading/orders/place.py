"""Placing orders: the orchestration of the stages, in one transaction per book.

  order_place / orders_place_many
    -> batch_open    (persist: lock the book and the takers' balance rows, read them)
    -> per order, `_place_in`:
         admit       (request + gate: refused here, nothing has changed)
         match       (the engine, in memory)
         record      (settle the fills into the batch, in memory)
    -> batch_write   (persist: every row the orders changed, once)
    -> _batch_finish (emit: the events, sent once the transaction commits)

Orders that threads of this process place (or cancel) on one book at the same time
share one transaction (`_group`, `trading.services.group_commit`); each is acknowledged
only once it has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from itertools import groupby
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import DataError, IntegrityError, transaction

from dexsite.db import RETRYABLE_PGCODES, retrying
from dexsite.errors import ExchangeError
from trading.models import (
    CONDITIONAL_TYPES,
    OPEN_STATUSES,
    Order,
    OrderStatus,
    TimeInForce,
    TriggerBy,
)
from trading.orders.admit import admit
from trading.orders.batch import Batch, positions_shown
from trading.orders.cancel import cancel_in, order_cancel, orders_cancel_in_book
from trading.orders.conditional import TriggerGone, order_hold, orders_tpsl_arm
from trading.orders.match import match
from trading.orders.persist import batch_open, batch_write
from trading.orders.record import MakersCannotCarry, record
from trading.orders.request import CancelRequest, OrderRequest
from trading.presenters import fill_dict, order_dict
from trading.services.books import (
    book_lock,
)
from trading.services.group_commit import GroupCommit

log = logging.getLogger(__name__)


def order_place(
    *,
    trader: AbstractBaseUser,
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
    trigger_price: Decimal | None = None,
    trigger_by: str = TriggerBy.MARK,
    take_profit: Decimal | None = None,
    stop_loss: Decimal | None = None,
    callback_rate: Decimal | None = None,
) -> tuple[dict[str, Any], bool]:
    """Place an order. Returns (the order as the API shows it, created?). A repeated
    clientOrderId returns the first order and created=False.

    A conditional order (STOP_*, TAKE_PROFIT_*, with `trigger_price`) is held until its
    trigger is crossed (`trading.orders.conditional`). `take_profit` and `stop_loss`
    become the position's TP/SL once the order fills (`orders_tpsl_arm`).

    `source` LIQUIDATION marks the risk engine's own orders: they may trade in a paused
    market, are exempt from the minimum notional, and their trades are flagged on the
    public tape.

    Orders that callers on several threads of this process place on one book at the
    same time are matched one after another in one transaction (group commit, see
    `group_commit`): each is acknowledged only once that transaction has committed."""
    if client_order_id:
        existing = order_by_client_id(trader, client_order_id)
        if existing is not None:
            return existing, False
    request = OrderRequest(
        trader=trader,
        side=side,
        type=type,
        qty=qty,
        price=price,
        tif=time_in_force,
        reduce_only=reduce_only,
        client_order_id=client_order_id,
        source=source,
        take_profit=take_profit,
        stop_loss=stop_loss,
    )
    if type in CONDITIONAL_TYPES and (take_profit is not None or stop_loss is not None):
        raise ExchangeError(
            "INVALID_TYPE",
            f"a {type} order takes no takeProfit or stopLoss: attach them to its position",
            field="takeProfit" if take_profit is not None else "stopLoss",
        )
    if type in CONDITIONAL_TYPES:
        request.trigger_price, request.trigger_by = trigger_price, trigger_by or TriggerBy.MARK
        request.callback_rate = callback_rate
        return order_hold(market, mode, request), True
    if callback_rate is not None:
        raise ExchangeError(
            "INVALID_CALLBACK_RATE",
            f"a {type} order takes no callbackRate",
            field="callbackRate",
        )
    if trigger_price is not None:
        raise ExchangeError(
            "INVALID_TRIGGER_PRICE", f"a {type} order takes no triggerPrice", field="triggerPrice"
        )
    if (
        settings.ORDER_GROUP_MAX > 1
        and source == "USER"
        and not transaction.get_connection().in_atomic_block
    ):
        placed = _group.place((market, mode), request)
    else:
        placed = _place_alone(market, mode, request)
    _tpsl_arm(placed)
    return placed


def order_cancel_on(
    *, trader: AbstractBaseUser, order_id: int, market: str, mode: str
) -> dict[str, Any]:
    """Cancel a trader's order on its book (`market`, `mode`): in the book's next
    transaction with the placings and cancels that other threads of this process send it
    at the same time (`_group`), or alone inside a caller's transaction."""
    if settings.ORDER_GROUP_MAX > 1 and not transaction.get_connection().in_atomic_block:
        return _group.place((market, mode), CancelRequest(trader, order_id, market, mode))
    return order_cancel(trader=trader, order_id=order_id)


def orders_place_many(
    *, trader: AbstractBaseUser, orders: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], bool] | ExchangeError]:
    """Place a trader's list of orders (`order_place`'s arguments, without `trader`),
    each on its own: per order, (the order, created?) or the ExchangeError that refused
    it. Consecutive orders of one book share a transaction, as a group (`_group`) does;
    each ends as if placed alone, in the list's order. A fault is raised."""
    results = orders_place_each([(trader, o) for o in orders])
    for outcome in results:
        if isinstance(outcome, BaseException) and not isinstance(outcome, ExchangeError):
            raise outcome
    return results


def orders_place_each(
    items: list[tuple[AbstractBaseUser, dict[str, Any]] | CancelRequest],
) -> list[tuple[dict[str, Any], bool] | dict[str, Any] | BaseException]:
    """`orders_place_many` for orders of any traders, and cancels among them (the
    matcher's requests, as they came), each ending as if carried out alone, in turn:
    per (trader, order), (the order, created?); per CancelRequest, the order cancelled;
    or the ExchangeError that refused it, or the fault that failed it (logged). Runs of
    placings and cancels of one book share a transaction; an order held for its trigger,
    or a clientOrderId already used, is answered at its turn, after the items before it
    are carried out."""
    results: list[Any] = [None] * len(items)
    pending: list[tuple[int, tuple[str, str], OrderRequest | CancelRequest]] = []

    def carry_out() -> None:
        for (market, mode), run in groupby(pending, key=lambda p: p[1]):
            run = list(run)
            outcomes = _place_together(market, mode, [r for _, _, r in run])
            for (i, _, request), outcome in zip(run, outcomes, strict=True):
                results[i] = outcome
                if isinstance(outcome, ExchangeError):
                    continue
                if isinstance(outcome, BaseException):
                    log.error("a request on %s failed", market, exc_info=outcome)
                elif isinstance(request, OrderRequest):
                    _tpsl_arm(outcome)
        pending.clear()

    for i, item in enumerate(items):
        if isinstance(item, CancelRequest):
            pending.append((i, (item.market, item.mode), item))
            continue
        trader, o = item
        cid = o.get("client_order_id")
        existing = order_by_client_id(trader, cid) if cid else None
        if existing is not None:
            if pending:
                # Answered with its order as the items before it leave it (a cancel
                # among them may have cancelled it).
                carry_out()
                existing = order_by_client_id(trader, cid)
            results[i] = (existing, False)
            continue
        if o["type"] in CONDITIONAL_TYPES or (
            o.get("trigger_price") is not None or o.get("callback_rate") is not None
        ):
            # Held, not matched (or refused): nothing of the book's transaction; after
            # the items before it (a cancel among them may free a slot it needs).
            carry_out()
            try:
                results[i] = order_place(trader=trader, **o)
            except ExchangeError as e:
                results[i] = e
            continue
        request = OrderRequest(
            trader=trader,
            side=o["side"],
            type=o["type"],
            qty=o["qty"],
            price=o.get("price"),
            tif=o.get("time_in_force", TimeInForce.GTC),
            reduce_only=o.get("reduce_only", False),
            client_order_id=cid,
            source="USER",
            take_profit=o.get("take_profit"),
            stop_loss=o.get("stop_loss"),
        )
        pending.append((i, (o["market"], o["mode"]), request))
    carry_out()
    return results


def _tpsl_arm(placed: tuple[dict[str, Any], bool]) -> None:
    """An order placed with a take-profit or stop-loss that filled at once: they are the
    position's now (the clock's look arms the ones that fill later, as makers)."""
    order, created = placed
    if created and ("takeProfit" in order or "stopLoss" in order) and order["filledQty"] != "0":
        orders_tpsl_arm([order["id"]])


# How many times an order is placed again after makers it met could not carry their
# fills (`MakersCannotCarry`) before it is refused.
UNCARRIED_RETRIES = 5


def _place_alone(symbol: str, mode: str, request: OrderRequest) -> tuple[dict[str, Any], bool]:
    """Place one order in its own transaction: (the order, created?). Makers that could
    not carry what the order would fill of them (the loss it realizes past their cash)
    are cancelled (`MARGIN`), and the order is placed again against the book left."""
    for _ in range(UNCARRIED_RETRIES):
        try:
            return _place_alone_once(symbol, mode, request)
        except MakersCannotCarry as e:
            _cancel_uncarried(symbol, mode, e.order_ids)
    raise ExchangeError(
        "BOOK_BUSY", "the book kept changing under the order; send it again", status_code=503
    )


@retrying
def _cancel_uncarried(symbol: str, mode: str, order_ids: list[int]) -> None:
    with transaction.atomic():
        book = book_lock(symbol=symbol, mode=mode)
        orders = Order.objects.filter(pk__in=order_ids, status__in=OPEN_STATUSES).order_by("id")
        orders_cancel_in_book(book, list(orders), "MARGIN")


def place_triggered(symbol: str, mode: str, request: OrderRequest) -> dict[str, Any]:
    """Place a conditional order whose trigger fired (`request.triggered`, its row) as any
    order is placed alone; TriggerGone where, once its book is locked, the row is no
    longer UNTRIGGERED (cancelled, or placed by another sweep): it fires once."""
    placed, _ = _place_alone(symbol, mode, request)
    return placed


def _still_untriggered(order: Order) -> bool:
    """Read under the book's lock, which every write to the book's orders takes."""
    status = Order.objects.filter(pk=order.pk).values_list("status", flat=True).first()
    return status == OrderStatus.UNTRIGGERED


@retrying
def _place_alone_once(symbol: str, mode: str, request: OrderRequest) -> tuple[dict[str, Any], bool]:
    try:
        with transaction.atomic():
            batch = batch_open(symbol, mode, [request])
            if request.triggered is not None and not _still_untriggered(request.triggered):
                raise TriggerGone
            try:
                finish = _place_in(batch, request)
            except ExchangeError:
                batch.give_back()
                raise
            batch_write(batch)
            (placed,) = _batch_finish(batch, [finish])
            return placed, True
    except IntegrityError as e:
        # Two requests with one clientOrderId raced; the unique constraint let one in.
        if request.client_order_id:
            existing = order_by_client_id(request.trader, request.client_order_id)
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


def _place_together(
    symbol: str, mode: str, requests: list[OrderRequest | CancelRequest]
) -> list[Any]:
    """Place `requests` (one book), and cancel the orders of its CancelRequests, one
    after another in one transaction. Returns, per request, (its order, created?) for a
    placing, the order for a cancel, or the exception that refused it. A refusal writes
    nothing, so it leaves the others standing; anything else (a deadlock, a constraint,
    a fault) undoes them all, and each is then carried out alone, as if it had come by
    itself."""
    if len(requests) > 1:
        committing = False
        placings = [r for r in requests if isinstance(r, OrderRequest)]
        cancels = [r for r in requests if isinstance(r, CancelRequest)]
        try:
            with transaction.atomic():
                batch = batch_open(symbol, mode, placings, group=True, cancels=cancels)
                outcomes: list[Any] = []
                for request in requests:
                    try:
                        if isinstance(request, CancelRequest):
                            outcomes.append(cancel_in(batch, request))
                        else:
                            outcomes.append(_place_in(batch, request))
                    except ExchangeError as e:
                        if batch.placing:
                            # Refused after it had changed the batch: undo them all.
                            raise RuntimeError("an order was refused half-placed") from e
                        outcomes.append(e)
                batch_write(batch)
                done = iter(_batch_finish(batch, [o for o in outcomes if callable(o)]))
                answers = [
                    o
                    if isinstance(o, ExchangeError)
                    else next(done)
                    if isinstance(r, CancelRequest)
                    else (next(done), True)
                    for r, o in zip(requests, outcomes, strict=True)
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
            if isinstance(request, CancelRequest):
                outcomes.append(order_cancel(trader=request.trader, order_id=request.order_id))
            else:
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


LOCK_NOT_AVAILABLE = "55P03"


# Orders that threads of this process place or cancel on one book at the same time
# share its next transaction (see `group_commit`).
_group = GroupCommit(
    lambda key, requests: _place_together(key[0], key[1], requests),
    lambda: settings.ORDER_GROUP_MAX,
)


def order_by_client_id(trader: AbstractBaseUser, client_order_id: str) -> dict[str, Any] | None:
    order = (
        Order.objects.select_related("market")
        .filter(trader=trader, client_order_id=client_order_id)
        .first()
    )
    if order is None:
        return None
    fills = [fill_dict(f, order.market.symbol) for f in order.fills.order_by("id")]
    return order_dict(order, order.market.symbol, fills)


def _place_in(batch: Batch, request: OrderRequest) -> Callable[[], dict[str, Any]]:
    """Place one order in the batch's transaction: admit it (request, gate), match it,
    record what it changed in the batch. An ExchangeError (the order refused) is raised
    before the order changes anything. Returns what to call once the batch is written:
    it sends the order's events on commit and returns the order as the API shows it."""
    admitted = admit(batch, request)
    result = match(batch, request, admitted)
    # From here on the order is placed: nothing below refuses it.
    batch.mutated = batch.placing = True
    finish = record(batch, request, admitted, result)
    batch.placing = False
    return finish


def _batch_finish(batch: Batch, finishers: list[Callable[[], dict[str, Any]]]) -> list[dict]:
    """After `batch_write`: the placed orders as the API shows them; their events are
    sent together once the transaction commits."""
    placed = [finish() for finish in finishers]
    events = batch.events
    if batch.changed_positions:
        shown = positions_shown(batch)
        events.moved(batch.book.market.symbol, batch.changed_positions.values(), shown)
    events.paid(batch.held[k] for k in sorted(batch.changed_balances))
    events.send_on_commit()
    return placed
