"""Perpetual funding.

Every minute the clock samples each perp book's premium index (impact bid/ask against
the index, read as the mark reads them: `prices.impact_prices_get`). At each funding
time the rate is the average premium plus clamp(interest - premium, +-0.05%), capped
per market, and every position pays `size x mark x rate` (longs pay shorts when
positive). Payments are booked as ledger rows that sum to exactly zero; the rounding
remainder (and any payer's shortfall) is the insurance fund's. A FundingEvent row,
unique per (book, time), makes each funding time settle once, however many clocks run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Avg
from django.utils import timezone

from ledger.models import LedgerReason
from trading import pricing
from trading.emit import Emitter
from trading.models import Book, FundingEvent, FundingSample, MarketKind, MarketStatus, Position
from trading.presenters import dec, ms
from trading.services.books import book_lock
from trading.services.prices import impact_prices_get, index_is_fresh, indexes_current
from trading.services.transfers import transfers_settle

log = logging.getLogger(__name__)
PAYMENT_QUANTUM = Decimal("1e-8")


def _perp_books():
    return Book.objects.select_related("market").filter(
        market__kind=MarketKind.PERP, market__status=MarketStatus.ACTIVE
    )


def interest_for(interval_seconds: int) -> Decimal:
    return Decimal(settings.FUNDING_INTEREST_8H) * Decimal(interval_seconds) / Decimal(8 * 3600)


def funding_sample(now: datetime | None = None) -> int:
    """One premium sample per perp book; also refreshes each book's predicted rate."""
    now = now or timezone.now()
    indexes = indexes_current()
    books = list(_perp_books())
    impact = impact_prices_get(books=books)
    taken = 0
    for book in books:
        m = book.market
        index = indexes.get(m.underlying)
        if index is None or not index_is_fresh(m.underlying, now):
            continue
        premium = pricing.premium_index(index, *impact[(m.pk, book.mode)])
        FundingSample.objects.create(book=book, premium=premium, at=now)
        taken += 1
        rate = _rate_for(book, now)
        Book.objects.filter(pk=book.pk).update(funding_rate=rate)
    return taken


def _rate_for(book: Book, now: datetime) -> Decimal:
    """The funding rate of the interval ending at the book's next funding time: the
    average premium sampled in it, never a sample an earlier funding already used (a
    funding settled early, by hand, ends its interval there)."""
    m = book.market
    since = (book.next_funding_at or now) - timedelta(seconds=m.funding_interval)
    last = (
        FundingEvent.objects.filter(book=book, funding_at__lte=now)
        .order_by("-funding_at")
        .values_list("funding_at", flat=True)
        .first()
    )
    if last is not None and last > since:
        since = last
    avg = FundingSample.objects.filter(book=book, at__gt=since, at__lte=now).aggregate(
        a=Avg("premium")
    )["a"]
    return pricing.funding_rate(Decimal(avg or 0), interest_for(m.funding_interval), m.funding_cap)


def funding_settle_due(now: datetime | None = None) -> list[FundingEvent]:
    now = now or timezone.now()
    events = []
    for book in _perp_books():
        if book.next_funding_at is None:
            Book.objects.filter(pk=book.pk, next_funding_at__isnull=True).update(
                next_funding_at=now + timedelta(seconds=book.market.funding_interval)
            )
        elif book.next_funding_at <= now:
            event = funding_settle(book_id=book.pk, now=now)
            if event is not None:
                events.append(event)
    return events


def funding_settle(*, book_id: int, now: datetime | None = None) -> FundingEvent | None:
    """Settle the due funding of one book; None when it is not due, its index is stale,
    or another clock settled it."""
    now = now or timezone.now()
    with transaction.atomic():
        # The book lock keeps positions still while they are charged.
        book = book_lock(
            market_id=Book.objects.get(pk=book_id).market_id, mode=Book.objects.get(pk=book_id).mode
        )
        m = book.market
        if book.next_funding_at is None or book.next_funding_at > now:
            return None
        if not index_is_fresh(m.underlying, now):
            log.warning(
                "funding of %s/%s paused: index of %s is stale", m.symbol, book.mode, m.underlying
            )
            return None
        funding_at = book.next_funding_at
        rate = _rate_for(book, now)
        mark = book.mark_price or m.mark_price or m.index_price
        try:
            with transaction.atomic():
                event = FundingEvent.objects.create(
                    book=book, funding_at=funding_at, rate=rate, mark_price=mark
                )
        except IntegrityError:
            return None  # another clock settled this funding time
        positions = list(Position.objects.filter(market=m, mode=book.mode).exclude(size=0))
        amounts = {
            p.trader_id: -(p.size * mark * rate).quantize(PAYMENT_QUANTUM, ROUND_HALF_EVEN)
            for p in positions
        }
        result = transfers_settle(
            amounts={t: a for t, a in amounts.items() if a},
            asset=m.quote,
            mode=book.mode,
            reason=LedgerReason.FUNDING,
            ref=f"funding:{m.symbol}:{ms(funding_at)}",
        )
        event.positions = len(positions)
        event.paid = sum((a for a in result.applied.values() if a > 0), Decimal(0))
        event.insurance_remainder = result.insurance
        event.save(update_fields=["positions", "paid", "insurance_remainder"])
        next_at = funding_at + timedelta(seconds=m.funding_interval)
        while next_at <= now:
            next_at += timedelta(seconds=m.funding_interval)
        Book.objects.filter(pk=book.pk).update(next_funding_at=next_at, funding_rate=rate)

        events = Emitter(book.mode)
        events.funding(m.symbol, rate=dec(rate), next_funding_ts=ms(next_at))
        for t, a in result.applied.items():
            payment = {"market": m.symbol, "mode": book.mode, "amount": dec(a), "rate": dec(rate)}
            events.funding_paid(t, payment)
        events.paid(result.balances)
        events.send_on_commit()
        return event
