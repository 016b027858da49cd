"""Paper reset: a PAPER account started afresh, its old state closed and written off.

One transaction, so a refusal changes nothing:
  1. lock the PAPER books where the trader has open orders or a position, in market-id
     order (the order `orders_cancel_all` uses, so the two cannot deadlock); positions
     change only under their book's lock, so none moves while we work;
  2. cancel the open orders through `orders_cancel_all` (it finds its books locked);
  3. hand each open position over to the insurance fund at the mark price rounded to
     the tick, booked as a fill between the two (`trading.settle` on both
     sides; perps and futures realize PnL, an option's premium moves in cash): open
     interest stays balanced, and no price impact lands on the shared paper book (a
     market order could also fail on an empty book or on a position below the minimum
     notional, and a reset must always work);
  4. write the trader's PAPER balances off to zero (PAPER_RESET rows, counted as money
     leaving, like a withdrawal) and credit a fresh faucet grant (FAUCET rows).
The insurance fund's PAPER account absorbs what it realizes later; when a loss exceeds
its paper funds it is topped up from the paper faucet (a FAUCET row), since paper money
is free and a system account must never go negative.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from accounts.services import paper_points_start
from dexsite.db import retrying
from dexsite.errors import ExchangeError
from ledger.models import Balance, LedgerReason, Mode
from ledger.services import (
    INSURANCE_ACCOUNT,
    Posting,
    balances_ensure,
    balances_lock,
    ledger_apply,
    system_account_id,
)
from trading.emit import Emitter
from trading.matcher import account_job_submit
from trading.models import LIVE_STATUSES, Book, Order, Position
from trading.orders.cancel import orders_cancel_all
from trading.presenters import dec
from trading.selectors import account_market_ids
from trading.services.books import book_lock
from trading.settle import position_settle

PAPER = Mode.PAPER
CANCEL_REASON = "RESET"


def _handover_price(position: Position, book: Book) -> Decimal:
    market = position.market
    raw = (
        book.mark_price
        or market.mark_price
        or book.last_price
        or position.open_notional / position.size
    )
    # On the tick grid, so that size * price stays within the ledger's 12 decimals, as
    # every fill's does: the hand-over then conserves money to the last unit.
    ticks = (raw / market.tick_size).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return max(ticks, Decimal(0)) * market.tick_size


def _hand_over(
    positions: list[Position], books: dict[int, Book], insurance_id: int
) -> tuple[list[Posting], list[dict[str, Any]], list[Position]]:
    postings: list[Posting] = []
    closed: list[dict[str, Any]] = []
    touched: list[Position] = []
    for p in positions:
        market = p.market
        price = _handover_price(p, books[market.pk])
        backstop, _ = Position.objects.get_or_create(
            trader_id=insurance_id, market=market, mode=PAPER
        )
        size = p.size
        backstop.market = market
        # A fill between the two at `price`, settled as every fill is: an option's
        # premium moves in cash, a perp's or a future's realized PnL.
        ref = f"reset:{market.symbol}"
        mine = position_settle(p, -size, price)
        theirs = position_settle(backstop, size, price)
        for owner, settled in ((p.trader_id, mine), (insurance_id, theirs)):
            if settled.cash:
                postings.append(
                    Posting(owner, market.quote, PAPER, settled.cash, settled.reason, ref)
                )
        touched += [p, backstop]
        closed.append(
            {
                "market": market.symbol,
                "side": "LONG" if size > 0 else "SHORT",
                "size": dec(abs(size)),
                "price": dec(price),
                "realizedPnl": dec(mine.realized),
            }
        )
    if touched:
        Position.objects.bulk_update(touched, ["size", "open_notional", "realized_pnl"])
    return postings, closed, touched


# The name under which the matcher carries out a paper reset (`paper_reset_submit`).
PAPER_RESET_JOB = "paper_reset"


def paper_reset_submit(*, trader: User) -> dict[str, Any]:
    """`paper_reset`, by the matcher of the account's first PAPER book (which then has
    nothing to rebuild), behind the requests waiting there; here when the account has no
    book, or without a matcher."""
    return account_job_submit(PAPER_RESET_JOB, trader_id=trader.pk, mode=PAPER)


def paper_reset_job(*, trader_id: int, mode: str) -> dict[str, Any]:
    """The job that `paper_reset_submit` sends: `paper_reset` of the account."""
    return paper_reset(trader=User.objects.get(pk=trader_id))


@retrying
def paper_reset(*, trader: User) -> dict[str, Any]:
    """Close the trader's PAPER orders and positions, write the PAPER balances off and
    credit a fresh faucet grant. paperPoints start again from that grant. Locks books
    across markets, so a rare cycle with another multi-book writer is a deadlock that
    PostgreSQL breaks and `retrying` runs again, whole."""
    with transaction.atomic():
        books = {
            mid: book_lock(market_id=mid, mode=PAPER)
            for mid in account_market_ids(trader.pk, PAPER)
        }
        canceled = orders_cancel_all(trader=trader, mode=PAPER, reason=CANCEL_REASON)
        positions = list(
            Position.objects.filter(trader=trader, mode=PAPER)
            .exclude(size=0)
            .select_related("market")
            .order_by("market_id")
        )
        if (
            any(p.market_id not in books for p in positions)
            or Order.objects.filter(trader=trader, mode=PAPER, status__in=LIVE_STATUSES).exists()
        ):
            # An order placed between our look and our locks, in a book we hold no lock on.
            raise ExchangeError(
                "RESET_CONFLICT", "the account changed during the reset; try again", status_code=409
            )
        insurance_id = system_account_id(INSURANCE_ACCOUNT)
        realized, closed, touched = _hand_over(positions, books, insurance_id)

        grant = {a: Decimal(v) for a, v in settings.PAPER_FAUCET_AMOUNTS.items()}
        keys = {(trader.pk, a, PAPER) for a in grant}
        keys |= {
            (trader.pk, a, PAPER)
            for a in Balance.objects.filter(trader=trader, mode=PAPER).values_list(
                "asset", flat=True
            )
        }
        keys |= {(p.trader_id, p.asset, p.mode) for p in realized}
        balances_ensure(keys)
        rows = balances_lock(keys)
        ledger_apply(realized, rows)

        fresh: list[Posting] = []
        for (owner, asset, _), row in sorted(rows.items()):
            if owner == insurance_id:
                if row.total < row.locked:
                    shortfall = row.locked - row.total
                    fresh.append(
                        Posting(owner, asset, PAPER, shortfall, LedgerReason.FAUCET, "backstop")
                    )
                continue
            if row.locked:
                raise ExchangeError(
                    "RESET_CONFLICT", "funds are still locked; try again", status_code=409
                )
            if row.total:
                fresh.append(
                    Posting(owner, asset, PAPER, -row.total, LedgerReason.PAPER_RESET, "reset")
                )
        fresh += [
            Posting(trader.pk, a, PAPER, amount, LedgerReason.FAUCET, "reset")
            for a, amount in grant.items()
        ]
        ledger_apply(fresh, rows)
        Balance.objects.bulk_update(rows.values(), ["total"])
        User.objects.filter(pk=trader.pk).update(last_faucet_at=timezone.now())
        paper_points_start(trader=trader, first_only=False)

        events = Emitter(PAPER)
        by_market: dict[str, list[Position]] = {}
        for p in touched:
            by_market.setdefault(p.market.symbol, []).append(p)
        for symbol, positions in by_market.items():
            events.moved(symbol, positions)
        events.paid(rows.values())
        events.send_on_commit()
    return {
        "mode": PAPER,
        "canceledOrderIds": canceled,
        "closedPositions": closed,
        "credited": {a: dec(v) for a, v in grant.items()},
    }
