"""Liquidation of accounts below maintenance margin.

A sweep (`liquidations_run`, every two seconds from the clock) treats each account
(trader, mode) whose equity is below its maintenance margin as a unit of its own: one
transaction (a savepoint inside a caller's), which finishes or rolls back whole. One
that raises is logged with its traceback, counted (`dex_liquidation_failures_total`)
and left for the next sweep; the sweep goes on with the others. Every sweep is recorded
as a `LiquidationSweep` row with the accounts it left below maintenance (a stale index,
a failure, a liquidation that could not bring it back), for the invariant checker.

For one account, under the locks of every book it has a position or an order in:
1. cancel its open orders (they lock margin); if that restores it, stop;
2. close its positions one by one, most profitable first, with reduce-only IOC orders
   into the book no worse than a limit price L: the bankruptcy price (where the
   account's equity reaches zero, other positions at mark) when the insurance fund can
   advance the worst-case loss beyond the account's cash at that price, otherwise the
   price at which the account's cash alone is exhausted; what the book did not take,
   at worse prices as far as the fund can advance the loss;
3. auto-deleverage what the book still did not take: the fund's unused advance goes
   back first, then the most profitable opposite positions are closed against it at the
   price where the account's own cash is exhausted (a long option: at its mark). Each
   counterparty's orders in that market that lock cash are cancelled first, since its
   payment may need that cash; the cash then moves as one transfer (`transfers_settle`):
   no payer pays more than it has available, the fund covers the shortfall, and beyond
   the fund the receivers are paid less. In REAL a loss beyond what the fund holds
   and the receivers are owed (a futures cost basis paid out long ago) refuses the
   liquidation (INSURANCE_FUND_EXHAUSTED) until the fund is topped up;
4. the account repays the advance from what is left, then pays the liquidation fee to
   the insurance fund. What it cannot repay is the fund's loss.
Every movement is a ledger row; nothing is created or lost. After the commit every
trader it touched hears of it on their channel as of any fill (`fill`,
`positionUpdate`, `balanceUpdate`, ...), and the account also gets `liquidation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from ledger.models import Balance, LedgerReason
from ledger.services import (
    INSURANCE_ACCOUNT,
    Posting,
    balances_ensure,
    balances_lock,
    ledger_apply,
    system_account_id,
)
from trading import margin, matcher, risk
from trading.candles import candles_record
from trading.emit import Emitter
from trading.locks import books_lock, positions_lock
from trading.metrics import LIQUIDATION_FAILURES, error_label
from trading.models import (
    OPEN_STATUSES,
    Book,
    Fill,
    Liquidation,
    LiquidationSweep,
    Liquidity,
    MarketKind,
    Order,
    OrderStatus,
    Position,
    Side,
    Trade,
)
from trading.orders.cancel import orders_cancel_all, orders_cancel_in_book, orders_shrinking_cleared
from trading.orders.fills import fill_new
from trading.orders.place import order_place
from trading.presenters import dec
from trading.selectors import account_market_ids
from trading.services.books import book_lock
from trading.services.prices import index_is_fresh
from trading.services.transfers import transfers_settle
from trading.settle import position_settle

log = logging.getLogger(__name__)
QUOTE = "USDC"
# LiquidationSweep rows kept: at one sweep every two seconds, about half an hour; the
# checker needs three in a row, an incident's look back a few minutes.
SWEEPS_KEPT = 1000


def _account(trader_id: int, mode: str, *, lock: bool = False) -> margin.Account:
    key = (trader_id, QUOTE, mode)
    if lock:
        balances_ensure([key])
        bal = balances_lock([key]).get(key)
    else:
        bal = Balance.objects.filter(trader_id=trader_id, asset=QUOTE, mode=mode).first()
    return margin.account_of(bal, margin.exposures_for(trader_id, mode))


def liquidations_run(now: datetime | None = None) -> list[Liquidation]:
    """One sweep: liquidate every account below maintenance, each on its own (one that
    fails is counted and left for the next sweep), and record the sweep. Idempotent: an
    account that is healthy (or already liquidated) is left alone."""
    now = now or timezone.now()
    done: list[Liquidation] = []
    left_below: list[list[Any]] = []
    failed = 0
    fresh: dict[str, bool] = {}
    for (trader_id, mode), account in sorted(margin.accounts_with_positions().items()):
        if not account.below_maintenance():
            continue
        underlyings = {e.position.market.underlying for e in account.exposures}
        stale = [u for u in underlyings if not fresh.setdefault(u, index_is_fresh(u, now))]
        if stale:
            log.warning("liquidation of %s/%s paused: stale index %s", trader_id, mode, stale)
            left_below.append(_below(trader_id, mode, account))
            continue
        try:
            # By the matcher of the account's first book (or here, without one).
            result = matcher.account_liquidate_submit(trader_id=trader_id, mode=mode)
        except Exception as e:
            # Whatever it was (a refusal, the database's, a bug), the account's own
            # transaction rolled back whole and nothing of it is left to poison the
            # others: it is still below maintenance, and the next sweep tries again.
            log.exception("liquidation of %s/%s failed; retried next sweep", trader_id, mode)
            LIQUIDATION_FAILURES.labels(error=error_label(e)).inc()
            failed += 1
            left_below.append(_below(trader_id, mode, account))
            continue
        if result is None:
            continue
        done.append(result)
        after = _account(trader_id, mode)
        if after.below_maintenance():
            left_below.append(_below(trader_id, mode, after))
    _sweep_record(now, liquidated=len(done), failed=failed, left_below=left_below)
    return done


def _below(trader_id: int, mode: str, account: margin.Account) -> list[Any]:
    return [
        trader_id,
        mode,
        dec(account.equity.quantize(risk.MONEY_QUANTUM)),
        dec(account.maintenance.quantize(risk.MONEY_QUANTUM)),
    ]


def _sweep_record(now: datetime, *, liquidated: int, failed: int, left_below: list) -> None:
    LiquidationSweep.objects.create(
        at=now, liquidated=liquidated, failed=failed, left_below=left_below
    )
    # Keep the table small: the newest SWEEPS_KEPT rows (one DELETE, by primary key).
    oldest_kept = LiquidationSweep.objects.order_by("-pk").values("pk")[
        SWEEPS_KEPT - 1 : SWEEPS_KEPT
    ]
    LiquidationSweep.objects.filter(pk__lt=Subquery(oldest_kept)).delete()


@dataclass
class _Progress:
    events: Emitter
    advance: Decimal = Decimal(0)  # what the fund advanced, in all
    repaid: Decimal = Decimal(0)  # what the account gave back of it
    adl_fund: Decimal = Decimal(0)  # what the fund paid in auto-deleverage transfers
    closed_notional: Decimal = Decimal(0)
    adl_qty: Decimal = Decimal(0)
    steps: list[dict] = field(default_factory=list)


def liquidate_account(*, trader_id: int, mode: str) -> Liquidation | None:
    """Liquidate one account if it is below maintenance, in one transaction: it
    finishes, or rolls back whole. Returns the record, None if the account is healthy
    (or became so once its orders were cancelled)."""
    user = get_user_model().objects.get(pk=trader_id)
    with transaction.atomic():
        # Books first, in pk order, then balances: the order every writer takes its
        # locks in. Every book the account has a position or an open order in: its
        # orders are cancelled and its positions closed under these locks, so nothing
        # of its own can trade in between.
        books_lock(market_ids=account_market_ids(trader_id, mode), mode=mode)
        orders_cancel_all(trader=user, mode=mode, reason="LIQUIDATION")
        account = _account(trader_id, mode, lock=True)
        if not account.below_maintenance():
            return None
        record = Liquidation(
            trader_id=trader_id, mode=mode, equity=account.equity, maintenance=account.maintenance
        )
        progress = _Progress(events=Emitter(mode))
        for exposure in sorted(account.exposures, key=lambda e: e.value(), reverse=True):
            _close(user, mode, exposure.position.market_id, progress)
        _settle_with_fund(user, mode, progress, record)
        record.adl_qty = progress.adl_qty
        record.detail = {"steps": progress.steps}
        record.save()
        # The account's balance as the liquidation leaves it (repaid, fee paid), and
        # what auto-deleverage did to it and its counterparties.
        progress.events.paid_keys([trader_id], QUOTE)
        payload = {
            "mode": mode,
            "equity": dec(record.equity),
            "maintenance": dec(record.maintenance),
            "insurancePaid": dec(record.insurance_paid),
            "fee": dec(record.fee),
            "steps": progress.steps,
        }
        progress.events.liquidated(trader_id, payload)
        progress.events.send_on_commit()
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


def _adl_price(cash: Decimal, e: margin.Exposure) -> Decimal:
    """The price auto-deleverage closes `e` at: where the account's own cash is
    exhausted, so that the counterparties bear what the book would not and the fund
    pays nothing for a price no book gave. A long option is sold at its mark: at any
    lower price the account's asset would be handed to whoever is short it."""
    tick = e.position.market.tick_size
    if e.is_option and e.size > 0:
        return (max(e.mark, Decimal(0)) / tick).quantize(Decimal(1), rounding=ROUND_FLOOR) * tick
    return _on_tick(_price_for_need(cash, e, Decimal(0)), tick, e.size)


