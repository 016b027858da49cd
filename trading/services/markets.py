"""Market lifecycle: pause, resume, delist, leverage choice."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from dexsite import sql
from dexsite.db import retrying
from dexsite.errors import ExchangeError
from ledger.services import balances_lock
from trading import margin, risk
from trading.emit import Emitter
from trading.locks import market_lock
from trading.models import OPEN_STATUSES, Market, MarketKind, MarketStatus, Order, Position
from trading.orders.cancel import orders_cancel_all
from trading.presenters import dec
from trading.services.books import book_lock


def market_status_move(market: Market, before: tuple[str, ...], status: str) -> bool:
    """Set the market's status to `status` where it is one of `before` at that moment
    (the UPDATE is conditional: behind another transaction's lock it sees that one's
    outcome, so a pause that waited for a delist leaves the market delisted). The
    realtime layer hears of it on commit. Whether it moved."""
    moved = Market.objects.filter(pk=market.pk, status__in=before).update(status=status)
    if not moved:
        return False
    market.status = status
    events = Emitter(mode="")
    events.market_status(market.symbol, status)
    events.send_on_commit()
    return True


def market_pause(*, market: Market) -> bool:
    """New orders are refused (MARKET_PAUSED); cancels still work. Whether it was
    active (and is now paused)."""
    with transaction.atomic():
        return market_status_move(market, (MarketStatus.ACTIVE,), MarketStatus.PAUSED)


def market_resume(*, market: Market) -> bool:
    """Whether it was paused (and is now active again)."""
    with transaction.atomic():
        return market_status_move(market, (MarketStatus.PAUSED,), MarketStatus.ACTIVE)


def market_delist(*, market: Market) -> list[int]:
    """Stop the market for good: refuse new orders, cancel every resting one and release
    what it reserved. The status is set first, and the orders cancelled after it under
    each book's lock, so that no order can slip in between: in one transaction here, or,
    where matchers own the books, by each book's matcher, after the orders it was
    already placing (which may have seen the market before it was delisted). A
    delisted market stays so: no pause or resume moves it again; delisting it again
    cancels what is left (a delisting whose matcher did not answer is finished so)."""
    from trading import matcher

    with transaction.atomic():
        market_lock(market.pk)
        market_status_move(
            market, (MarketStatus.ACTIVE, MarketStatus.PAUSED), MarketStatus.DELISTED
        )
        if not matcher.remote():
            return orders_cancel_all(trader=None, market=market.symbol, reason="DELISTED")
    return matcher.market_orders_cancel_submit(symbol=market.symbol)


@retrying
def leverage_set(
    *, trader: AbstractBaseUser, market: Market, mode: str, leverage: Decimal
) -> Decimal:
    """Set the trader's leverage in a derivatives market. The margin their open orders
    there reserve follows it at once, as if each were placed again now (what is left of
    it, at its price): a lower leverage locks more, a higher one frees some. Lowering it
    is refused (INSUFFICIENT_MARGIN) where the account's positions and orders would then
    need more than it has."""
    if not market.is_derivative:
        raise ExchangeError(
            "INVALID_MARKET", "leverage applies to derivatives only", field="market"
        )
    if leverage < 1 or leverage > market.max_leverage:
        raise ExchangeError(
            "INVALID_LEVERAGE",
            f"leverage must be between 1 and {dec(market.max_leverage)}",
            field="leverage",
        )
    with transaction.atomic():
        # The book first, as an order takes it: its orders' reservations change only
        # under it. Then the trader's USDC row, the lock every order of theirs in this
        # mode takes, so no order is placed while the margin check below runs.
        book_lock(market_id=market.pk, mode=mode)
        key = (trader.pk, market.quote, mode)
        balances = balances_lock([key])
        position, _ = Position.objects.get_or_create(trader=trader, market=market, mode=mode)
        before = risk.effective_leverage(position.leverage, market.max_leverage)
        after = risk.effective_leverage(leverage, market.max_leverage)
        position.leverage = leverage
        Position.objects.filter(pk=position.pk).update(leverage=leverage)
        orders = _orders_reserved_again(trader, market, mode, after)
        balance = balances.get(key)
        # The risk gate, on the account at the new leverage: what the orders lock on
        # top must fit, and a lower leverage must leave the positions carried. A higher
        # one only frees margin, and is never refused.
        exposures = margin.exposures_for(trader.pk, mode)
        for i, e in enumerate(exposures):
            if e.position.pk == position.pk:
                exposures[i] = replace(e, leverage=after)
        account = margin.account_of(balance, exposures)
        extra = sum((new - o.reserved for o, new in orders), Decimal(0))
        if after < before and margin.shortfall(account, reserve=extra, after=account) > 0:
            raise ExchangeError(
                "INSUFFICIENT_MARGIN",
                "open positions and orders would not fit the margin of this leverage",
                field="leverage",
            )
        if orders and balance is not None:  # (orders reserve from it: it exists)
            balance.locked += extra
        if orders and balance is not None:
            for o, new in orders:
                o.reserved = new
            sql.update([o for o, _ in orders], ["reserved"])
            sql.update([balance], ["locked"])
            events = Emitter(balance.mode)
            events.paid([balance])
            events.send_on_commit()
    return after


def _orders_reserved_again(
    trader: AbstractBaseUser, market: Market, mode: str, leverage: Decimal
) -> list[tuple[Order, Decimal]]:
    """The trader's open orders in the market whose reservation depends on the leverage
    (perpetuals' and futures' orders that may open a position), with what each reserves
    at `leverage`, where that differs."""
    if market.kind not in (MarketKind.PERP, MarketKind.FUTURE):
        return []
    found = Order.objects.filter(
        trader=trader, market=market, mode=mode, status__in=OPEN_STATUSES, reduce_only=False
    ).order_by("id")
    out = []
    for o in found:
        left = o.qty - o.filled_qty
        new = risk.order_margin(o.price * left, leverage, market.taker_fee)
        if new != o.reserved:
            out.append((o, new))
    return out
