"""Settlement: what a fill of a perpetual, a future or an option does to its owner's
position and cash. One function for every fill, whoever makes it: an order's match
(`trading.orders.fills`), auto-deleverage (`liquidation`), a position closed at the
settlement price (`expiry`), a paper reset's hand-over to the insurance fund
(`accounts.services.paper`), and the risk gate's look at an account after an order
(`margin.after_fill`).

  perps, futures: the position moves (`risk.apply_fill`); what a closing fill realizes
                  is cash (REALIZED_PNL). The cost of what stays open is not cash.
  options:        the premium moves in cash at the fill (TRADE: the buyer pays, the
                  seller receives); what a close realizes is shown on the position, not
                  booked again.

A spot fill has no position: it swaps base for quote (see the order path).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from ledger.models import LedgerReason
from trading import risk
from trading.models import MarketKind

if TYPE_CHECKING:
    from trading.models import Position


@dataclass(frozen=True, slots=True)
class Settled:
    """A position after a fill, and the cash the fill moves for its owner (before fees,
    which the order path charges on its own)."""

    size: Decimal
    open_notional: Decimal
    realized: Decimal
    cash: Decimal
    reason: str


def fill_settled(
    *, kind: str, size: Decimal, open_notional: Decimal, signed_qty: Decimal, price: Decimal
) -> Settled:
    """A position of `size` (cost `open_notional`) in a market of `kind` after trading
    `signed_qty` (buy > 0) at `price`."""
    change = risk.apply_fill(size, open_notional, signed_qty, price)
    if kind == MarketKind.OPTION:
        cash, reason = -signed_qty * price, LedgerReason.TRADE
    else:
        cash, reason = change.realized, LedgerReason.REALIZED_PNL
    return Settled(change.size, change.open_notional, change.realized, cash, reason)


def position_settle(position: Position, signed_qty: Decimal, price: Decimal) -> Settled:
    """Apply a fill to `position` in memory (size, cost, realized PnL; its market
    loaded) and return what it settled; the caller writes the row and books the cash."""
    settled = fill_settled(
        kind=position.market.kind,
        size=position.size,
        open_notional=position.open_notional,
        signed_qty=signed_qty,
        price=price,
    )
    position.size, position.open_notional = settled.size, settled.open_notional
    position.realized_pnl += settled.realized
    return settled
