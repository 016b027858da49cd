"""The request stage: an order as it was asked for (`OrderRequest`), and its shape,
judged against its market before anything is locked or read. Each refusal names its
field; nothing has changed when one is raised."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from django.contrib.auth.base_user import AbstractBaseUser

from dexsite.errors import ExchangeError
from trading.models import (
    STOP_TYPES,
    Market,
    MarketKind,
    MarketStatus,
    Order,
    OrderType,
    Side,
    TimeInForce,
)
from trading.presenters import dec
from trading.services.books import to_lots, to_ticks


@dataclass(slots=True)
class OrderRequest:
    """One order to place, as `order_place` was given it."""

    trader: AbstractBaseUser
    side: str
    type: str
    qty: Decimal
    price: Decimal | None
    tif: str
    reduce_only: bool
    client_order_id: str | None
    source: str
    # A conditional order's trigger (its type is one of CONDITIONAL_TYPES).
    trigger_price: Decimal | None = None
    trigger_by: str = ""
    # A trailing stop's distance behind the best price, in percent.
    callback_rate: Decimal | None = None
    # Set when a conditional order's trigger fired: its row, placed now.
    triggered: Order | None = None
    # A take-profit and a stop-loss for the position, set once the order fills.
    take_profit: Decimal | None = None
    stop_loss: Decimal | None = None

    @property
    def exec_type(self) -> str:
        """How it trades: MARKET or LIMIT (a conditional order, once triggered)."""
        return exec_type(self.type)


@dataclass(slots=True)
class CancelRequest:
    """One of a trader's orders to cancel, on the book (`market`, `mode`) it rests on:
    carried out in a transaction with the placings around it (`_place_together`)."""

    trader: AbstractBaseUser
    order_id: int
    market: str
    mode: str


def exec_type(type: str) -> str:
    """MARKET or LIMIT: how an order of `type` trades (a conditional one, once triggered)."""
    if type in (
        OrderType.STOP_MARKET,
        OrderType.TAKE_PROFIT_MARKET,
        OrderType.TRAILING_STOP_MARKET,
    ):
        return OrderType.MARKET
    if type in (OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT):
        return OrderType.LIMIT
    return type


def fires(type: str, side: str, trigger: Decimal, price: Decimal) -> bool:
    """Whether `price` has crossed (or touched) the trigger of a conditional order. A stop
    buys as the price rises to it and sells as it falls to it (it limits a loss, or
    enters a breakout); a take-profit the other way round (it sells into a rise)."""
    rising = (type in STOP_TYPES) == (side == Side.BUY)
    return price >= trigger if rising else price <= trigger


def trigger_check(
    market: Market,
    *,
    type: str,
    side: str,
    trigger_price: Decimal | None,
    price_now: Decimal | None,
) -> None:
    """A conditional order's trigger: on the tick grid, on perps, futures and spot, and
    not already crossed (it would fire at once: a plain order does that)."""
    if market.kind == MarketKind.OPTION:
        raise ExchangeError(
            "INVALID_TYPE", "conditional orders trade perps, futures and spot", field="type"
        )
    if trigger_price is None:
        raise ExchangeError(
            "MISSING_FIELD", f"a {type} order needs a triggerPrice", field="triggerPrice"
        )
    price_ticks(market, trigger_price, code="INVALID_TRIGGER_PRICE", field="triggerPrice")
    if price_now is not None and fires(type, side, trigger_price, price_now):
        raise ExchangeError(
            "WOULD_TRIGGER",
            f"the price ({dec(price_now)}) has already crossed triggerPrice: it would fire at once",
            field="triggerPrice",
        )


def attached_tpsl_check(market: Market, request: OrderRequest, reference: Decimal | None) -> None:
    """A take-profit and a stop-loss attached to an order: on perps and futures, on an
    order that may open or grow a position (not reduce-only), on the tick grid, and on
    the side of the order's price (a market order's: the mark) where each belongs: a buy
    takes profit above it and stops its loss below, a sell the other way round."""
    attached = [("takeProfit", request.take_profit), ("stopLoss", request.stop_loss)]
    attached = [(f, p) for f, p in attached if p is not None]
    if not attached:
        return
    field = attached[0][0]
    if market.kind not in (MarketKind.PERP, MarketKind.FUTURE):
        raise ExchangeError(
            "INVALID_TYPE", "takeProfit and stopLoss attach to perp and future orders", field=field
        )
    if request.reduce_only:
        raise ExchangeError(
            "INVALID_REDUCE_ONLY",
            "a reduce-only order opens nothing to take profit or stop a loss on",
            field=field,
        )
    base = request.price if request.exec_type == OrderType.LIMIT else reference
    for field, price in attached:
        price_ticks(market, price, code="INVALID_TRIGGER_PRICE", field=field)
        if base is None:
            continue
        above = (field == "takeProfit") == (request.side == Side.BUY)
        if (price <= base) if above else (price >= base):
            where = "above" if above else "below"
            what = "take-profit" if field == "takeProfit" else "stop-loss"
            raise ExchangeError(
                "INVALID_TRIGGER_PRICE",
                f"A {request.side.lower()}'s {what} must be {where} {dec(base)}",
                field=field,
            )


# A trailing stop's callbackRate, in percent (as the large venues take it).
CALLBACK_RATE_MIN, CALLBACK_RATE_MAX = Decimal("0.1"), Decimal("10")


def trailing_trigger(market: Market, *, side: str, extreme: Decimal, rate: Decimal) -> Decimal:
    """A trailing stop's trigger: `rate` % behind the best price seen (`extreme`: the
    highest for a sell, the lowest for a buy), on the tick grid, rounded away from it."""
    tick = market.tick_size
    if side == Side.SELL:
        ticks = (extreme * (100 - rate) / 100 / tick).to_integral_value(rounding=ROUND_FLOOR)
    else:
        ticks = -((-extreme * (100 + rate) / 100 / tick).to_integral_value(rounding=ROUND_FLOOR))
    return ticks * tick


def trailing_check(
    market: Market, *, trigger_price: Decimal | None, callback_rate: Decimal | None
) -> None:
    """A trailing stop: a callbackRate within its range; its trigger is the exchange's
    to set (it follows the price), never given."""
    if trigger_price is not None:
        raise ExchangeError(
            "INVALID_TRIGGER_PRICE",
            "a trailing stop's trigger follows the price: give callbackRate, not triggerPrice",
            field="triggerPrice",
        )
    if callback_rate is None:
        raise ExchangeError(
            "MISSING_FIELD",
            "a TRAILING_STOP_MARKET order needs a callbackRate",
            field="callbackRate",
        )
    if not CALLBACK_RATE_MIN <= callback_rate <= CALLBACK_RATE_MAX or callback_rate != round(
        callback_rate, 2
    ):
        raise ExchangeError(
            "INVALID_CALLBACK_RATE",
            f"callbackRate is a percentage from {CALLBACK_RATE_MIN} to {CALLBACK_RATE_MAX}"
            " with at most two decimals",
            field="callbackRate",
        )


def price_ticks(market: Market, price: Decimal, *, code: str, field: str) -> int:
    """A price (a limit, a trigger, a take-profit ...) in ticks: refused with `code` on
    `field` where it is not a positive multiple of the tick."""
    ticks = to_ticks(price, market)
    if ticks is None or ticks <= 0:
        raise ExchangeError(
            code, f"{field} must be a positive multiple of {dec(market.tick_size)}", field=field
        )
    return ticks


def engine_tif(request: OrderRequest) -> str:
    """A market order never rests: it runs as IOC (or FOK if asked)."""
    if request.exec_type == OrderType.MARKET and request.tif != TimeInForce.FOK:
        return TimeInForce.IOC
    return request.tif


@dataclass(frozen=True, slots=True)
class Shape:
    """An order on its market's grid: its limit price in ticks (None: a market order)
    and its quantity in lots."""

    ticks: int | None
    lots: int


def market_open_check(market: Market, *, risk_engine: bool) -> None:
    """A paused market takes no new orders but the risk engine's; a delisted or settled
    one, none."""
    if market.status == MarketStatus.PAUSED and not risk_engine:
        raise ExchangeError("MARKET_PAUSED", f"{market.symbol} is paused", field="market")
    if market.status == MarketStatus.DELISTED:
        raise ExchangeError("MARKET_DELISTED", f"{market.symbol} is delisted", field="market")
    if market.status == MarketStatus.SETTLED:
        raise ExchangeError("MARKET_SETTLED", f"{market.symbol} has expired", field="market")


def order_shape(
    market: Market,
    *,
    type: str,
    qty: Decimal,
    price: Decimal | None,
    tif: str,
    reduce_only: bool,
) -> Shape:
    if type == OrderType.MARKET:
        if price is not None:
            raise ExchangeError("INVALID_PRICE", "a MARKET order takes no price", field="price")
        if tif == TimeInForce.POST_ONLY:
            raise ExchangeError(
                "INVALID_TIME_IN_FORCE", "a MARKET order cannot be POST_ONLY", field="timeInForce"
            )
        ticks = None
    else:
        if price is None:
            raise ExchangeError("INVALID_PRICE", "a LIMIT order needs a price", field="price")
        ticks = price_ticks(market, price, code="INVALID_PRICE", field="price")
    lots = to_lots(qty, market)
    if lots is None or lots <= 0:
        raise ExchangeError(
            "INVALID_QTY", f"qty must be a positive multiple of {dec(market.lot_size)}", field="qty"
        )
    if reduce_only and not market.is_derivative:
        raise ExchangeError(
            "INVALID_REDUCE_ONLY", "reduceOnly applies to derivatives only", field="reduceOnly"
        )
    return Shape(ticks, lots)


def reduce_only_qty(*, side: str, qty: Decimal, size: Decimal) -> Decimal:
    """What a reduce-only order of `side` may trade against a position of `size`: its
    quantity, trimmed to the position; refused where it would reduce nothing."""
    reducible = size if side == Side.SELL else -size
    if reducible <= 0:
        raise ExchangeError(
            "REDUCE_ONLY_REJECTED",
            "reduce-only order would not reduce a position",
            field="reduceOnly",
        )
    return min(qty, reducible)


def min_notional_check(
    market: Market, *, notional: Decimal, market_order: bool, whole: bool
) -> None:
    """A limit order's value is its price times its quantity; a market order's, what the
    book can fill of it (`whole`: all of it), and one the book cannot fill in full, or
    at all, is not held to the minimum: it is cancelled as far as it does not fill."""
    if market_order and (notional == 0 or not whole):
        return
    if notional < market.min_notional:
        raise ExchangeError(
            "MIN_NOTIONAL",
            f"order value must be at least {dec(market.min_notional)} {market.quote}",
            field="qty",
        )


def close_qty(
    market: Market, *, size: Decimal, qty: Decimal | None = None, fraction: Decimal | None = None
) -> Decimal:
    """What closing a position of `size` trades: all of it, `qty` of it (at most all), or
    `fraction` of it rounded down to whole lots; refused where that is not one lot."""
    whole = abs(size)
    if fraction is not None:
        lots = (whole * fraction / market.lot_size).to_integral_value(rounding=ROUND_FLOOR)
        wanted, field = lots * market.lot_size, "fraction"
    elif qty is not None:
        wanted, field = min(qty, whole), "qty"
    else:
        return whole
    if wanted <= 0:
        raise ExchangeError(
            "INVALID_QTY",
            f"the close must be at least one lot ({dec(market.lot_size)} {market.base})",
            field=field,
        )
    return wanted
