"""The exchange's invariants, checked against the database. Returns the violations
found (empty = healthy). Run after every test scenario; cheap enough for staff to run
on a live system (`manage.py check_invariants`).

What it checks:
- every balance equals the sum of its ledger rows, and none is negative;
- per asset and mode, the ledger moves only by money entering or leaving (deposits,
  withdrawals, faucet credits, paper write-offs): every internal movement nets to zero;
  confirmed deposits and approved withdrawals are booked exactly once, others never,
  and what pending withdrawals hold is what their balances say (the vault's checks,
  accounts/invariants.py, which accounts adds through `check_register`);
- locked funds equal what open orders and pending withdrawals reserve;
- orders: none filled past its quantity, statuses agree with what filled, resting
  orders sit on the tick and lot grids, every fill adds up to its order's fills;
- trades: one taker and one maker fill each, never a trader with itself; fees charged
  equal fees collected; every fill's trade and order, and every trade's two orders,
  exist (the database does not enforce these references, see `Trade`); the stored
  candles are exactly those of the trades;
- positions: long open interest equals short in every market and mode, a flat position
  carries no cost;
- books: rebuilt from open orders, uncrossed; a cached engine book that claims to be
  current holds exactly the same levels and orders in the same queue order;
- optionally, orders a client was told about (`acknowledged`) exist.

Conservation is necessary, not sufficient: a theft booked as a balanced transfer passes
every check above. The economic checks:
- solvency: no account is below zero equity where the last liquidation sweep saw it
  and left it open (left below maintenance, with negative equity then or now); none
  has been below maintenance through the last three sweeps and still is. An account
  that went below after the last sweep is the next sweep's to close, not a violation;
- fills: no trade of a trader's order (the risk engine's own are exempt) printed past
  its market's band on the taker's side of the mark it was matched at;
- marks: every perp's and future's mark lies within its market's `mark_band` of the
  index (of the current one, or of the one before it where the marks have not yet
  followed the latest).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from decimal import Decimal

from django.db import connection
from django.db.models import (
    BooleanField,
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Greatest

from ledger.models import Balance, LedgerEntry, LedgerReason
from ledger.services import FEE_ACCOUNT
from trading import candles, margin
from trading.engine import BookError, OrderBook
from trading.models import (
    OPEN_STATUSES,
    Book,
    Candle,
    Fill,
    IndexPrice,
    IndexSample,
    LiquidationSweep,
    Liquidity,
    MarketKind,
    MarketStatus,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    Trade,
)
from trading.presenters import dec
from trading.services import books as engine_books

# Money entering or leaving a mode. A paper reset writes a PAPER account off: money
# leaving, like a withdrawal.
EXTERNAL = (
    LedgerReason.DEPOSIT,
    LedgerReason.WITHDRAWAL,
    LedgerReason.FAUCET,
    LedgerReason.PAPER_RESET,
)
ZERO = Decimal(0)
# At most this many ids are quoted per violation.
SHOWN = 10
_DEC = DecimalField(max_digits=38, decimal_places=12)


# Checks of the apps built on trading (the vault's, accounts/invariants.py), each a
# function that appends the violations it finds. This module may not import them: each
# app adds its own from its AppConfig.ready(), and they run where the vault's checks
# always ran, after conservation.
_CHECKS_ABOVE: list[Callable[[list[str]], None]] = []


def check_register(check: Callable[[list[str]], None]) -> None:
    """Make `check_invariants` run `check` too (once, however often it is registered)."""
    if check not in _CHECKS_ABOVE:
        _CHECKS_ABOVE.append(check)


def check_invariants(acknowledged: Iterable[int] = ()) -> list[str]:
    """Every violation found, as one line each; `acknowledged` are order ids a client
    was given, each of which must exist."""
    problems: list[str] = []
    _balances(problems)
    _locks(problems)
    _conservation(problems)
    for check in _CHECKS_ABOVE:
        check(problems)
    _orders(problems)
    _references(problems)
    _fills(problems)
    _candles(problems)
    _acknowledged(problems, acknowledged)
    _positions(problems)
    _books(problems)
    _solvency(problems)
    _fill_bands(problems)
    _mark_bands(problems)
    return problems


def _ids(qs) -> list[int]:
    return list(qs.order_by("pk").values_list("pk", flat=True)[:SHOWN])


def _report(problems: list[str], what: str, qs) -> None:
    found = _ids(qs)
    if found:
        problems.append(f"{what}: {found}")


def _balances(problems: list[str]) -> None:
    """Every balance equals the sum of its ledger rows, and none is negative."""
    sums = {
        (r["trader_id"], r["asset"], r["mode"]): r["s"]
        for r in LedgerEntry.objects.values("trader_id", "asset", "mode").annotate(s=Sum("amount"))
    }
    for b in Balance.objects.all():
        key = (b.trader_id, b.asset, b.mode)
        ledger = sums.pop(key, ZERO)
        if b.total != ledger:
            problems.append(f"balance {key} total {b.total} != ledger sum {ledger}")
        if b.locked < 0 or b.total < b.locked:
            problems.append(f"balance {key} negative: total {b.total} locked {b.locked}")
    for key, s in sums.items():
        if s != 0:
            problems.append(f"ledger rows without a balance row: {key} sums to {s}")


def _locks(problems: list[str]) -> None:
    """Locked funds = what open orders reserve + what pending withdrawals hold, the
    balance's `withdrawing` (which the vault's check matches against the withdrawals
    themselves, accounts/invariants.py)."""
    reserved: dict[tuple, Decimal] = defaultdict(Decimal)
    for r in (
        Order.objects.filter(status__in=OPEN_STATUSES)
        .values("trader_id", "reserve_asset", "mode")
        .annotate(s=Sum("reserved"))
    ):
        reserved[(r["trader_id"], r["reserve_asset"], r["mode"])] += r["s"]
    # A balance with nothing locked holds no withdrawal either (a database constraint).
    for b in Balance.objects.filter(locked__gt=0):
        key = (b.trader_id, b.asset, b.mode)
        expected = reserved.pop(key, ZERO) + b.withdrawing
        if expected != b.locked:
            problems.append(
                f"balance {key} locked {b.locked} != open orders' reservations"
                f" + pending withdrawals {expected}"
            )
    for key, s in reserved.items():
        if s != 0:
            problems.append(f"open orders reserve {s} of {key} but nothing is locked")


def _conservation(problems: list[str]) -> None:
    """Per asset and mode, the ledger changes only by money entering or leaving; realized
    PnL sums to the cost basis still open (zero once flat)."""
    # Option premiums move in cash at each fill; only perps and futures carry their
    # cost basis until they are closed.
    open_cost = {
        (r["market__quote"], r["mode"]): r["s"]
        for r in Position.objects.exclude(market__kind=MarketKind.OPTION)
        .values("market__quote", "mode")
        .annotate(s=Sum("open_notional"))
    }
    for r in LedgerEntry.objects.values("asset", "mode").annotate(
        total=Sum("amount"), external=Sum("amount", filter=Q(reason__in=EXTERNAL))
    ):
        key = (r["asset"], r["mode"])
        internal = r["total"] - (r["external"] or ZERO) - (open_cost.pop(key, None) or ZERO)
        if internal != 0:
            problems.append(
                f"{r['asset']}/{r['mode']}: internal movements sum to {internal}, not 0"
            )
    for (asset, mode), s in open_cost.items():
        if s:
            problems.append(f"{asset}/{mode}: open cost basis {s} with no ledger rows")


def _orders(problems: list[str]) -> None:
    """No order filled past its quantity (also a database constraint), statuses agree
    with what filled, and what rests could rest. One query for the offenders, sorted
    out here."""
    open_ = Q(status__in=OPEN_STATUSES)
    rules = {
        "overfilled orders": Q(filled_qty__gt=F("qty")) | Q(filled_qty__lt=0),
        "FILLED orders not filled in full": Q(status=OrderStatus.FILLED) & ~Q(filled_qty=F("qty")),
        "NEW orders with fills": Q(status=OrderStatus.NEW) & ~Q(filled_qty=0),
        "PARTIALLY_FILLED orders not partially filled": Q(status=OrderStatus.PARTIALLY_FILLED)
        & (Q(filled_qty=0) | Q(filled_qty__gte=F("qty"))),
        "REJECTED orders that traded": Q(status=OrderStatus.REJECTED) & ~Q(filled_qty=0),
        "resting orders that cannot rest (MARKET, IOC, FOK or no price)": open_
        & (
            Q(type=OrderType.MARKET)
            | Q(price__isnull=True)
            | Q(price__lte=0)
            | ~Q(time_in_force__in=(TimeInForce.GTC, TimeInForce.POST_ONLY))
        ),
        "open orders in a delisted or settled market": open_
        & Q(market__status__in=(MarketStatus.DELISTED, MarketStatus.SETTLED)),
        "closed orders still reserving": ~open_ & Q(reserved__gt=0),
        "orders reserving a negative amount": Q(reserved__lt=0),
    }
    _sort_offenders(problems, Order.objects, rules)


def _sort_offenders(problems: list[str], qs, rules: dict[str, Q]) -> None:
    """Report the rows of `qs` matching each rule, with one query for all the rules."""
    annotations = {
        f"rule{i}": ExpressionWrapper(q, output_field=BooleanField())
        for i, q in enumerate(rules.values())
    }
    any_rule = Q()
    for q in rules.values():
        any_rule |= q
    found: dict[int, list[int]] = defaultdict(list)
    for row in (
        qs.filter(any_rule)
        .annotate(**annotations)
        .order_by("pk")
        .values_list("pk", *annotations)[: SHOWN * len(rules)]
    ):
        for i, hit in enumerate(row[1:]):
            if hit:
                found[i].append(row[0])
    for i, what in enumerate(rules):
        if found[i]:
            problems.append(f"{what}: {found[i][:SHOWN]}")


def _references(problems: list[str]) -> None:
    """No fill or trade refers to an order or trade that is not there."""

    def missing(model, field: str) -> Exists:
        return ~Exists(model.objects.filter(pk=OuterRef(field)))

    _report(
        problems,
        "fills whose trade or order is missing",
        Fill.objects.filter(missing(Trade, "trade_id") | missing(Order, "order_id")),
    )
    _report(
        problems,
        "trades whose taker or maker order is missing",
        Trade.objects.filter(missing(Order, "taker_order_id") | missing(Order, "maker_order_id")),
    )


def _candles(problems: list[str]) -> None:
    """Every stored candle is what the trades of its period add up to, and every
    period with trades has one."""
    if connection.vendor == "postgresql":
        wrong, missing = _candles_in_sql()
    else:
        wrong, missing = _candles_folded()
    if wrong:
        problems.append(f"candles that differ from their trades: {wrong[:SHOWN]}")
    if missing:
        problems.append(f"periods with trades but no candle: {sorted(missing)[:SHOWN]}")


def _period_name(market_id: int, mode: str, resolution: int, start) -> str:
    return f"{market_id}/{mode}/{resolution}s@{start:%Y-%m-%dT%H:%M}"


def _candles_folded() -> tuple[list[int], list[str]]:
    """In Python, every period in memory: for small databases (SQLite)."""
    trades = Trade.objects.order_by("id").values_list(
        "market_id", "mode", "created_at", "price", "qty", "id"
    )
    expected = candles.fold(trades.iterator(chunk_size=10000))
    wrong: list[int] = []
    for c in Candle.objects.order_by("pk").iterator(chunk_size=10000):
        want = expected.pop((c.market_id, c.mode, c.resolution, c.start), None)
        if candles.period_of(c) != want:
            wrong.append(c.pk)
    return wrong, [_period_name(*key) for key in expected]


# Per resolution: the trades summed up by period, against the stored candles of that
# resolution; only the rows that differ come back.
_CANDLES_CHECK = """
WITH t AS (
    SELECT market_id, mode,
           to_timestamp(floor(extract(epoch FROM created_at) / %(r)s) * %(r)s) AS start,
           count(*) AS trades, sum(qty) AS volume, max(price) AS high, min(price) AS low,
           min(id) AS first_id, max(id) AS last_id
    FROM trading_trade GROUP BY 1, 2, 3
), c AS (SELECT * FROM trading_candle WHERE resolution = %(r)s)
SELECT c.id, t.market_id, t.mode, t.start
FROM t
FULL OUTER JOIN c ON c.market_id = t.market_id AND c.mode = t.mode AND c.start = t.start
LEFT JOIN trading_trade f ON f.id = t.first_id
LEFT JOIN trading_trade l ON l.id = t.last_id
WHERE c.id IS NULL OR t.market_id IS NULL
   OR c.trades <> t.trades OR c.volume <> t.volume OR c.high <> t.high OR c.low <> t.low
   OR c.first_trade_id <> t.first_id OR c.last_trade_id <> t.last_id
   OR c.open <> f.price OR c.close <> l.price
