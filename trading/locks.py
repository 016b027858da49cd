"""The row locks of the risk engine and the market lifecycle, in one place, and the one
order every writer takes them in, so that no two writers wait for each other in a cycle:

  1. the market row            (expiry, delisting: its status changes)
  2. book rows, in pk order    (`trading.services.books.book_lock` for one, with its
                               market read fresh: every write to a book's orders and to
                               its market's positions happens under it)
  3. balance rows, in pk order (`ledger.services.balances_lock`: every change of an
                               account's cash, and of its positions in other markets)
  4. position rows, in pk order (auto-deleverage's counterparties)
  5. the fee account's balance, last and briefly (`balances_credit_unlocked`)

A transaction may skip a level, never go back up one.
"""

from __future__ import annotations

from collections.abc import Iterable

from trading.models import Book, Market, Position


def market_lock(market_id: int) -> Market:
    """Lock a market's row (level 1) and read it, fresh."""
    return Market.objects.select_for_update().get(pk=market_id)


def books_lock(*, market_ids: Iterable[int], mode: str | None = None) -> list[Book]:
    """Lock the books of these markets (in one mode, or both) in pk order (level 2)."""
    found = Book.objects.select_for_update().filter(market_id__in=list(market_ids))
    if mode is not None:
        found = found.filter(mode=mode)
    return list(found.order_by("pk"))


def positions_lock(**lookup) -> list[Position]:
    """Lock the positions `lookup` selects, in pk order (level 4); the caller holds
    their book (level 2)."""
    return list(Position.objects.select_for_update().filter(**lookup).order_by("pk"))
