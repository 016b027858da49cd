"""The settle stage of an order: the trades and fills of a match, the fees, a spot
fill's swap of base for quote, and (through `trading.settle`, the one settlement of
every fill) the positions and cash of derivatives; all in memory, in a `ChangeSet`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from dexsite import sql
from ledger.models import LedgerReason
from ledger.services import FEE_ACCOUNT, Posting, system_account_id
from trading import engine as eng
from trading import margin, risk
from trading.models import (
    Fill,
    Liquidity,
    Market,
    MarketKind,
    Order,
    OrderStatus,
    Position,
    Side,
    Trade,
)
from trading.orders.batch import Batch, exposures_read
from trading.settle import position_settle


@dataclass
class ChangeSet:
    """Everything one order (or one cancel) changes, gathered for bulk writes and
    events."""

    postings: list[Posting] = field(default_factory=list)
    fee_postings: list[Posting] = field(default_factory=list)
    lock_deltas: dict[tuple[int, str, str], Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )
    touched_orders: dict[int, Order] = field(default_factory=dict)


def mark_canceled(order: Order, reason: str, now, changes: ChangeSet) -> None:
    changes.lock_deltas[(order.trader_id, order.reserve_asset, order.mode)] -= order.reserved
    order.reserved = Decimal(0)
    order.status = OrderStatus.CANCELED
    order.cancel_reason = reason
    order.updated_at = now
    changes.touched_orders[order.pk] = order


def fills_record(
    market: Market,
    mode: str,
    taker: Order,
    result: eng.MatchResult,
    makers: dict[int, Order],
    now,
    changes: ChangeSet,
    mark: Decimal | None,
) -> tuple[list[Trade], list[Fill]]:
    """The trades and fills of `result` (not yet written), with the makers' orders, the
    postings and the reservations they move recorded in `changes`; each trade keeps the
    `mark` its price band was measured from."""
    if not result.fills:
        return [], []
    tick, lot = market.tick_size, market.lot_size
    fee_id = system_account_id(FEE_ACCOUNT)
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
    for f, trade in zip(result.fills, trades, strict=True):
        px, q = trade.price, trade.qty
        notional = px * q
        maker = makers[f.maker_id]
        taker_fee = risk.fee_for(notional, market.taker_fee)
        maker_fee = risk.fee_for(notional, market.maker_fee)
        total_fees += taker_fee + maker_fee
        fills.append(fill_new(trade, taker, fee=taker_fee, liquidity=Liquidity.TAKER))
        fills.append(fill_new(trade, maker, fee=maker_fee, liquidity=Liquidity.MAKER))
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
            # Spot swaps base for quote; derivatives settle in `positions_settle`.
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


def positions_settle(batch: Batch, fills: list[Fill], changes: ChangeSet) -> list[Position]:
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
    # position's liquidation price as its event shows them (`positions_shown`).
    ids = sorted({f.trader_id for f in fills} - cached.keys())
    if ids:
        # (An account read already, a taker's at the group's opening, is not read again:
        # its positions would count twice.)
        unread = {t for t in ids if t not in batch.exposures}
        exposures_read(batch, unread, margin.exposures_of(unread, mode))
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


def fill_new(trade: Trade, order: Order, *, fee: Decimal, liquidity: str) -> Fill:
    """The fill (not yet written) of `order`, taker or maker, in `trade`: on the order's
    side, at the trade's price and quantity and time."""
    return sql.new(
        Fill,
        trade=trade,
        order=order,
        trader_id=order.trader_id,
        market=trade.market,
        mode=trade.mode,
        side=order.side,
        price=trade.price,
        qty=trade.qty,
        fee=fee,
        liquidity=liquidity,
        created_at=trade.created_at,
    )
