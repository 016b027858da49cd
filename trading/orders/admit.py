"""The request stage and the risk gate on a batch's locked rows: an order is refused
with an ExchangeError before it changes anything, or admitted as the engine is to
match it. The rules themselves are `request.py` and `gate.py` (plain functions); this
module gives them the account as the batch holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from trading import engine as eng
from trading import margin
from trading.models import (
    MarketKind,
    OrderType,
    Position,
    Side,
)
from trading.orders.batch import Batch, band_reference, exposures_now, index_now
from trading.orders.gate import (
    band_check,
    covered_sell,
    order_shortfall,
    refusal,
    reservation,
    slippage_limit,
)
from trading.orders.persist import balances_hold, reducible_lots
from trading.orders.request import (
    OrderRequest,
    attached_tpsl_check,
    market_open_check,
    min_notional_check,
    order_shape,
    reduce_only_qty,
)
from trading.services.books import (
    to_lots,
)


@dataclass(slots=True)
class Admitted:
    """An order the request stage and the risk gate let through, as they left it."""

    qty: Decimal  # trimmed to the position, for a reduce-only order
    lots: int
    limit: int | None  # the engine's limit in ticks: the price, or a market order's slippage limit
    band_limited: bool  # a market order held to its slippage limit
    reducing: bool  # may only shrink a position (reduce-only, or a covered option sell)
    reserve_asset: str
    reserve: Decimal
    reference: Decimal | None  # the mark (the index on spot) the bands measured from
    # Positions, in lots, of the owners of the reduce-only orders it may meet.
    reducible: dict[int, int] | None
    # The order's key in the engine until its row has one.
    provisional: object = field(default_factory=object)


def admit(batch: Batch, request: OrderRequest) -> Admitted:
    """The request stage and the risk gate, on the batch's locked rows: refused with an
    ExchangeError, or admitted as the engine is to match it."""
    book = batch.book
    market, mode = book.market, book.mode
    trader, side, qty, price = request.trader, request.side, request.qty, request.price
    tif, reduce_only = request.tif, request.reduce_only
    risk_engine = request.source != "USER"
    # -- request: its shape against the market --------------------------------------
    market_open_check(market, risk_engine=risk_engine)
    is_market_order = request.exec_type == OrderType.MARKET
    shape = order_shape(
        market, type=request.exec_type, qty=qty, price=price, tif=tif, reduce_only=reduce_only
    )
    ticks, lots = shape.ticks, shape.lots
    if request.take_profit is not None or request.stop_loss is not None:
        attached_tpsl_check(market, request, band_reference(batch))

    derivative = market.is_derivative
    held = batch.held
    # What the account's margin is judged in: derivatives and spot buys are paid from
    # the USDC account that carries the positions too.
    margined = derivative or side == Side.BUY
    if margined:
        # Every change to this account's positions and margin cash happens under its
        # USDC balance row lock (as taker here, as maker below): taken first, the
        # positions read next cannot move under the risk gate.
        balances_hold(held, [(trader.pk, market.quote, mode)])
    exposures = exposures_now(batch, trader.pk) if margined else []
    own = next((e for e in exposures if e.position.market_id == market.pk), None)
    if reduce_only:
        qty = reduce_only_qty(side=side, qty=qty, size=own.size if own else Decimal(0))
        lots = to_lots(qty, market)

    # -- gate: price bands (the risk engine's own orders are exempt: a liquidation
    # closes at the bankruptcy price, wherever the mark is) ---------------------------
    reference = band_reference(batch)
    band_ticks = None
    if reference is not None and not risk_engine:
        if is_market_order:
            band_ticks = slippage_limit(market, side=side, reference=reference)
        else:
            band_check(market, side=side, price=price, reference=reference)

    engine = batch.engine
    reducible = reducible_lots(batch) if derivative else None
    if is_market_order:
        fillable, cost_tl = engine.sweep(side, lots, band_ticks, trader.pk, reducible)
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
        index=(own.index if own else None) or index_now(batch) or mark,
    )
    reserve_asset, reserve = held_for.asset, held_for.amount

    # The taker's own balance row is locked before matching, so that its check and
    # the writes below see the same funds. Makers are locked after matching, in
    # primary-key order; the rare cross-book cycle (A takes from B in one book while B
    # takes from A in another) is a deadlock PostgreSQL breaks and `retrying` runs
    # again.
    taker_key = (trader.pk, reserve_asset, mode)
    if reserve > 0:
        balances_hold(held, [taker_key])
    if not risk_engine:
        cash = held.get(taker_key)
        available = cash.total - cash.locked if cash else Decimal(0)
        if margined:
            if derivative and own is None:
                flat = Position(trader_id=trader.pk, market=market, mode=mode)
                own = margin.exposure_new(flat, mark=reference or mark, index=index_now(batch))
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
    return Admitted(
        qty=qty,
        lots=lots,
        limit=band_ticks if is_market_order else ticks,
        band_limited=band_ticks is not None,
        reducing=reducing,
        reserve_asset=reserve_asset,
        reserve=reserve,
        reference=reference,
        reducible=reducible,
    )
