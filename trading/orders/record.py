"""Recording a matched order in its batch: its row, its makers' orders, the settled
fills and positions, the balances they move, the book's seq; and its events, given to
the batch's emitter once the batch is written.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.utils import timezone

from dexsite import sql
from ledger.services import ledger_post
from trading import engine as eng
from trading import risk
from trading.models import (
    MarketKind,
    Order,
    OrderStatus,
    OrderType,
)
from trading.orders.admit import Admitted
from trading.orders.batch import Batch
from trading.orders.fills import ChangeSet, fills_record, mark_canceled, positions_settle
from trading.orders.match import reduce_only_cleared, reduce_only_reason
from trading.orders.persist import balances_hold_or_create, makers_read, orders_of
from trading.orders.request import OrderRequest, engine_tif
from trading.presenters import fill_dict, order_dict


class MakersCannotCarry(Exception):
    """A fill would leave a maker's balance below what it has locked (a loss past its
    cash): the transaction rolls back, and `order_ids`, its orders the taker met, go."""

    def __init__(self, order_ids: list[int]) -> None:
        super().__init__(f"makers' orders {order_ids} cannot carry their fills")
        self.order_ids = order_ids


def record(
    batch: Batch, request: OrderRequest, admitted: Admitted, result: eng.MatchResult
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
        time_in_force=engine_tif(request),
        price=price,
        qty=qty,
        filled_qty=filled_qty,
        filled_notional=sum((f.price * tick * f.qty * lot for f in result.fills), Decimal(0)),
        status=result.status,
        reduce_only=request.reduce_only,
        covered=admitted.reducing and not request.reduce_only,
        client_order_id=request.client_order_id,
        trigger_price=request.trigger_price,
        trigger_by=request.trigger_by,
        take_profit=request.take_profit,
        stop_loss=request.stop_loss,
        reserved=risk.scale_reserve(reserve, qty, qty - filled_qty)
        if result.rested
        else Decimal(0),
        reserve_asset=reserve_asset,
        cancel_reason="" if result.rested or result.status == OrderStatus.FILLED else tif,
        source=request.source,
        created_at=request.triggered.created_at if request.triggered else now,
        updated_at=now,
    )
    if request.exec_type == OrderType.MARKET and order.cancel_reason:
        # Cut short by its slippage limit where the book held more beyond it.
        left = admitted.lots - result.filled
        beyond = admitted.band_limited and (
            engine.sweep(side, left, None, trader.pk, admitted.reducible)[0] > 0
        )
        order.cancel_reason = "PRICE_BAND" if beyond else "MARKET"
    if request.triggered is not None:
        # A conditional order whose trigger fired: its row, written over.
        order.pk = request.triggered.pk
        order._state.adding = False
        batch.changed_orders[order.pk] = order
    else:
        batch.order_add(order)
    batch.orders[order.pk] = order
    if result.rested:
        engine.rekey(admitted.provisional, order.pk)

    changes = ChangeSet()
    changes.lock_deltas[taker_key] += order.reserved
    reduce_only_canceled = [oid for oid, _ in result.reduce_only_canceled]
    maker_ids = [f.maker_id for f in result.fills] + [oid for oid, _ in result.stp_canceled]
    maker_ids += reduce_only_canceled
    makers_read(batch, maker_ids, {f.maker_owner for f in result.fills}, len(result.fills))
    makers = orders_of(batch, maker_ids)
    if makers:
        # Lock the makers' balances (pk order) before their positions change.
        assets = {market.quote, market.base} if market.kind == MarketKind.SPOT else {market.quote}
        balances_hold_or_create(
            held, {(o.trader_id, a, mode) for o in makers.values() for a in assets}
        )

    for oid, _ in result.stp_canceled:
        mark_canceled(makers[oid], "SELF_TRADE", now, changes)

    trades, fills = fills_record(
        market, mode, order, result, makers, now, changes, admitted.reference
    )
    # After their fills: what a reduce-only maker could not fill without growing its
    # owner's position is cancelled.
    for oid in reduce_only_canceled:
        mark_canceled(makers[oid], reduce_only_reason(makers[oid]), now, changes)
    batch.trades += trades
    batch.fills += fills
    position_events = positions_settle(batch, fills, changes) if market.is_derivative else []
    if position_events:
        reduce_only_cleared(batch, result, position_events, now, changes)
    batch.changed_positions.update((p.pk, p) for p in position_events)

    # The balances this order moved (everyone's but the fee account's), in memory: the
    # batch writes them once.
    keys = {k for k, delta in changes.lock_deltas.items() if delta}
    keys |= {(p.trader_id, p.asset, p.mode) for p in changes.postings}
    balances_hold_or_create(held, keys)
    ledger_post(changes.postings, held)
    for key, delta in changes.lock_deltas.items():
        if delta:
            held[key].locked += delta
    short = sorted({k[0] for k in keys if k[0] != trader.pk and held[k].total < held[k].locked})
    if short:
        # The database would refuse the write (available may not go negative) and roll
        # back the taker's order with it: the makers' orders go instead.
        raise MakersCannotCarry([f.maker_id for f in result.fills if f.maker_owner in short])
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

    def finish() -> dict[str, Any]:
        taker_payload["fills"] = [fill_dict(f, symbol_) for f in fills if f.order_id == order.pk]
        batch.events.known[trader.pk] = trader
        batch.events.changed(
            market,
            seq=seq,
            deltas=(result.bid_deltas, result.ask_deltas),
            trades=trades,
            orders=orders,
            fills=fills,
        )
        return taker_payload

    return finish
