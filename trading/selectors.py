"""Reads. Nothing here writes or locks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Min, Q, Sum
from django.utils import timezone

from dexsite import sql
from dexsite.api import page_token, page_value
from dexsite.errors import ExchangeError
from ledger.models import Balance
from ledger.selectors import balances_of, balances_query
from trading import candles, depth, margin, risk
from trading.models import (
    LIVE_STATUSES,
    Book,
    Candle,
    Fill,
    Market,
    Order,
    Position,
    Trade,
)
from trading.presenters import (
    account_dict,
    balance_dict,
    dec,
    fill_dict,
    ms,
    order_dict,
    position_dict,
    trade_dict,
)


def market_get(symbol: str) -> Market:
    try:
        return Market.objects.get(symbol=symbol)
    except Market.DoesNotExist:
        raise ExchangeError("UNKNOWN_MARKET", f"no market {symbol}", status_code=404) from None


def account_market_ids(trader_id: int, mode: str) -> list[int]:
    """The markets, in id order, where the account (trader, mode) holds a position or a
    live order: the books a liquidation or a reset of it writes."""
    held = (
        Position.objects.filter(trader_id=trader_id, mode=mode)
        .exclude(size=0)
        .values_list("market_id", flat=True)
    )
    ordered = Order.objects.filter(
        trader_id=trader_id, mode=mode, status__in=LIVE_STATUSES
    ).values_list("market_id", flat=True)
    return sorted(set(held) | set(ordered))


def market_exists(symbol: str) -> bool:
    return Market.objects.filter(symbol=symbol).exists()


def _stats_24h(mode: str, markets: list[Market] | None) -> dict[int, dict[str, Any]]:
    """Volume and opening price over the last 24 hours, to the minute, per market (of
    `markets` only when given), from the minute candles: at most 1,441 rows a market,
    however much has traded."""
    since = candles.period_start(timezone.now() - timedelta(hours=24), 60)
    rows = Candle.objects.filter(mode=mode, resolution=60, start__gte=since)
    if markets is not None:
        rows = rows.filter(market__in=markets)
    stats = {
        r["market_id"]: r
        for r in rows.values("market_id").annotate(volume=Sum("volume"), first=Min("start"))
    }
    if stats:
        firsts = Q()
        for market_id, r in stats.items():
            firsts |= Q(market_id=market_id, start=r["first"])
        for market_id, price in rows.filter(firsts).values_list("market_id", "open"):
            stats[market_id]["open"] = price
    return stats


def markets_list(*, mode: str, symbol: str | None = None) -> list[dict[str, Any]]:
    markets = Market.objects.all()
    if symbol is not None:
        markets = markets.filter(symbol=symbol)
    markets = list(markets)
    books = {b.market_id: b for b in Book.objects.filter(mode=mode, market__in=markets)}
    stats = _stats_24h(mode, markets if symbol is not None else None)
    positions = Position.objects.filter(mode=mode, size__gt=0)
    if symbol is not None:
        positions = positions.filter(market__in=markets)
    oi = dict(positions.values("market_id").annotate(oi=Sum("size")).values_list("market_id", "oi"))
    out = []
    for m in markets:
        book = books.get(m.pk)
        last = book.last_price if book else None
        st = stats.get(m.pk, {})
        change = None
        if st.get("open") and last is not None:
            change = ((last - st["open"]) / st["open"] * 100).quantize(Decimal("0.01"))
        derivative = m.is_derivative
        out.append(
            {
                "symbol": m.symbol,
                "kind": m.kind,
                "base": m.base,
                "quote": m.quote,
                "tickSize": dec(m.tick_size),
                "lotSize": dec(m.lot_size),
                "minNotional": dec(m.min_notional),
                "maxLeverage": dec(m.max_leverage) if derivative else None,
                "makerFee": dec(m.maker_fee),
                "takerFee": dec(m.taker_fee),
                "maintenanceMarginRatio": dec(m.maintenance_margin_ratio) if derivative else None,
                "priceBand": dec(m.price_band),
                "marketSlippage": dec(m.market_slippage),
                "markBand": dec(m.mark_band) if derivative else None,
                "status": m.status,
                "markPrice": dec((book.mark_price if book else None) or m.mark_price)
                if derivative
                else None,
                "indexPrice": dec(m.index_price),
                "lastPrice": dec(last),
                "change24h": dec(change),
                "volume24h": dec(st.get("volume") or Decimal(0)),
                "openInterest": dec(oi.get(m.pk, Decimal(0))) if derivative else None,
                "fundingRate": dec(book.funding_rate) if book and m.kind == "PERP" else None,
                "nextFundingTs": ms(book.next_funding_at) if book and m.kind == "PERP" else None,
                "expiryTs": ms(m.expiry_at),
                "strike": dec(m.strike),
                "optionType": m.option_type or None,
                "markIv": dec(m.mark_iv),
            }
        )
    return out


def depth_get(*, symbol: str, mode: str, levels: int = 50) -> dict[str, Any]:
    """The book's best `levels` a side and the seq they belong to (trading/depth.py:
    what it costs, and why it is never stale)."""
    return depth.depth_get(symbol=symbol, mode=mode, levels=levels)


def trades_recent(*, symbol: str, mode: str, limit: int = 100) -> list[dict[str, Any]]:
    market = market_get(symbol)
    rows = Trade.objects.filter(market=market, mode=mode).order_by("-id")[:limit]
    return [trade_dict(t) for t in rows]


INTERVALS = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}
MAX_CANDLES = 1000


def candles_get(
    *, symbol: str, mode: str, interval: str, start_ms: int | None, end_ms: int | None
) -> list[dict[str, Any]]:
    """OHLCV candles, ascending; at most MAX_CANDLES, the last one the one that holds
    `end_ms`. Built from the stored candles of the largest resolution that divides the
    interval (a 4h candle from four 1h ones)."""
    market = market_get(symbol)
    step = INTERVALS[interval] * 1000
    now_ms = int(timezone.now().timestamp() * 1000)
    end = end_ms if end_ms is not None else now_ms
    start = start_ms if start_ms is not None else end - step * 300
    start = max(start, end - step * MAX_CANDLES)
    start -= start % step
    to_dt = lambda v: datetime.fromtimestamp(v / 1000, tz=UTC)  # noqa: E731
    rows = (
        Candle.objects.filter(
            market=market,
            mode=mode,
            resolution=candles.resolution_for(INTERVALS[interval]),
            start__gte=to_dt(start),
            # The whole of the last interval: its stored periods up to its end.
            start__lt=to_dt(end - end % step + step),
        )
        .order_by("start")
        .values_list("start", *candles.PERIOD_FIELDS)
    )
    out: dict[int, candles.Period] = {}
    for at, *stored in rows.iterator(chunk_size=5000):
        bucket = ms(at)
        bucket -= bucket % step
        period = candles.Period(*stored)
        found = out.get(bucket)
        if found is None:
            out[bucket] = period
        else:
            found.add(period)
    return [
        {
            "ts": bucket,
            **{k: dec(getattr(p, k)) for k in ("open", "high", "low", "close", "volume")},
        }
        for bucket, p in sorted(out.items())
    ]


def orders_list(
    *,
    trader: AbstractBaseUser,
    mode: str | None,
    market: str | None,
    status: str | None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    qs = Order.objects.filter(trader=trader)
    if mode:
        qs = qs.filter(mode=mode)
    if market:
        qs = qs.filter(market__symbol=market)
    if status == "open":
        qs = qs.filter(status__in=LIVE_STATUSES)
    elif status:
        qs = qs.filter(status=status.upper())
    # Rows as named tuples with the attributes `order_dict` reads: a list of hundreds of
    # open orders is one of the API's larger answers, and model instances (an order and
    # its market per row) were most of its cost.
    rows = qs.order_by("-id").values_list(*_ORDER_SHOWN, "market__symbol", named=True)
    return [order_dict(o, o.market__symbol) for o in rows[:limit]]


_ORDER_SHOWN = (
    "pk",
    "client_order_id",
    "mode",
    "side",
    "type",
    "price",
    "qty",
    "filled_qty",
    "filled_notional",
    "status",
    "time_in_force",
    "reduce_only",
    "cancel_reason",
    "trigger_price",
    "trigger_by",
    "attached",
    "take_profit",
    "stop_loss",
    "callback_rate",
    "created_at",
    "updated_at",
)


def order_get(*, trader: AbstractBaseUser, order_id: int) -> dict[str, Any]:
    order = Order.objects.select_related("market").filter(pk=order_id, trader=trader).first()
    if order is None:
        raise ExchangeError("NOT_FOUND", "order not found", status_code=404)
    fills = [fill_dict(f, order.market.symbol) for f in order.fills.order_by("id")]
    return order_dict(order, order.market.symbol, fills)


def fills_page(
    *,
    trader: AbstractBaseUser,
    mode: str | None,
    market: str | None,
    limit: int,
    next_token: str | None,
) -> dict[str, Any]:
    """Own fills, newest first, keyset-paginated by id: stable while new fills arrive."""
    qs = Fill.objects.filter(trader=trader).select_related("market")
    if mode:
        qs = qs.filter(mode=mode)
    if market:
        qs = qs.filter(market__symbol=market)
    if next_token:
        qs = qs.filter(id__lt=page_value("f", next_token))
    rows = list(qs.order_by("-id")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "results": [fill_dict(f, f.market.symbol) for f in rows],
        "nextToken": page_token("f", rows[-1].pk) if more else None,
    }


def balances_list(*, trader: AbstractBaseUser, mode: str | None) -> list[dict[str, Any]]:
    qs = Balance.objects.filter(trader=trader)
    if mode:
        qs = qs.filter(mode=mode)
    return [balance_dict(b) for b in qs.order_by("mode", "asset")]


def positions_list(
    *, trader: AbstractBaseUser, mode: str | None, include_flat: bool = False
) -> list[dict[str, Any]]:
    """Positions at their book's mark, with margin and the estimated liquidation price
    of the cross-margined account (other positions held at their marks)."""
    modes = [mode] if mode else ["REAL", "PAPER"]
    cash = {b.mode: b for b in Balance.objects.filter(trader=trader, asset="USDC", mode__in=modes)}
    out = []
    for m in modes:
        exposures = margin.exposures_for(trader.pk, m, include_flat=include_flat)
        out += _position_dicts(exposures, cash.get(m))
    return out


def positions_in_market(*, trader_ids: Iterable[int], mode: str, market: str) -> dict[int, dict]:
    """Each trader's position in one market as `positions_list` shows it (its account's
    other positions weigh on the liquidation price), for many traders in two queries:
    what a fill publishes to everyone it touched."""
    ids = sorted(set(trader_ids))
    if not ids:
        return {}
    found = balances_of((t, "USDC", mode) for t in ids)
    cash = {b.trader_id: b for b in found.values()}
    accounts: dict[int, list[margin.Exposure]] = {}
    for e in margin.exposures_of(ids, mode):
        accounts.setdefault(e.position.trader_id, []).append(e)
    out = {}
    for trader_id, exposures in accounts.items():
        shown = position_shown(exposures, cash.get(trader_id), market)
        if shown is not None:
            out[trader_id] = shown
    return out


def position_shown(
    exposures: list[margin.Exposure], cash: Balance | None, market: str
) -> dict[str, Any] | None:
    """The account's position in `market` as `positions_list` shows it, given all the
    account's exposures (in its mode) and its USDC balance; None if it has none there."""
    found = _position_dicts(exposures, cash, market=market)
    return found[-1] if found else None


