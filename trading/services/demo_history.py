"""A demo install's past: a few days of prints on every demo book, so that each chart
interval has history and the 24-hour figures mean something on first run.

The prints are trades between two system accounts of the demo, each a filled order on
either side with its fill, at no fee; they move no cash and open no position (neither
account can log in or trade), so funds, open interest and every other invariant hold.
The candles are folded from them as the order path folds live trades."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from dexsite import sql
from ledger.services import system_account
from trading import candles, pricing
from trading.models import (
    Book,
    Fill,
    Liquidity,
    Market,
    MarketKind,
    MarketStatus,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)
from trading.services.prices import DEFAULT_IV, indexes_current

D = Decimal
BUYER, SELLER = "demo-history-a", "demo-history-b"

# How far apart the periods with prints are, by age: a minute for the last hour, half
# an hour for the day, four hours before that; two prints in each (its open and its
# close). Enough for every chart interval to have history and the 24-hour figures to
# mean something, few enough rows to write in a few seconds (about 2,500 trades on the
# demo's twelve books). Options, which trade least, get the four-hourly ones only.
SCHEDULE = ((3600, 60), (86400, 1800), (None, 14400))
SPARSE = ((None, 14400),)
PRINTS_PER_PERIOD = 2
# The notional of one print, in the quote, by kind (times a random 0.1 to 1.2).
PRINT_UNIT = {"PERP": D("15000"), "FUTURE": D("6000"), "OPTION": D("1500"), "SPOT": D("1500")}
# A minute's move, at most, in basis points (larger over longer periods, as the square
# root of time); options move several times as much as their underlying (and their
# coarse tick would swallow smaller moves).
MINUTE_BPS = 6


def _times(now: datetime, days: int, schedule: tuple) -> list[datetime]:
    """The starts of the periods with prints, oldest first."""
    out = []
    age, horizon = 0, days * 86400
    for until, step in schedule:
        limit = horizon if until is None else min(until, horizon)
        while age + step <= limit:
            age += step
            out.append(now - timedelta(seconds=age))
    return sorted(out)


def _reference(market: Market, book: Book, index: Decimal | None, now: datetime) -> Decimal:
    """Where the history ends: the book's mark, else the market's price from its index."""
    if market.kind == MarketKind.OPTION and index is not None:
        years = pricing.years_until(market.expiry_at, now)
        vol = market.mark_iv or DEFAULT_IV
        price = pricing.bs_price(market.option_type, index, market.strike, years, vol)
        return max(market.tick_size, pricing.on_tick(price, market.tick_size))
    return book.mark_price or market.mark_price or index or market.index_price


def _step_of(period: int) -> int:
    """The largest move in basis points over a period of `period` seconds."""
    return max(1, round(MINUTE_BPS * (period / 60) ** 0.5))


@transaction.atomic
def demo_history_backfill(*, days: int = 7, now: datetime | None = None) -> int:
    """Prints for the last `days` days on every active demo book that has none yet
    (so it is safe to run again); returns the number of trades written."""
    now = now or timezone.now()
    buyer, seller = system_account(BUYER), system_account(SELLER)
    indexes = indexes_current()
    books = Book.objects.select_related("market").filter(market__status=MarketStatus.ACTIVE)
    traded = set(Trade.objects.values_list("market_id", "mode").distinct())
    written = 0
    for book in books:
        market = book.market
        if (market.pk, book.mode) in traded:
            continue
        if market.expiry_at is not None and market.expiry_at <= now:
            continue
        index = indexes.get(market.underlying) or market.index_price
        end = _reference(market, book, index, now)
        if not end:
            continue
        rng = random.Random(f"{market.symbol}:{book.mode}")
        schedule = SPARSE if market.kind == MarketKind.OPTION else SCHEDULE
        prints = _walk(market, end, _times(now, days, schedule), rng)
        written += _record(market, book, prints, buyer.pk, seller.pk)
    return written


def _walk(
    market: Market, end: Decimal, times: list[datetime], rng: random.Random
) -> list[tuple[datetime, Decimal, Decimal, str]]:
    """(time, price, qty, taker side) of each print, oldest first: a random walk drawn
    backwards from `end`, so that the last print is at today's price."""
    tick, lot = market.tick_size, market.lot_size
    scale = 6 if market.kind == MarketKind.OPTION else 1
    unit = PRINT_UNIT.get(market.kind, D("1000"))
    periods = [
        (at, int((times[i + 1] - at).total_seconds()) if i + 1 < len(times) else 60)
        for i, at in enumerate(times)
    ]
    price = end
    out: list[tuple[datetime, Decimal, Decimal, str]] = []
    for at, period in reversed(periods):
        step = _step_of(period) * scale
        seconds = sorted(rng.randrange(period) for _ in range(PRINTS_PER_PERIOD))
        for second in reversed(seconds):
            qty = max(lot, (unit * D(rng.randint(1, 12)) / 10 / price / lot).quantize(D(1)) * lot)
            while qty * price < market.min_notional:
                qty += lot
            side = rng.choice((Side.BUY, Side.SELL))
            out.append((at + timedelta(seconds=second), price, qty, side))
            move = D(rng.randint(-step, step)) / D(10_000) / PRINTS_PER_PERIOD
            price = max(tick, pricing.on_tick(price * (1 - move), tick))
    out.reverse()
    return out


