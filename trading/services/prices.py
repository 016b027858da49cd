"""Index and mark prices, and the tickers that publish them."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Case, DecimalField, F, Max, Min, Q, Sum, Value, When, Window
from django.db.models.expressions import RowRange
from django.db.models.functions import Coalesce
from django.utils import timezone

from dexsite.errors import ExchangeError
from trading import pricing, signals
from trading.feeds import configured_feeds
from trading.models import (
    OPEN_STATUSES,
    Book,
    IndexPrice,
    IndexSample,
    Market,
    MarketKind,
    MarketStatus,
    Order,
    Side,
)
from trading.presenters import dec

log = logging.getLogger(__name__)
DEFAULT_IV = Decimal("0.6")


def index_set(
    *, underlying: str, price: Decimal, source: str = "manual", at: datetime | None = None
) -> None:
    if price <= 0:
        raise ExchangeError("INVALID_PRICE", "an index price must be positive", field="price")
    at = at or timezone.now()
    with transaction.atomic():
        IndexPrice.objects.update_or_create(
            underlying=underlying, defaults={"price": price, "source": source, "updated_at": at}
        )
        IndexSample.objects.create(underlying=underlying, price=price, at=at)
        Market.objects.filter(underlying=underlying).update(index_price=price)


def indexes_current() -> dict[str, Decimal]:
    """The last index of every underlying a market trades, seeded from the markets'
    configured index where no feed has spoken yet."""
    current = dict(IndexPrice.objects.values_list("underlying", "price"))
    for underlying, price in (
        Market.objects.exclude(underlying="").values_list("underlying", "index_price").distinct()
    ):
        if underlying not in current and price:
            current[underlying] = price
    return current


def index_poll_feeds() -> int:
    """Ask every configured feed for fresh prices; returns how many were stored."""
    stored = 0
    for feed in configured_feeds():
        for underlying, price in feed.fetch(indexes_current()).items():
            index_set(underlying=underlying, price=price, source=feed.name)
            stored += 1
    return stored


def index_is_fresh(underlying: str, now: datetime | None = None) -> bool:
    """A stale index pauses funding and liquidations for its underlying rather than
    acting on old data."""
    now = now or timezone.now()
    updated = (
        IndexPrice.objects.filter(underlying=underlying)
        .values_list("updated_at", flat=True)
        .first()
    )
    return updated is not None and now - updated <= timedelta(seconds=settings.INDEX_STALE_SECONDS)


def index_average(underlying: str, start: datetime, end: datetime) -> Decimal | None:
    prices = list(
        IndexSample.objects.filter(underlying=underlying, at__gte=start, at__lte=end).values_list(
            "price", flat=True
        )
    )
    if not prices:
        return None
    return (sum(prices, Decimal(0)) / len(prices)).quantize(Decimal("1e-8"))


def impact_prices_get(
    *, books: Sequence[Book]
) -> dict[tuple[int, str], tuple[Decimal | None, Decimal | None]]:
    """Impact bid and ask of each of `books` (markets loaded), by (market id, mode): the
    average prices at which the book would take a sell and a buy of its market's impact
    notional; None for a side that cannot take it.

    One statement for all the books. It reads, side by side, only the resting orders the
    impact notional reaches (best price first, then time): an order is read while the
    value resting ahead of it is still short of the notional. (On SQLite that running
    sum is in floating point; only the cut, not the prices, depends on it.)"""
    if not books:
        return {}
    notionals = {b.market_id: pricing.impact_notional(b.market.max_leverage) for b in books}
    wanted = Q()
    for b in books:
        wanted |= Q(market_id=b.market_id, mode=b.mode)
    best_first = Case(When(side=Side.BUY, then=-F("price")), default=F("price"))
    value_ahead = Window(
        Sum(F("price") * (F("qty") - F("filled_qty"))),
        partition_by=[F("market_id"), F("mode"), F("side")],
        order_by=[best_first.asc(), F("id").asc()],
        frame=RowRange(start=None, end=-1),
    )
    notional = Case(
        *(When(market_id=pk, then=Value(n)) for pk, n in notionals.items()),
        output_field=DecimalField(),
    )
    rows = (
        Order.objects.filter(wanted, status__in=OPEN_STATUSES, price__isnull=False)
        .annotate(ahead=Coalesce(value_ahead, Value(Decimal(0))), notional=notional)
        .filter(ahead__lt=F("notional"))
        .order_by()
        .values_list("market_id", "mode", "side", "price", "qty", "filled_qty")
    )
    levels: dict[tuple[int, str, str], dict[Decimal, Decimal]] = defaultdict(dict)
    for market_id, mode, side, price, qty, filled in rows:
        level = levels[(market_id, mode, side)]
        level[price] = level.get(price, Decimal(0)) + qty - filled
    prices = {}
    for b in books:
        key, n = (b.market_id, b.mode), notionals[b.market_id]
        bids = sorted(levels.get((*key, Side.BUY), {}).items(), reverse=True)
        asks = sorted(levels.get((*key, Side.SELL), {}).items())
        prices[key] = (pricing.impact_price(bids, n), pricing.impact_price(asks, n))
    return prices


def best_prices(
    *, market_ids: Iterable[int]
) -> dict[tuple[int, str], tuple[Decimal | None, Decimal | None]]:
    """Best bid and ask of every book of these markets, in one query."""
    rows = (
        Order.objects.filter(status__in=OPEN_STATUSES, market_id__in=list(market_ids))
        .values("market_id", "mode")
        .annotate(bid=Max("price", filter=Q(side="BUY")), ask=Min("price", filter=Q(side="SELL")))
    )
    return {(r["market_id"], r["mode"]): (r["bid"], r["ask"]) for r in rows}


def marks_refresh(now: datetime | None = None) -> int:
    """Recompute the mark of every derivatives book and publish tickers (and option
    IVs and greeks). Returns the number of books marked.

    Perps and futures: see `pricing.futures_mark`; the basis average takes a sample
    only from a book deep enough on both sides. Options: Black-Scholes at the market's
    mark IV, which staff set and no order moves; the best bid's and ask's IVs are
    published for information only."""
    now = now or timezone.now()
    indexes = indexes_current()
    books = list(
        Book.objects.select_related("market")
        .filter(
            market__status__in=(MarketStatus.ACTIVE, MarketStatus.PAUSED),
        )
        .exclude(market__kind=MarketKind.SPOT)
    )
    options = [b for b in books if b.market.kind == MarketKind.OPTION]
    best = best_prices(market_ids={b.market_id for b in options}) if options else {}
    impact = impact_prices_get(books=[b for b in books if b.market.kind != MarketKind.OPTION])
    iv_events = []
    for book in books:
        m = book.market
        index = indexes.get(m.underlying) or m.index_price
        if index is None:
            continue
        if m.kind == MarketKind.OPTION:
            bid, ask = best.get((m.pk, book.mode), (None, None))
            years = pricing.years_until(m.expiry_at, now) if m.expiry_at else Decimal(0)
            vol = m.mark_iv or DEFAULT_IV
            book.mark_price = pricing.on_tick(
                pricing.bs_price(m.option_type, index, m.strike, years, vol), m.tick_size
            )
            g = pricing.greeks(m.option_type, index, m.strike, years, vol)
            bid_iv = (
                pricing.implied_vol(m.option_type, bid, index, m.strike, years) if bid else None
            )
            ask_iv = (
                pricing.implied_vol(m.option_type, ask, index, m.strike, years) if ask else None
            )
            body = {
                "markIv": dec(vol),
                "bidIv": dec(bid_iv),
                "askIv": dec(ask_iv),
                "delta": dec(g.delta),
                "gamma": dec(g.gamma),
                "vega": dec(g.vega),
                "theta": dec(g.theta),
            }
            iv_events.append((m.symbol, book.mode, body))
        else:
            impact_bid, impact_ask = impact[(m.pk, book.mode)]
            if impact_bid is not None and impact_ask is not None:
                book.basis_avg = pricing.ema(
                    book.basis_avg, pricing.basis_sample(index, impact_bid, impact_ask)
                )
            book.mark_price = pricing.futures_mark(
                index=index,
                basis_avg=book.basis_avg,
                impact_bid=impact_bid,
                impact_ask=impact_ask,
                band=m.mark_band,
                tick=m.tick_size,
            )
    Book.objects.bulk_update(books, ["mark_price", "basis_avg"])
    for book in books:
        if book.mode == "REAL" and book.mark_price is not None:
            Market.objects.filter(pk=book.market_id).update(mark_price=book.mark_price)
    tickers_publish()
    for symbol, mode, body in iv_events:
        signals.option_iv_updated.send(sender=Market, market=symbol, mode=mode, iv=body)
    return len(books)


def tickers_publish() -> None:
    from trading.selectors import markets_list

    keys = ("markPrice", "indexPrice", "lastPrice", "change24h", "volume24h", "openInterest")
    for mode in ("REAL", "PAPER"):
        for m in markets_list(mode=mode):
            if m["status"] in (MarketStatus.DELISTED, MarketStatus.SETTLED):
                continue
            signals.ticker_updated.send(
                sender=Market,
                market=m["symbol"],
                mode=mode,
                ticker={"symbol": m["symbol"], "mode": mode, **{k: m[k] for k in keys}},
            )
            if m["kind"] == MarketKind.PERP:
                signals.funding_rate_updated.send(
                    sender=Market,
                    market=m["symbol"],
                    mode=mode,
                    rate=m["fundingRate"],
                    next_funding_ts=m["nextFundingTs"],
                )