def _position_dicts(
    exposures: list[margin.Exposure], cash: Balance | None, market: str | None = None
) -> list[dict[str, Any]]:
    account = margin.account_of(cash, [e for e in exposures if e.size])
    out = []
    for e in exposures:
        p = e.position
        if market is not None and p.market.symbol != market:
            continue
        entry = (e.open_notional / e.size).quantize(risk.MONEY_QUANTUM) if e.size else None
        out.append(
            position_dict(
                p,
                p.market,
                {
                    "entry_price": entry,
                    "mark_price": e.mark,
                    "unrealized_pnl": e.size * e.mark - e.open_notional,
                    "margin": e.initial().quantize(risk.MONEY_QUANTUM),
                    "liquidation_price": account.liquidation_price(e) if e.size else None,
                    "leverage": e.leverage,
                },
            )
        )
    return out


# The cross-margin account's asset, and the precision of its margin ratio.
ACCOUNT_ASSET = "USDC"
RATIO_QUANTUM = Decimal("1e-8")


def account_get(*, trader: AbstractBaseUser, mode: str) -> dict[str, Any]:
    """The trader's cross-margin account in `mode`: `GET /account`."""
    return accounts_shown(trader_ids=[trader.pk], mode=mode)[trader.pk]


def accounts_shown(*, trader_ids: Iterable[int], mode: str) -> dict[int, dict[str, Any]]:
    """Each trader's account in `mode` as `GET /account` shows it, also to traders with
    no balance row or position (all zeros): what `accountUpdate` pushes. The balance
    rows and positions of them all in one round trip; in REAL, one statement more per
    funded account, for what may be withdrawn (`margin.withdrawable`, the vault's rule)."""
    ids = sorted(set(trader_ids))
    if not ids:
        return {}
    balances, exposures = sql.run_all(
        [
            balances_query({(t, ACCOUNT_ASSET, mode) for t in ids}),
            margin.exposures_of_query(ids, mode),
        ]
    )
    held: dict[int, list[margin.Exposure]] = {t: [] for t in ids}
    for e in exposures:
        if e.size:
            held[e.position.trader_id].append(e)
    return {t: _account_dict(t, mode, balances.get((t, ACCOUNT_ASSET, mode)), held[t]) for t in ids}


