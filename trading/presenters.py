"""The JSON shapes of the contract, built from model rows: decimal strings, camelCase,
epoch milliseconds. Used by the REST views and by the events the services emit, so an
order looks the same over REST and over the WebSocket."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from trading.models import Fill, Market, Position, Trade


def dec(value: Decimal | None) -> str | None:
    """A decimal as the wire wants it: plain notation, no trailing zeros."""
    if value is None:
        return None
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


class OrderFields(Protocol):
    """What `order_dict` reads: an `Order`, or a row of those fields (`values_list(...,
    named=True)`)."""

    pk: int
    client_order_id: str | None
    mode: str
    side: str
    type: str
    price: Decimal | None
    qty: Decimal
    filled_qty: Decimal
    filled_notional: Decimal
    status: str
    time_in_force: str
    reduce_only: bool
    cancel_reason: str
    trigger_price: Decimal | None
    trigger_by: str
    attached: str
    take_profit: Decimal | None
    stop_loss: Decimal | None
    callback_rate: Decimal | None
    created_at: datetime
    updated_at: datetime


def order_dict(order: OrderFields, symbol: str, fills: list[dict] | None = None) -> dict[str, Any]:
    avg = order.filled_notional / order.filled_qty if order.filled_qty else None
    body = {
        "id": order.pk,
        "clientOrderId": order.client_order_id,
        "market": symbol,
        "mode": order.mode,
        "side": order.side,
        "type": order.type,
        "price": dec(order.price),
        "qty": dec(order.qty),
        "filledQty": dec(order.filled_qty),
        "avgFillPrice": dec(avg.quantize(Decimal("1e-12")) if avg is not None else None),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "reduceOnly": order.reduce_only,
        "createdAt": ms(order.created_at),
        "updatedAt": ms(order.updated_at),
    }
    if order.cancel_reason:
        body["cancelReason"] = order.cancel_reason
    if order.trigger_price is not None:
        body["triggerPrice"] = dec(order.trigger_price)
        body["triggerBy"] = order.trigger_by
        if order.attached:
            body["attached"] = order.attached  # the position's take-profit (TP) or stop-loss (SL)
    if order.callback_rate is not None:
        body["callbackRate"] = dec(order.callback_rate)  # the trigger follows the price
    if order.take_profit is not None:
        body["takeProfit"] = dec(order.take_profit)
    if order.stop_loss is not None:
        body["stopLoss"] = dec(order.stop_loss)
    if fills is not None:
        body["fills"] = fills
    return body


def fill_dict(fill: Fill, symbol: str) -> dict[str, Any]:
    return {
        "id": fill.pk,
        "orderId": fill.order_id,
        "tradeId": fill.trade_id,
        "market": symbol,
        "mode": fill.mode,
        "side": fill.side,
        "px": dec(fill.price),
        "qty": dec(fill.qty),
        "fee": dec(fill.fee),
        "liquidity": fill.liquidity,
        "ts": ms(fill.created_at),
    }


def trade_dict(trade: Trade) -> dict[str, Any]:
    """A public print: `side` is the taker's."""
    return {
        "id": trade.pk,
        "px": dec(trade.price),
        "qty": dec(trade.qty),
        "side": trade.taker_side,
        "ts": ms(trade.created_at),
        "liquidation": trade.liquidation,
    }


def balance_dict(balance) -> dict[str, Any]:
    return {
        "asset": balance.asset,
        "mode": balance.mode,
        "total": dec(balance.total),
        "available": dec(balance.total - balance.locked),
        "locked": dec(balance.locked),
    }


def account_dict(mode: str, figures: dict[str, Decimal | None]) -> dict[str, Any]:
    return {
        "mode": mode,
        "equity": dec(figures["equity"]),
        "cash": dec(figures["cash"]),
        "unrealizedPnl": dec(figures["unrealized_pnl"]),
        "initialMargin": dec(figures["initial_margin"]),
        "maintenanceMargin": dec(figures["maintenance_margin"]),
        "marginRatio": dec(figures["margin_ratio"]),
        "availableToTrade": dec(figures["available_to_trade"]),
        "availableToWithdraw": dec(figures["available_to_withdraw"]),
    }


def position_dict(position: Position, market: Market, metrics: dict[str, Any]) -> dict[str, Any]:
    size = position.size
    return {
        "market": market.symbol,
        "mode": position.mode,
        "size": dec(abs(size)),
        "side": "LONG" if size > 0 else "SHORT" if size < 0 else "FLAT",
        "entryPrice": dec(metrics["entry_price"]),
        "markPrice": dec(metrics["mark_price"]),
        "unrealizedPnl": dec(metrics["unrealized_pnl"]),
        "realizedPnl": dec(position.realized_pnl),
        "margin": dec(metrics["margin"]),
        "liquidationPrice": dec(metrics["liquidation_price"]),
        "leverage": dec(metrics["leverage"]),
    }
