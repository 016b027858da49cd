"""The match stage: an admitted order through the engine (`trading.engine`, pure and
in memory), and the reduce-only orders a match leaves unable to reduce anything.
"""

from __future__ import annotations

from decimal import Decimal

from dexsite.errors import ExchangeError
from trading import engine as eng
from trading.models import (
    Order,
    Position,
    Side,
)
from trading.orders.admit import Admitted
from trading.orders.batch import Batch
from trading.orders.fills import ChangeSet, mark_canceled
from trading.orders.persist import orders_of
from trading.orders.request import OrderRequest, engine_tif


def match(batch: Batch, request: OrderRequest, admitted: Admitted) -> eng.MatchResult:
    """The engine's match of an admitted order; a POST_ONLY that would cross or a FOK
    that cannot fill in full is refused, the book unchanged."""
    trader, side = request.trader, request.side
    tif = engine_tif(request)
    # A covered option sell rests as a reduce-only one does: it reserved nothing, so it
    # may only ever sell the long it is covered by. A market order runs as an IOC at
    # its slippage limit, if it has one.
    result = batch.engine.place(
        admitted.provisional,
        trader.pk,
        side,
        admitted.lots,
        admitted.limit,
        tif,
        admitted.reducing,
        admitted.reducible,
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


def reduce_only_cleared(
    batch: Batch, result: eng.MatchResult, moved: list[Position], now, changes: ChangeSet
) -> None:
    """Resting reduce-only orders that could now only grow their owner's position (it
    has closed or turned) leave the book (REDUCE_ONLY), in the order's book delta: the
    book shows no depth that would not trade. (A taker reaching one would find it
    cancelled anyway, see `position_lots`.)"""
    engine = batch.engine
    gone = [
        o
        for p in moved
        for o in engine.reduce_only_resting(p.trader_id)
        if only_grows(o.side, p.size)
    ]
    if not gone:
        return
    rows = orders_of(batch, [o.order_id for o in gone])
    for o in gone:
        _, level_total = engine.cancel(o.order_id)
        (result.bid_deltas if o.side == eng.BUY else result.ask_deltas)[o.price] = level_total
        mark_canceled(rows[o.order_id], reduce_only_reason(rows[o.order_id]), now, changes)


def only_grows(side: str, size: Decimal) -> bool:
    """Whether an order of `side` could only grow (or open) a position of `size`."""
    return size <= 0 if side == Side.SELL else size >= 0


def reduce_only_reason(order: Order) -> str:
    """Why a resting order that may only shrink a position was cancelled: it was
    reduce-only, or a covered option sell whose long is gone."""
    return "REDUCE_ONLY" if order.reduce_only else "UNCOVERED"