def _account_dict(
    trader_id: int, mode: str, balance: Balance | None, exposures: list[margin.Exposure]
) -> dict[str, Any]:
    """The account's figures (docs/api.md, "Account"): what pending withdrawals hold is
    neither cash nor locked (`margin.account_of`); unrealized PnL is that of the
    positions as `/positions` shows them (an option's against its premium)."""
    account = margin.account_of(balance, exposures)
    equity, maintenance = account.equity, account.maintenance
    if maintenance == 0:
        ratio = Decimal(0)
    elif equity <= 0:
        ratio = None  # past bankruptcy: no finite ratio, and liquidation is due
    else:
        # Rounded up: never shown safer than it is.
        ratio = (maintenance / equity).quantize(RATIO_QUANTUM, rounding=ROUND_UP)
    withdrawable = Decimal(0)
    if mode == "REAL" and balance is not None:
        withdrawable = margin.withdrawable(balance, trader_id)
    q = risk.MONEY_QUANTUM
    return account_dict(
        mode,
        {
            "equity": equity.quantize(q),
            "cash": account.cash,
            "unrealized_pnl": sum(
                (e.size * e.mark - e.open_notional for e in exposures), Decimal(0)
            ).quantize(q),
            "initial_margin": account.initial.quantize(q),
            "maintenance_margin": maintenance.quantize(q),
            "margin_ratio": ratio,
            "available_to_trade": margin.available(account).quantize(q, rounding=ROUND_DOWN),
            "available_to_withdraw": withdrawable,
        },
    )


def open_interest(*, market: Market, mode: str) -> dict[str, Decimal]:
    agg = Position.objects.filter(market=market, mode=mode).aggregate(
        long=Sum("size", filter=Q(size__gt=0)), short=Sum("size", filter=Q(size__lt=0))
    )
    return {"long": agg["long"] or Decimal(0), "short": -(agg["short"] or Decimal(0))}