ORDER BY c.id, t.start
LIMIT %(limit)s
"""


def _candles_in_sql() -> tuple[list[int], list[str]]:
    """In PostgreSQL: the sums over every trade stay in the database."""
    wrong: list[int] = []
    missing: list[str] = []
    with connection.cursor() as cur:
        for resolution in candles.RESOLUTIONS:
            cur.execute(_CANDLES_CHECK, {"r": resolution, "limit": SHOWN})
            for candle_id, market_id, mode, start in cur.fetchall():
                if candle_id is None:
                    missing.append(_period_name(market_id, mode, resolution, start))
                else:
                    wrong.append(candle_id)
    return sorted(wrong), missing


def _fills(problems: list[str]) -> None:
    """Every order's fills add up to its filled quantity and notional; every trade is
    one taker fill and one maker fill of its price and quantity, between two traders;
    the fees the fills charged are exactly the fees the ledger moved."""
    zero = Value(ZERO, output_field=_DEC)
    _report(
        problems,
        "orders whose fills do not add up to filledQty / filledNotional",
        Order.objects.annotate(
            fq=Coalesce(Sum("fills__qty"), zero),
            fn=Coalesce(Sum(F("fills__price") * F("fills__qty"), output_field=_DEC), zero),
        ).filter(~Q(fq=F("filled_qty")) | ~Q(fn=F("filled_notional"))),
    )
    _sort_offenders(
        problems,
        Trade.objects.annotate(
            takers=Count("fill", filter=Q(fill__liquidity=Liquidity.TAKER)),
            makers=Count("fill", filter=Q(fill__liquidity=Liquidity.MAKER)),
        ),
        {
            "trades without exactly one taker and one maker fill": ~Q(takers=1) | ~Q(makers=1),
            "trades of a trader with itself": Q(taker_order__trader_id=F("maker_order__trader_id")),
            "trades between orders of another market or mode": ~Q(
                taker_order__market_id=F("market_id")
            )
            | ~Q(maker_order__market_id=F("market_id"))
            | ~Q(taker_order__mode=F("mode"))
            | ~Q(maker_order__mode=F("mode")),
        },
    )
    _report(
        problems,
        "fills that disagree with their trade or order",
        Fill.objects.filter(
            ~Q(qty=F("trade__qty"))
            | ~Q(price=F("trade__price"))
            | ~Q(trader_id=F("order__trader_id"))
            | ~Q(side=F("order__side"))
            | ~Q(market_id=F("order__market_id"))
            | ~Q(mode=F("order__mode"))
            | ~Q(mode=F("trade__mode"))
            | (Q(liquidity=Liquidity.TAKER) & ~Q(order_id=F("trade__taker_order_id")))
            | (Q(liquidity=Liquidity.MAKER) & ~Q(order_id=F("trade__maker_order_id")))
        ),
    )
    charged = {
        (r["market__quote"], r["mode"]): r["s"]
        for r in Fill.objects.values("market__quote", "mode").annotate(s=Sum("fee"))
    }
    collected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    paid: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for r in (
        LedgerEntry.objects.filter(reason=LedgerReason.FEE)
        .values("asset", "mode", "trader__username")
        .annotate(s=Sum("amount"))
    ):
        key = (r["asset"], r["mode"])
        if r["trader__username"] == FEE_ACCOUNT:
            collected[key] += r["s"]
        else:
            paid[key] -= r["s"]
    for key in sorted(set(charged) | set(collected) | set(paid)):
        fills, got, gave = charged.get(key, ZERO), collected.get(key, ZERO), paid.get(key, ZERO)
        if not fills == got == gave:
            problems.append(
                f"fees {key}: fills charged {fills}, traders paid {gave}, fee account got {got}"
            )


def _acknowledged(problems: list[str], acknowledged: Iterable[int]) -> None:
    """Every order a client was told about exists (its fills are checked above)."""
    wanted = sorted({int(i) for i in acknowledged})
    missing: list[int] = []
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start : start + 5000]
        found = set(Order.objects.filter(pk__in=chunk).values_list("pk", flat=True))
        missing += [i for i in chunk if i not in found]
    if missing:
        problems.append(f"acknowledged orders missing: {missing[:SHOWN]} ({len(missing)} in all)")


def _positions(problems: list[str]) -> None:
    """Open interest: longs equal shorts in every market and mode; a flat position
    holds no cost; spot markets and settled markets hold no position."""
    for r in Position.objects.values("market_id", "mode").annotate(s=Sum("size")):
        if r["s"] != 0:
            problems.append(f"market {r['market_id']}/{r['mode']}: long - short = {r['s']}")
    _sort_offenders(
        problems,
        Position.objects,
        {
            "flat positions with an open cost": Q(size=0) & ~Q(open_notional=0),
            "open positions in a spot or settled market": ~Q(size=0)
            & (Q(market__kind=MarketKind.SPOT) | Q(market__status=MarketStatus.SETTLED)),
        },
    )


def _cached_engines() -> dict[int, tuple[int, OrderBook]]:
    with engine_books._cache_lock:
        return dict(engine_books._cache)


def engine_shape(engine: OrderBook) -> list[tuple]:
    """A book's full content, best level first per side: (side, price, level total,
    ((order id, owner, qty, reduce-only?), ...) in queue order)."""
    shape: list[tuple] = []
    for side, levels in (("BUY", engine.bids), ("SELL", engine.asks)):
        for key in sorted(levels):
            lvl = levels[key]
            price = -key if side == "BUY" else key
            orders = tuple((o.order_id, o.owner, o.qty, o.reduce_only) for o in lvl.orders.values())
            shape.append((side, price, lvl.total, orders))
    return shape


def _engine_consistent(engine: OrderBook) -> list[str]:
    """The engine's own bookkeeping: level totals, the order index and the sorted
    price ranks agree with the levels."""
    found: list[str] = []
    indexed = 0
    for side, levels in (("BUY", engine.bids), ("SELL", engine.asks)):
        for key, lvl in levels.items():
            price = -key if side == "BUY" else key
            if not lvl.orders or lvl.total != sum(o.qty for o in lvl.orders.values()):
                found.append(f"{side} level {price} total {lvl.total} != its orders")
            for oid, o in lvl.orders.items():
                if engine.orders.get(oid) is not o or o.side != side or o.price != price:
                    found.append(f"order {oid} misfiled at {side} {price}")
                if o.qty <= 0:
                    found.append(f"order {oid} rests {o.qty} lots")
            indexed += len(lvl.orders)
    if indexed != len(engine.orders):
        found.append(f"{len(engine.orders)} orders indexed, {indexed} on levels")
    if engine._bid_ranks != sorted(-k for k in engine.bids):
        found.append("bid ranks out of step with the bid levels")
    if engine._ask_ranks != sorted(-k for k in engine.asks):
        found.append("ask ranks out of step with the ask levels")
    return found


def _books(problems: list[str]) -> None:
    """Each book rebuilt from its open orders (as `engine_book_build` rebuilds it, from
    one query for every book) is uncrossed and its orders sit on the grid; a cached
    engine book as current as the row matches it exactly."""
    books = {(b.market_id, b.mode): b for b in Book.objects.select_related("market")}
    engines = {key: OrderBook() for key in books}
    rows = (
        Order.objects.filter(status__in=OPEN_STATUSES)
        .order_by("id")
        .values_list(
            "id",
            "market_id",
            "mode",
            "trader_id",
            "side",
            "price",
            "qty",
            "filled_qty",
            "reduce_only",
            "covered",
            "reserved",
        )
    )
    for (
        oid,
        market_id,
        mode,
        trader_id,
        side,
        price,
        qty,
        filled,
        reduce_only,
        covered,
        reserved,
    ) in rows:
        book = books.get((market_id, mode))
        if book is None:
            problems.append(f"order {oid} rests in market {market_id}/{mode}, which has no book")
            continue
        market = book.market
        if covered and reserved:
            problems.append(f"order {oid} is a covered sell but reserves {reserved}")
        remaining = qty - filled
        ticks, off_tick = divmod(price, market.tick_size) if price is not None else (0, 1)
        lots, off_lot = divmod(remaining, market.lot_size)
        if off_tick or ticks <= 0:
            problems.append(f"book {book}: order {oid} price {price} off the tick grid")
            continue
        if off_lot or lots <= 0:
            problems.append(f"book {book}: order {oid} rests {remaining}, not whole lots")
            continue
        try:
            engines[(market_id, mode)].add_resting(
                oid,
                trader_id,
                side,
                int(ticks),
                int(lots),
                reduce_only or covered,
            )
        except BookError as e:
            problems.append(f"book {book}: order {oid} cannot rest: {e}")
    cached = _cached_engines()
    for key, book in books.items():
        engine = engines[key]
        bid, ask = engine.best_bid(), engine.best_ask()
        if bid is not None and ask is not None and bid >= ask:
            problems.append(f"book {book} crossed: bid {bid} >= ask {ask} ticks")
        entry = cached.get(book.pk)
        if entry is None:
            continue
        seq, copy = entry
        if seq > book.seq:
            problems.append(
                f"book {book}: cached copy at seq {seq} is ahead of the row's {book.seq}"
            )
        elif seq == book.seq:
            problems += [f"book {book} cache: {p}" for p in _engine_consistent(copy)]
            if engine_shape(copy) != engine_shape(engine) or copy.depth() != engine.depth():
                problems.append(
                    f"book {book}: cached engine at seq {seq} differs from its open orders"
                )


# -- economic checks --------------------------------------------------------------------


def _solvency(problems: list[str]) -> None:
    """What the liquidation sweeps left open (`LiquidationSweep.left_below`: the
    accounts a sweep saw below maintenance and did not close), against the accounts now.

    - An account the latest sweep left below maintenance is reported if its equity was
      below zero then (the sweep left a loss open for others to carry) or is now (the
      sweep saw it and it has sunk since).
    - An account the last three sweeps in a row left below maintenance, and still below
      it now, is reported: it has been open for more than two sweeps.

    An account below zero that no sweep has seen since (the mark moved after the last
    one) is not reported: closing it is the next sweep's work. One query while the
    latest sweep left no account below maintenance, three otherwise."""
    sweeps = list(
        LiquidationSweep.objects.order_by("-at", "-pk").values_list("pk", "left_below")[:3]
    )
    left: list[dict[tuple[int, str], Decimal]] = []
    for pk, entries in sweeps:
        found: dict[tuple[int, str], Decimal] = {}
        for entry in entries:
            try:
                trader_id, mode, equity, _maintenance = entry
                found[(int(trader_id), str(mode))] = Decimal(equity)
            except (TypeError, ValueError, ArithmeticError):
                problems.append(f"liquidation sweep {pk}: left_below entry {entry!r} unreadable")
        left.append(found)
    if not left or not left[0]:
        return
    accounts = margin.accounts_with_positions()
    negative: list[tuple] = []
    stuck: list[tuple] = []
    for key in sorted(left[0]):
        then = left[0][key]
        account = accounts.get(key)
        now = account.equity if account is not None else None
        if then < 0 or (now is not None and now < 0):
            negative.append((*key, _money(then), _money(now)))
        if (
            len(left) == 3
            and all(key in earlier for earlier in left[1:])
            and account is not None
            and account.below_maintenance()
        ):
            stuck.append((*key, _money(now), _money(account.maintenance)))
    if negative:
        problems.append(
            "accounts below zero equity that the last liquidation sweep left open "
            f"(trader, mode, equity at the sweep, equity now): {negative[:SHOWN]}"
        )
    if stuck:
        problems.append(
            "accounts below maintenance through the last three liquidation sweeps "
            f"(trader, mode, equity, maintenance): {stuck[:SHOWN]}"
        )


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount.quantize(Decimal("0.01")))


def _fill_bands(problems: list[str]) -> None:
    """Every trade of a trader's order printed within its market's band of the mark it
    was matched at (`Trade.mark_price`: the book's mark, the index for spot), on the
    taker's side: a taker buy at most mark x (1 + band), a taker sell at least
    mark x (1 - band), band = max(price_band, market_slippage) (a limit order is held
    to the first, a market order to the second). The risk engine's trades (liquidation,
    auto-deleverage) close at the bankruptcy price by design and are exempt; trades
    from before marks were kept have none and are skipped. Every trade, in one query
    that returns only the offenders (checked again here in `Decimal`: SQLite compares in
    floating point). The bands are the market's as they are now: staff narrowing one
    makes the older trades that used the width it had look like offenders."""
    band = Greatest(F("market__price_band"), F("market__market_slippage"), output_field=_DEC)
    reach = F("mark_price") * F("band")
    rows = (
        Trade.objects.filter(liquidation=False, mark_price__isnull=False)
        .annotate(band=band)
        .filter(
            Q(taker_side=Side.BUY, price__gt=F("mark_price") + reach)
            | Q(taker_side=Side.SELL, price__lt=F("mark_price") - reach)
        )
        .order_by("pk")
        .values_list("pk", "taker_side", "price", "mark_price", "band")[: SHOWN * 10]
    )
    found = [
        pk
        for pk, side, price, mark, width in rows
        if (price > mark * (1 + width) if side == Side.BUY else price < mark * (1 - width))
    ]
    if found:
        problems.append(f"trades priced past their band around the mark: {found[:SHOWN]}")


def _mark_bands(problems: list[str]) -> None:
    """The mark of every perp and future that the clock marks (active or paused
    markets) lies within `mark_band` of its underlying's index: |mark - index| <=
    index x mark_band. The clock sets the index and then the marks, in two
    transactions: a mark that has not followed the latest index yet is measured from
    the index before it too, and is reported only when outside both bands. Options are
    not checked: their mark is the model's price (Black-Scholes on the index), which is
    no fraction of the index to be near. Books without a mark, or whose underlying has
    no index, are skipped. Settled and delisted markets are no longer marked."""
    books = list(
        Book.objects.filter(
            market__kind__in=(MarketKind.PERP, MarketKind.FUTURE),
            market__status__in=(MarketStatus.ACTIVE, MarketStatus.PAUSED),
            mark_price__isnull=False,
        )
        .order_by("pk")
        .values_list(
            "market__symbol", "mode", "market__underlying", "market__mark_band", "mark_price"
        )
    )
    underlyings = {b[2] for b in books}
    current = dict(
        IndexPrice.objects.filter(underlying__in=underlyings).values_list("underlying", "price")
    )
    # One short query per underlying (a handful), each read backwards along the
    # (underlying, at) index: the sample the latest one replaced.
    previous = {
        u: IndexSample.objects.filter(underlying=u)
        .order_by("-at", "-pk")
        .values_list("price", flat=True)[1:2]
        .first()
        for u in current
    }

    def outside(mark: Decimal, index: Decimal | None, band: Decimal) -> bool:
        return index is None or abs(mark - index) > index * band

    for symbol, mode, underlying, band, mark in books:
        index = current.get(underlying)
        if index is None:
            continue
        if outside(mark, index, band) and outside(mark, previous.get(underlying), band):
            off = (abs(mark - index) / index * 100).quantize(Decimal("0.01"))
            problems.append(
                f"book {symbol}/{mode}: mark {dec(mark)} is {off}% from the index {dec(index)},"
                f" outside its {dec(band * 100)}% band"
            )
