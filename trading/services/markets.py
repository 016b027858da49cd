"""Market lifecycle: pause, resume, delist, leverage choice."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from accounts.models import User
from dexsite.db import retrying
from dexsite.errors import ExchangeError
from trading import risk, signals
from trading.models import Market, MarketStatus, Position
from trading.services.orders import _free_margin, _positions_for, orders_cancel_all


def _set_status(market: Market, status: str) -> None:
    Market.objects.filter(pk=market.pk).update(status=status)
    market.status = status
    symbol = market.symbol
    transaction.on_commit(
        lambda: signals.market_state_changed.send(sender=Market, market=symbol, status=status)
    )


def market_pause(*, market: Market) -> None:
    """New orders are refused (MARKET_PAUSED); cancels still work."""
    with transaction.atomic():
        if market.status == MarketStatus.ACTIVE:
            _set_status(market, MarketStatus.PAUSED)


def market_resume(*, market: Market) -> None:
    with transaction.atomic():
        if market.status == MarketStatus.PAUSED:
            _set_status(market, MarketStatus.ACTIVE)


def market_delist(*, market: Market) -> list[int]:
    """Stop the market for good: refuse new orders, cancel every resting one and release
    what it reserved. The status is set first, under each book's lock taken by the
    cancel, so that no order can slip in between."""
    with transaction.atomic():
        Market.objects.select_for_update().get(pk=market.pk)
        _set_status(market, MarketStatus.DELISTED)
        return orders_cancel_all(trader=None, market=market.symbol, reason="DELISTED")


@retrying
def leverage_set(*, trader: User, market: Market, mode: str, leverage: Decimal) -> Decimal:
    if not market.is_derivative:
        raise ExchangeError(
            "INVALID_MARKET", "leverage applies to derivatives only", field="market"
        )
    if leverage < 1 or leverage > market.max_leverage:
        raise ExchangeError(
            "INVALID_LEVERAGE",
            f"leverage must be between 1 and {market.max_leverage.normalize()}",
            field="leverage",
        )
    from accounts.services import balances_lock

    with transaction.atomic():
        # The trader's USDC row is the lock every order of theirs in this mode takes,
        # so no order is placed while the margin check below runs.
        balances = balances_lock([(trader.pk, market.quote, mode)])
        position, _ = Position.objects.get_or_create(trader=trader, market=market, mode=mode)
        previous = position.leverage
        position.leverage = leverage
        Position.objects.filter(pk=position.pk).update(leverage=leverage)
        positions = _positions_for(trader.pk, mode)
        for p in positions:
            if p.pk == position.pk:
                p.leverage = leverage
        free = _free_margin(balances.get((trader.pk, market.quote, mode)), positions)
        has_exposure = any(p.size for p in positions)
        if has_exposure and free < 0 and (previous is None or leverage < previous):
            raise ExchangeError(
                "INSUFFICIENT_MARGIN",
                "open positions would not fit the margin of this leverage",
                field="leverage",
            )
    return risk.effective_leverage(leverage, market.max_leverage)