def _fund_available(mode: str) -> Decimal:
    insurance_id = system_account_id(INSURANCE_ACCOUNT)
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


def _ioc(
    user: AbstractBaseUser, e: margin.Exposure, mode: str, limit: Decimal, progress: _Progress
) -> Decimal:
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


def _close(user: AbstractBaseUser, mode: str, market_id: int, progress: _Progress) -> None:
    """Close one position: (1) into the book no worse than the bankruptcy price; (2) what
    is left, into the book at worse prices as far as the insurance fund can cover the
    loss; (3) what is still left, by auto-deleveraging at the price the account's own
    cash can pay, once the fund's unused advance is back."""
    e = _exposure(user.pk, mode, market_id)
    if e is None:
        return
    m = e.position.market
    insurance_id = system_account_id(INSURANCE_ACCOUNT)
    step: dict = {"market": m.symbol, "size": dec(e.size)}

    def advance(amount: Decimal) -> None:
        if amount > 0:
            _move(insurance_id, user.pk, mode, amount, "advance")
            progress.advance += amount

    account = _account(user.pk, mode, lock=True)
    cash = account.cash - account.locked
    bkr = account.bankruptcy_price(e)
    fund = _fund_available(mode)
    limit = _in_band(_on_tick(bkr if bkr is not None else Decimal(0), m.tick_size, e.size), e)
    need = _need(cash, e, limit)
    if need > fund:
        # The fund cannot even pay the fees at the bankruptcy price: stay within cash.
        limit = _in_band(_on_tick(_price_for_need(cash, e, Decimal(0)), m.tick_size, e.size), e)
        need = min(_need(cash, e, limit), fund)
    advance(need)
    step["limit"] = dec(limit)
    left = _ioc(user, e, mode, limit, progress)

    fund = _fund_available(mode) if left else Decimal(0)
    if left and fund > 0:
        e = _exposure(user.pk, mode, market_id)
        cash = _cash(user.pk, mode)
        worse = _in_band(_on_tick(_price_for_need(cash, e, fund), m.tick_size, e.size), e)
        if worse != limit:
            advance(min(_need(cash, e, worse), fund))
            step["fundLimit"] = dec(worse)
            left = _ioc(user, e, mode, worse, progress)

    if left:
        # The fund advanced for prices the book did not give: that much goes back
        # before the counterparties are closed, or the deleveraging price would hand
        # them the fund.
        _repay_advance(user, mode, progress)
        e = _exposure(user.pk, mode, market_id)
        price = _adl_price(_cash(user.pk, mode), e)
        step["adl"] = dec(abs(left))
        step["adlPrice"] = dec(price)
        step.update(_auto_deleverage(user, m, mode, left, price, progress))
    progress.steps.append(step)


