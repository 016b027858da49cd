"""The demo's rolling series of dated futures and options: whenever one expires, the
next is listed, so that something is always trading."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from ledger.models import Mode
from trading.models import Book, Market, MarketKind, MarketStatus

D = Decimal
DEFAULT_SPOT = D("64000")


def next_expiry(now: datetime) -> datetime:
    """The next Friday 08:00 UTC at least a week away."""
    friday = now + timedelta(days=7 + (4 - now.weekday()) % 7)
    return friday.replace(hour=8, minute=0, second=0, microsecond=0)


def dated_specs(now: datetime, spot: Decimal = DEFAULT_SPOT) -> list[dict]:
    expiry = next_expiry(now)
    tag = expiry.strftime("%d%b%y").upper()
    # Strikes around the index, on a 5,000 grid.
    atm = (spot / 5000).quantize(D(1)) * 5000
    call_k, put_k = atm + 5000, atm - 5000
    option = {
        "tick_size": D("5"),
        "lot_size": D("0.01"),
        "min_notional": D("1"),
        "max_leverage": D("10"),
        "expiry_at": expiry,
        "base": "BTC",
        "underlying": "BTC",
        "kind": MarketKind.OPTION,
        "mark_iv": D("0.55"),
        "index_price": spot,
        # A model mark moves with volatility as well as the index: bands are wider.
        "price_band": D("0.5"),
        "market_slippage": D("0.5"),
        "mark_band": D("0.5"),
    }
    return [
        {
            "symbol": f"BTC-{tag}",
            "kind": MarketKind.FUTURE,
            "base": "BTC",
            "underlying": "BTC",
            "tick_size": D("0.5"),
            "lot_size": D("0.001"),
            "min_notional": D("10"),
            "max_leverage": D("20"),
            "expiry_at": expiry,
            "mark_price": spot,
            "index_price": spot,
        },
        {"symbol": f"BTC-{tag}-{call_k}-C", "strike": call_k, "option_type": "CALL", **option},
        {"symbol": f"BTC-{tag}-{put_k}-P", "strike": put_k, "option_type": "PUT", **option},
    ]


def market_ensure(spec: dict) -> tuple[Market, bool]:
    spec = dict(spec)
    symbol = spec.pop("symbol")
    with transaction.atomic():
        market, created = Market.objects.get_or_create(symbol=symbol, defaults=spec)
        for mode in Mode.values:
            Book.objects.get_or_create(market=market, mode=mode)
    return market, created


def series_roll(now: datetime | None = None) -> list[str]:
    """List the next future and options when none is live; returns new symbols."""
    now = now or timezone.now()
    live = Market.objects.filter(
        kind__in=(MarketKind.FUTURE, MarketKind.OPTION),
        status=MarketStatus.ACTIVE,
        expiry_at__gt=now,
    )
    if (
        live.filter(kind=MarketKind.FUTURE).exists()
        and live.filter(kind=MarketKind.OPTION).exists()
    ):
        return []
    index = (
        Market.objects.filter(underlying="BTC")
        .exclude(index_price=None)
        .values_list("index_price", flat=True)
        .first()
        or DEFAULT_SPOT
    )
    return [m.symbol for m, created in map(market_ensure, dated_specs(now, index)) if created]
