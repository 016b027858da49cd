"""The exchange's invariants, checked against the database. Returns the violations
found (empty = healthy). Run after every test scenario; cheap enough for staff to run
on a live system."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from django.db.models import F, Q, Sum

from accounts.models import (
    Balance,
    LedgerEntry,
    LedgerReason,
    Transfer,
    TransferKind,
    TransferStatus,
)
from trading.models import OPEN_STATUSES, Book, Order, Position
from trading.services.books import engine_book_build

# Money entering or leaving a mode. A paper reset writes a PAPER account off: money
# leaving, like a withdrawal.
EXTERNAL = (
    LedgerReason.DEPOSIT,
    LedgerReason.WITHDRAWAL,
    LedgerReason.FAUCET,
    LedgerReason.PAPER_RESET,
)


def check_invariants() -> list[str]:
    problems: list[str] = []

    # Every balance equals the sum of its ledger rows, and none is negative.
    sums = {
        (r["trader_id"], r["asset"], r["mode"]): r["s"]
        for r in LedgerEntry.objects.values("trader_id", "asset", "mode").annotate(s=Sum("amount"))
    }
    for b in Balance.objects.all():
        key = (b.trader_id, b.asset, b.mode)
        ledger = sums.pop(key, Decimal(0))
        if b.total != ledger:
            problems.append(f"balance {key} total {b.total} != ledger sum {ledger}")
        if b.locked < 0 or b.total < b.locked:
            problems.append(f"balance {key} negative: total {b.total} locked {b.locked}")
    for key, s in sums.items():
        if s != 0:
            problems.append(f"ledger rows without a balance row: {key} sums to {s}")

    # Locked funds = what open orders reserve + pending withdrawals.
    reserved: dict[tuple, Decimal] = defaultdict(Decimal)
    for r in (
        Order.objects.filter(status__in=OPEN_STATUSES)
        .values("trader_id", "reserve_asset", "mode")
        .annotate(s=Sum("reserved"))
    ):
        reserved[(r["trader_id"], r["reserve_asset"], r["mode"])] += r["s"]
    for r in (
        Transfer.objects.filter(kind=TransferKind.WITHDRAWAL, status=TransferStatus.PENDING)
        .values("trader_id", "asset", "mode")
        .annotate(s=Sum("amount"))
    ):
        reserved[(r["trader_id"], r["asset"], r["mode"])] += r["s"]
    for b in Balance.objects.filter(locked__gt=0):
        key = (b.trader_id, b.asset, b.mode)
        if reserved.pop(key, Decimal(0)) != b.locked:
            problems.append(
                f"balance {key} locked {b.locked} != open orders' reservations"
                " + pending withdrawals"
            )
    for key, s in reserved.items():
        if s != 0:
            problems.append(f"open orders / withdrawals reserve {s} of {key} but nothing is locked")
    closed_reserving = Order.objects.exclude(status__in=OPEN_STATUSES).filter(reserved__gt=0)
    if closed_reserving.exists():
        problems.append(
            f"closed orders still reserving: {list(closed_reserving.values_list('id', flat=True)[:10])}"
        )

    # No order filled past its quantity (also a database constraint).
    over = Order.objects.filter(filled_qty__gt=F("qty"))
    if over.exists():
        problems.append(f"overfilled orders: {list(over.values_list('id', flat=True)[:10])}")

    # Conservation: per asset and mode, the ledger changes only by money entering or
    # leaving; realized PnL sums to the cost basis still open (zero once flat).
    for r in LedgerEntry.objects.values("asset", "mode").annotate(
        total=Sum("amount"), external=Sum("amount", filter=Q(reason__in=EXTERNAL))
    ):
        internal = r["total"] - (r["external"] or Decimal(0))
        if r["asset"] == "USDC":
            # Option premiums move in cash at each fill; only perps and futures carry
            # their cost basis until they are closed.
            open_cost = (
                Position.objects.filter(mode=r["mode"])
                .exclude(market__kind="OPTION")
                .aggregate(s=Sum("open_notional"))["s"]
            )
            internal -= open_cost or Decimal(0)
        if internal != 0:
            problems.append(
                f"{r['asset']}/{r['mode']}: internal movements sum to {internal}, not 0"
            )

    # Open interest: longs equal shorts in every market and mode.
    for r in Position.objects.values("market_id", "mode").annotate(s=Sum("size")):
        if r["s"] != 0:
            problems.append(f"market {r['market_id']}/{r['mode']}: long - short = {r['s']}")

    # The book: resting orders are fully on the book, none crossed.
    for book in Book.objects.select_related("market"):
        engine = engine_book_build(book)
        bid, ask = engine.best_bid(), engine.best_ask()
        if bid is not None and ask is not None and bid >= ask:
            problems.append(f"book {book} crossed: bid {bid} >= ask {ask} ticks")
    return problems