def _record(
    market: Market,
    book: Book,
    prints: list[tuple[datetime, Decimal, Decimal, str]],
    buyer_id: int,
    seller_id: int,
) -> int:
    """Write the prints as filled orders, trades and fills, fold them into candles, and
    leave the book's last price at the last one."""
    if not prints:
        return 0
    common = {"market": market, "mode": book.mode, "type": OrderType.LIMIT}
    orders = []
    for at, price, qty, taker_side in prints:
        for side in (taker_side, Side.SELL if taker_side == Side.BUY else Side.BUY):
            orders.append(
                Order(
                    **common,
                    trader_id=buyer_id if side == Side.BUY else seller_id,
                    side=side,
                    # The taker's order first: it crossed; the maker's rested (GTC).
                    time_in_force=TimeInForce.IOC if side == taker_side else TimeInForce.GTC,
                    price=price,
                    qty=qty,
                    filled_qty=qty,
                    filled_notional=price * qty,
                    status=OrderStatus.FILLED,
                    created_at=at,
                    updated_at=at,
                )
            )
    _insert(orders)
    trades = [
        Trade(
            market=market,
            mode=book.mode,
            price=price,
            qty=qty,
            taker_side=taker_side,
            taker_order=orders[2 * i],
            maker_order=orders[2 * i + 1],
            mark_price=price,
            created_at=at,
        )
        for i, (at, price, qty, taker_side) in enumerate(prints)
    ]
    _insert(trades)
    fills = []
    for i, trade in enumerate(trades):
        for order, liquidity in (
            (orders[2 * i], Liquidity.TAKER),
            (orders[2 * i + 1], Liquidity.MAKER),
        ):
            fills.append(
                Fill(
                    trade=trade,
                    order=order,
                    trader_id=order.trader_id,
                    market=market,
                    mode=book.mode,
                    side=order.side,
                    price=trade.price,
                    qty=trade.qty,
                    fee=D(0),
                    liquidity=liquidity,
                    created_at=trade.created_at,
                )
            )
    _insert(fills, keys=False)
    candles.candles_record(trades)
    Book.objects.filter(pk=book.pk).update(last_price=trades[-1].price)
    return len(trades)


def _insert(rows: list, *, keys: bool = True, chunk: int = 500) -> None:
    """Insert rows in statements of `chunk` rows (SQLite binds at most 32,766 values)."""
    for at in range(0, len(rows), chunk):
        sql.insert(rows[at : at + chunk], keys=keys)
