"""Liquidation of accounts below maintenance margin.

For an account (trader, mode) whose equity is below its maintenance margin:
1. cancel its open orders (they lock margin); if that restores it, stop;
2. close its positions one by one, most profitable first, with reduce-only IOC orders
   into the book no worse than a limit price L: the bankruptcy price (where the
   account's equity reaches zero, other positions at mark) when the insurance fund can
   advance the worst-case loss beyond the account's cash at that price, otherwise the
   price at which the account's cash alone is exhausted;
3. auto-deleverage what the book did not take: the most profitable opposite positions
   are closed against it at L;
4. the account repays the advance from what is left, then pays the liquidation fee to
   the insurance fund. What it cannot repay is the fund's loss.
Every movement is a ledger row; nothing is created or lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Balance, LedgerReason, User
from accounts.services import (
    Posting,
    balances_ensure,
    balances_lock,
    ledger_apply,
    system_account_id,
)
from dexsite.errors import ExchangeError
from trading import margin, risk, signals
from trading.candles import candles_record
from trading.models import (
    Book,
    Fill,
    Liquidation,
    Liquidity,
    MarketKind,
    Order,
    OrderStatus,
    Position,
    Side,
    Trade,
)
from trading.presenters import dec
from trading.services.books import book_lock
from trading.services.orders import order_place, orders_cancel_all, orders_shrinking_cleared
from trading.services.prices import index_is_fresh
from trading.services.transfers import paper_backstop

log = logging.getLogger(__name__)
QUOTE = "USDC"


def _account(trader_id: int, mode: str, *, lock: bool = False) -> margin.Account:
    key = (trader_id, QUOTE, mode)
    if lock:
        balances_ensure([key])
        bal = balances_lock([key]).get(key)
    else:
        bal = Balance.objects.filter(trader_id=trader_id, asset=QUOTE, mode=mode).first()
    return margin.account_of(bal, margin.exposures_for(trader_id, mode))


def liquidations_run(now: datetime | None = None) -> list[Liquidation]:
    """One sweep: liquidate every account below maintenance. Idempotent: an account
    that is healthy (or already liquidated) is left alone."""
    now = now or timezone.now()
    done = []
    fresh: dict[str, bool] = {}
    for (trader_id, mode), account in sorted(margin.accounts_with_positions().items()):
        if not account.below_maintenance():
            continue
        underlyings = {e.position.market.underlying for e in account.exposures}
        stale = [u for u in underlyings if not fresh.setdefault(u, index_is_fresh(u, now))]
        if stale:
            log.warning("liquidation of %s/%s paused: stale index %s", trader_id, mode, stale)
            continue
        try:
            result = liquidate_account(trader_id=trader_id, mode=mode)
        except ExchangeError as e:
            # One account the engine cannot close (it rolled back whole) must not
            # keep the sweep from the others.
            log.error("liquidation of %s/%s refused: %s %s", trader_id, mode, e.code, e)
            continue
        if result is not None:
            done.append(result)
    return done


@dataclass
class _Progress:
    advance: Decimal = Decimal(0)
    closed_notional: Decimal = Decimal(0)
    adl_qty: Decimal = Decimal(0)
    steps: list[dict] = field(default_factory=list)


def liquidate_account(*, trader_id: int, mode: str) -> Liquidation | None:
    user = User.objects.get(pk=trader_id)
    orders_cancel_all(trader=user, mode=mode, reason="LIQUIDATION")
    with transaction.atomic():
        # Books first, then balances: the order every writer takes its locks in.
        market_ids = list(
            Position.objects.filter(trader_id=trader_id, mode=mode)
            .exclude(size=0)
            .values_list("market_id", flat=True)
        )
        list(
            Book.objects.select_for_update()
            .filter(market_id__in=market_ids, mode=mode)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        account = _account(trader_id, mode, lock=True)
        if not account.below_maintenance():
            return None
        record = Liquidation(
            trader_id=trader_id, mode=mode, equity=account.equity, maintenance=account.maintenance
        )
        progress = _Progress()
        for exposure in sorted(account.exposures, key=lambda e: e.value(), reverse=True):
            _close(user, mode, exposure.position.market_id, progress)
        _settle_with_fund(user, mode, progress, record)
        record.adl_qty = progress.adl_qty
        record.detail = {"steps": progress.steps}
        record.save()
        payload = {
            "mode": mode,
            "equity": dec(record.equity),
            "maintenance": dec(record.maintenance),
            "insurancePaid": dec(record.insurance_paid),
            "fee": dec(record.fee),
            "steps": progress.steps,
        }
        trader_uuid = user.trader_id
        transaction.on_commit(
            lambda: signals.liquidated.send(
                sender=Liquidation, trader_id=trader_uuid, liquidation=payload
            )
        )
        return record


def _on_tick(price: Decimal, tick: Decimal, size: Decimal) -> Decimal:
    # A long is sold no lower than the limit, a short bought back no higher.
    rounding = ROUND_CEILING if size > 0 else ROUND_FLOOR
    return (max(price, Decimal(0)) / tick).quantize(Decimal(1), rounding=rounding) * tick


def _need(cash: Decimal, e: margin.Exposure, price: Decimal) -> Decimal:
    """Cash the account would lack after closing `e` entirely at `price`, fee included."""
    qty = abs(e.size)
    fee = qty * price * e.position.market.taker_fee
    if e.is_option:
        flow = qty * price if e.size > 0 else -qty * price
    else:
        flow = e.size * price - e.open_notional
    return max(Decimal(0), -(cash + flow - fee))


def _price_for_need(cash: Decimal, e: margin.Exposure, need: Decimal) -> Decimal:
    """The closing price at which the account lacks exactly `need` (0: its own cash is
    just exhausted): the worst price the account, plus `need`, can pay."""
    qty = abs(e.size)
    fee = e.position.market.taker_fee
    budget = cash + need
    if e.is_option:
        # A long sells (gets P*q less fee): any price will do. A short buys back.
        return Decimal(0) if e.size > 0 else budget / (qty * (1 + fee))
    # budget + size*P - cost - |size|*P*fee = 0
    denom = e.size - qty * fee
    return (e.open_notional - budget) / denom if denom else Decimal(0)


def _fund_available(mode: str) -> Decimal:
    insurance_id = system_account_id(User.INSURANCE_ACCOUNT)
    key = (insurance_id, QUOTE, mode)
    balances_ensure([key])
    fund = balances_lock([key])[key]
    return fund.total - fund.locked


def _cash(trader_id: int, mode: str) -> Decimal:
    key = (trader_id, QUOTE, mode)
    bal = balances_lock([key])[key]
    return bal.total - bal.locked


def _exposure(trader_id: int, mode: str, market_id: int) -> margin.Exposure | None:
    return next(
        (x for x in margin.exposures_for(trader_id, mode) if x.position.market_id == market_id),
        None,
    )


def _ioc(user: User, e: margin.Exposure, mode: str, limit: Decimal, progress: _Progress) -> Decimal:
    """Close what the book takes at `limit` or better; returns the size left."""
    side = Side.SELL if e.size > 0 else Side.BUY
    placed, _ = order_place(
        trader=user,
        market=e.position.market.symbol,
        mode=mode,
        side=side,
        type="LIMIT" if limit > 0 else "MARKET",
        price=limit if limit > 0 else None,
        qty=abs(e.size),
        time_in_force="IOC",
        reduce_only=True,
        source="LIQUIDATION",
    )
    filled = Decimal(placed["filledQty"])
    if filled:
        progress.closed_notional += filled * Decimal(placed["avgFillPrice"])
    return Position.objects.get(pk=e.position.pk).size


def _close(user: User, mode: str, market_id: int, progress: _Progress) -> None:
    """Close one position: (1) into the book no worse than the bankruptcy price; (2) what
    is left, into the book at worse prices as far as the insurance fund can cover the
    loss; (3) what is still left, by auto-deleveraging at the price the account's cash
    (with what the fund advanced) can pay."""
    e = _exposure(user.pk, mode, market_id)
    if e is None:
        return
    m = e.position.market
    insurance_id = system_account_id(User.INSURANCE_ACCOUNT)
    step: dict = {"market": m.symbol, "size": dec(e.size)}

    def advance(amount: Decimal) -> None:
        if amount > 0:
            _move(insurance_id, user.pk, mode, amount, "advance")
            progress.advance += amount

    account = _account(user.pk, mode, lock=True)
    cash = account.cash - account.locked
    bkr = account.bankruptcy_price(e)
    fund = _fund_available(mode)
    limit = _on_tick(bkr if bkr is not None else Decimal(0), m.tick_size, e.size)
    need = _need(cash, e, limit)
    if need > fund:
        # The fund cannot even pay the fees at the bankruptcy price: stay within cash.
        limit = _on_tick(_price_for_need(cash, e, Decimal(0)), m.tick_size, e.size)
        need = min(_need(cash, e, limit), fund)
    advance(need)
    step["limit"] = dec(limit)
    left = _ioc(user, e, mode, limit, progress)

    fund = _fund_available(mode) if left else Decimal(0)
    if left and fund > 0:
        e = _exposure(user.pk, mode, market_id)
        cash = _cash(user.pk, mode)
        worse = _on_tick(_price_for_need(cash, e, fund), m.tick_size, e.size)
        if worse != limit:
            advance(min(_need(cash, e, worse), fund))
            step["fundLimit"] = dec(worse)
            left = _ioc(user, e, mode, worse, progress)

    if left:
        e = _exposure(user.pk, mode, market_id)
        price = _on_tick(_price_for_need(_cash(user.pk, mode), e, Decimal(0)), m.tick_size, e.size)
        step["adl"] = dec(abs(left))
        step["adlPrice"] = dec(price)
        _auto_deleverage(user, m, mode, left, price, progress)
    progress.steps.append(step)


def _auto_deleverage(
    user: User, market, mode: str, size: Decimal, price: Decimal, progress: _Progress
) -> None:
    """Close `size` of the trader's position at `price` against the most profitable
    opposite positions (ranked by unrealized PnL per unit of cost)."""
    against = {"size__lt": 0} if size > 0 else {"size__gt": 0}
    opposite = list(
        Position.objects.select_for_update()
        .filter(market=market, mode=mode, **against)
        .exclude(trader=user)
        .order_by("pk")
    )
    mark = Book.objects.get(market=market, mode=mode).mark_price or market.mark_price or price

    def profit_ratio(p: Position) -> Decimal:
        value = p.size * mark - p.open_notional
        return value / abs(p.open_notional) if p.open_notional else Decimal(0)

    opposite.sort(key=profit_ratio, reverse=True)
    mine = Position.objects.select_for_update().get(trader=user, market=market, mode=mode)
    now = timezone.now()
    remaining = abs(size)
    liquidated_side = Side.SELL if size > 0 else Side.BUY
    other_side = Side.BUY if size > 0 else Side.SELL
    postings: list[Posting] = []
    trades: list[Trade] = []
    touched: dict[int, Position] = {mine.pk: mine}
    for p in opposite:
        if not remaining:
            break
        q = min(remaining, abs(p.size))
        remaining -= q
        taker = _adl_order(user.pk, market, mode, liquidated_side, q, price, now)
        maker = _adl_order(p.trader_id, market, mode, other_side, q, price, now)
        trade = Trade.objects.create(
            market=market,
            mode=mode,
            price=price,
            qty=q,
            taker_side=liquidated_side,
            taker_order=taker,
            maker_order=maker,
            liquidation=True,
            created_at=now,
        )
        trades.append(trade)
        for order, pos in ((taker, mine), (maker, p)):
            Fill.objects.create(
                trade=trade,
                order=order,
                trader_id=order.trader_id,
                market=market,
                mode=mode,
                side=order.side,
                price=price,
                qty=q,
                fee=0,
                liquidity=Liquidity.TAKER if order is taker else Liquidity.MAKER,
                created_at=now,
            )
            signed = q if order.side == Side.BUY else -q
            change = risk.apply_fill(pos.size, pos.open_notional, signed, price)
            pos.size, pos.open_notional = change.size, change.open_notional
            pos.realized_pnl += change.realized
            touched[pos.pk] = pos
            ref = f"adl:{trade.pk}"
            if market.kind == MarketKind.OPTION:
                postings.append(
                    Posting(
                        order.trader_id,
                        QUOTE,
                        mode,
                        -q * price if order.side == Side.BUY else q * price,
                        LedgerReason.LIQUIDATION,
                        ref,
                    )
                )
            elif change.realized:
                postings.append(
                    Posting(
                        order.trader_id,
                        QUOTE,
                        mode,
                        change.realized,
                        LedgerReason.REALIZED_PNL,
                        ref,
                    )
                )
        progress.adl_qty += q
        progress.closed_notional += q * price
    if remaining:
        log.error("auto-deleverage of %s in %s left %s unmatched", user, market, remaining)
    candles_record(trades)
    Position.objects.bulk_update(touched.values(), ["size", "open_notional", "realized_pnl"])
    # Orders that could only shrink these positions, now closed or turned, go.
    orders_shrinking_cleared(
        book=book_lock(market_id=market.pk, mode=mode), positions=touched.values()
    )
    keys = [(p.trader_id, QUOTE, mode) for p in postings]
    balances_ensure(keys)
    rows = balances_lock(keys)
    # The PAPER insurance fund may be the position closed against: its loss is covered.
    insurance_id = system_account_id(User.INSURANCE_ACCOUNT)
    postings += paper_backstop(postings, rows, insurance_id, QUOTE, mode)
    ledger_apply(postings, rows)
    Balance.objects.bulk_update(rows.values(), ["total"])


def _adl_order(
    trader_id: int, market, mode: str, side: str, qty: Decimal, price: Decimal, now
) -> Order:
    return Order.objects.create(
        trader_id=trader_id,
        market=market,
        mode=mode,
        side=side,
        type="LIMIT",
        time_in_force="IOC",
        price=price,
        qty=qty,
        filled_qty=qty,
        filled_notional=qty * price,
        status=OrderStatus.FILLED,
        reduce_only=True,
        source="ADL",
        created_at=now,
        updated_at=now,
    )


def _move(from_id: int, to_id: int, mode: str, amount: Decimal, what: str) -> None:
    keys = [(from_id, QUOTE, mode), (to_id, QUOTE, mode)]
    balances_ensure(keys)
    rows = balances_lock(keys)
    ledger_apply(
        [
            Posting(from_id, QUOTE, mode, -amount, LedgerReason.LIQUIDATION, what),
            Posting(to_id, QUOTE, mode, amount, LedgerReason.LIQUIDATION, what),
        ],
        rows,
    )
    Balance.objects.bulk_update(rows.values(), ["total"])


def _settle_with_fund(user: User, mode: str, progress: _Progress, record: Liquidation) -> None:
    insurance_id = system_account_id(User.INSURANCE_ACCOUNT)
    key = (user.pk, QUOTE, mode)
    bal = balances_lock([key])[key]
    cash = bal.total - bal.locked
    repay = min(progress.advance, max(cash, Decimal(0)))
    if repay:
        _move(user.pk, insurance_id, mode, repay, "advance repaid")
        cash -= repay
    fee = min(
        max(cash, Decimal(0)), progress.closed_notional * Decimal(settings.LIQUIDATION_FEE_RATE)
    )
    fee = fee.quantize(risk.MONEY_QUANTUM)
    if fee:
        _move(user.pk, insurance_id, mode, fee, "liquidation fee")
    record.insurance_paid = progress.advance - repay
    record.fee = fee
