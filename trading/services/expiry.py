"""Expiry of dated futures and options.

At expiry the settlement price is the average index of the last 30 minutes. Open
orders are cancelled; futures positions close at that price (PnL realized); options
pay their intrinsic value in cash, shorts to longs. Then the market is SETTLED and
`marketState` is broadcast. A Settlement row (one per market) makes it happen once.
Each market settles in a transaction of its own: one that raises is logged, counted
(`dex_expiry_failures_total`) and tried again on the next run, the others go on.
Every holder hears of it after the commit (`positionUpdate`, `balanceUpdate`), as of a
fill.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from ledger.models import LedgerReason
from trading import matcher, pricing
from trading.emit import Emitter
from trading.locks import books_lock, market_lock
from trading.metrics import EXPIRY_FAILURES, error_label
from trading.models import Book, Market, MarketKind, MarketStatus, Position, Settlement
from trading.orders.cancel import orders_cancel_all
from trading.services.markets import market_status_move
from trading.services.prices import index_average, index_is_fresh, indexes_current
from trading.services.transfers import transfers_settle
from trading.settle import position_settle

log = logging.getLogger(__name__)
SETTLEMENT_WINDOW = timedelta(minutes=30)


def settle_expired(now: datetime | None = None) -> list[Settlement]:
    now = now or timezone.now()
    due = Market.objects.filter(
        kind__in=(MarketKind.FUTURE, MarketKind.OPTION),
        expiry_at__lte=now,
        # A delisted market takes no orders, but its positions still settle at expiry.
        status__in=(MarketStatus.ACTIVE, MarketStatus.PAUSED, MarketStatus.DELISTED),
    )
    done = []
    for market in due:
        price = index_average(
            market.underlying, market.expiry_at - SETTLEMENT_WINDOW, market.expiry_at
        )
        if price is None:
            if not index_is_fresh(market.underlying, now):
                log.warning("expiry of %s waits: no index history and a stale index", market)
                continue
            price = indexes_current().get(market.underlying)
        if price is None:
            continue
        try:
            # By the matcher of the market's books (or here, without one).
            result = matcher.market_settle_submit(market=market, price=price)
        except Exception as e:
            # Its transaction rolled back whole; the market is still due next time.
            log.exception("expiry of %s failed; retried next run", market)
            EXPIRY_FAILURES.labels(error=error_label(e)).inc()
            continue
        if result is not None:
            done.append(result)
    return done


def market_settle(*, market: Market, price: Decimal) -> Settlement | None:
    orders_cancel_all(trader=None, market=market.symbol, reason="EXPIRED")
    with transaction.atomic():
        market = market_lock(market.pk)
        if market.status == MarketStatus.SETTLED:
            return None
        try:
            with transaction.atomic():
                settlement = Settlement.objects.create(market=market, price=price)
        except IntegrityError:
            return None
        books = books_lock(market_ids=[market.pk])
        # Again under the books' locks: an order may have come in since the first pass.
        orders_cancel_all(trader=None, market=market.symbol, reason="EXPIRED")
        for book in books:
            _settle_book(market, book.mode, price)
            Book.objects.filter(pk=book.pk).update(
                mark_price=price
                if market.kind == "FUTURE"
                else pricing.intrinsic(market.option_type, price, market.strike)
            )
        # From whatever it was: a delisted market's positions settle at expiry too.
        before = (MarketStatus.ACTIVE, MarketStatus.PAUSED, MarketStatus.DELISTED)
        market_status_move(market, before, MarketStatus.SETTLED)
        return settlement


def _settle_book(market: Market, mode: str, price: Decimal) -> None:
    positions = list(Position.objects.filter(market=market, mode=mode).exclude(size=0))
    if not positions:
        return
    # Every position closed at one price, settled as a fill there: a future at the
    # settlement price (its realized PnL is exactly what the open cost basis said, longs'
    # and shorts' sizes cancelling), an option at its intrinsic value (its holder is paid
    # that much a unit, its writer pays it).
    if market.kind == MarketKind.OPTION:
        price = pricing.intrinsic(market.option_type, price, market.strike)
    amounts: dict[int, Decimal] = {}
    for p in positions:
        p.market = market
        settled = position_settle(p, -p.size, price)
        amounts[p.trader_id] = amounts.get(p.trader_id, Decimal(0)) + settled.cash
    reason = LedgerReason.SETTLEMENT
    # Futures' realized PnL settles their open cost basis, not a counterparty: the
    # amounts add up to it (expected_net). Option payouts go from shorts to longs and
    # add up to zero. Either way a loser pays at most its cash; the fund (and, failing
    # it, the winners pro rata) absorbs the rest, so no cash goes negative.
    paid = transfers_settle(
        amounts={t: a for t, a in amounts.items() if a},
        asset=market.quote,
        mode=mode,
        reason=reason,
        ref=f"expiry:{market.symbol}",
        expected_net=sum(amounts.values(), Decimal(0))
        if market.kind == MarketKind.FUTURE
        else Decimal(0),
    )
    Position.objects.bulk_update(positions, ["size", "open_notional", "realized_pnl"])
    events = Emitter(mode)
    events.moved(market.symbol, positions)
    events.paid_keys((b.trader_id for b in paid.balances), market.quote)
    events.send_on_commit()