def _in_band(limit: Decimal, e: margin.Exposure) -> Decimal:
    """`limit` held inside the market's price band around the mark: the book closes a
    position no worse than any trader's order could trade. A bid resting far below the
    mark in wait for a liquidation would otherwise buy the position there, and the
    insurance fund would pay the difference to its owner."""
    m = e.position.market
    if e.size > 0:
        return max(limit, _on_tick(e.mark * (1 - m.price_band), m.tick_size, e.size))
    cap = _on_tick(e.mark * (1 + m.price_band), m.tick_size, e.size)
    return cap if limit <= 0 else min(limit, cap)


def _auto_deleverage(
    user: AbstractBaseUser, market, mode: str, size: Decimal, price: Decimal, progress: _Progress
) -> dict[str, str]:
    """Close `size` of the trader's position at `price` against the most profitable
    opposite positions (ranked by unrealized PnL per unit of cost). The caller holds the
    book's lock. Returns what the transfer could not collect, for the record."""
    against = {"size__lt": 0} if size > 0 else {"size__gt": 0}
    opposite = [
        p for p in positions_lock(market=market, mode=mode, **against) if p.trader_id != user.pk
    ]
    mark = Book.objects.get(market=market, mode=mode).mark_price or market.mark_price or price

    def profit_ratio(p: Position) -> Decimal:
        value = p.size * mark - p.open_notional
        return value / abs(p.open_notional) if p.open_notional else Decimal(0)

    opposite.sort(key=profit_ratio, reverse=True)
    remaining = abs(size)
    chosen: list[tuple[Position, Decimal]] = []
    for p in opposite:
        if not remaining:
            break
        q = min(remaining, abs(p.size))
        remaining -= q
        chosen.append((p, q))
    if remaining:
        log.error("auto-deleverage of %s in %s left %s unmatched", user, market, remaining)
    _orders_released(market, mode, [p.trader_id for p, _ in chosen])

    (mine,) = positions_lock(trader=user, market=market, mode=mode)
    now = timezone.now()
    option = market.kind == MarketKind.OPTION
    liquidated_side = Side.SELL if size > 0 else Side.BUY
    other_side = Side.BUY if size > 0 else Side.SELL
    # What each trader is owed (> 0) or owes: realized PnL, or an option's premium.
    amounts: dict[int, Decimal] = {}
    orders: list[Order] = []
    trades: list[Trade] = []
    fills: list[Fill] = []
    touched: dict[int, Position] = {mine.pk: mine}
    for p, q in chosen:
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
        orders += [taker, maker]
        for order, pos in ((taker, mine), (maker, p)):
            liquidity = Liquidity.TAKER if order is taker else Liquidity.MAKER
            fill = fill_new(trade, order, fee=Decimal(0), liquidity=liquidity)
            fill.save()
            fills.append(fill)
            pos.market = market
            settled = position_settle(pos, q if order.side == Side.BUY else -q, price)
            touched[pos.pk] = pos
            amounts[order.trader_id] = amounts.get(order.trader_id, Decimal(0)) + settled.cash
        progress.adl_qty += q
        progress.closed_notional += q * price
    candles_record(trades)
    Position.objects.bulk_update(touched.values(), ["size", "open_notional", "realized_pnl"])
    # Orders that could only shrink these positions, now closed or turned, go.
    orders_shrinking_cleared(
        book=book_lock(market_id=market.pk, mode=mode), positions=touched.values()
    )
    events = progress.events
    events.changed(market, trades=trades, orders=[(o, None) for o in orders], fills=fills)
    events.moved(market.symbol, touched.values())
    events.paid_keys(amounts, QUOTE)
    owed = {t: a for t, a in amounts.items() if a}
    if not owed:
        return {}
    # No payer pays more than it has available (its balance never goes below what it
    # locks); the fund covers what a payer lacks, and beyond the fund the receivers get
    # less. Futures' PnL settles their cost basis: the amounts add up to what it says.
    result = transfers_settle(
        amounts=owed,
        asset=QUOTE,
        mode=mode,
        reason=settled.reason,
        ref=f"adl:{trades[0].pk}",
        expected_net=Decimal(0) if option else sum(owed.values(), Decimal(0)),
    )
    progress.adl_fund -= result.insurance
    shown = {"adlShortfall": result.shortfall, "adlSocialised": result.socialised}
    return {k: dec(v) for k, v in shown.items() if v}


def _orders_released(market, mode: str, trader_ids: list[int]) -> None:
    """Cancel the open orders these counterparties have in `market` that lock cash: their
    payment may need it, and their position there, which those orders were margined
    against, is being closed. Orders that lock nothing (reduce-only, covered option
    sells) stay as long as they still shrink what is left (`orders_shrinking_cleared`).
    The caller holds the book's lock; it is read again here for its current seq."""
    orders = list(
        Order.objects.filter(
            trader_id__in=trader_ids,
            market=market,
            mode=mode,
            status__in=OPEN_STATUSES,
            reserved__gt=0,
        ).order_by("id")
    )
    if orders:
        orders_cancel_in_book(book_lock(market_id=market.pk, mode=mode), orders, "ADL")


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


def _repay_advance(user: AbstractBaseUser, mode: str, progress: _Progress) -> None:
    """Give the fund back what it advanced, as far as the account's cash goes."""
    repay = min(progress.advance - progress.repaid, max(_cash(user.pk, mode), Decimal(0)))
    if repay > 0:
        insurance_id = system_account_id(INSURANCE_ACCOUNT)
        _move(user.pk, insurance_id, mode, repay, "advance repaid")
        progress.repaid += repay


def _settle_with_fund(
    user: AbstractBaseUser, mode: str, progress: _Progress, record: Liquidation
) -> None:
    _repay_advance(user, mode, progress)
    cash = _cash(user.pk, mode)
    fee = min(
        max(cash, Decimal(0)), progress.closed_notional * Decimal(settings.LIQUIDATION_FEE_RATE)
    )
    fee = fee.quantize(risk.MONEY_QUANTUM)
    if fee:
        insurance_id = system_account_id(INSURANCE_ACCOUNT)
        _move(user.pk, insurance_id, mode, fee, "liquidation fee")
    record.insurance_paid = progress.advance - progress.repaid + progress.adl_fund
    record.fee = fee
