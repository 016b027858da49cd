"""Position and margin arithmetic: pure functions over Decimals, no database.

Cross margin per (trader, mode), settled in USDC:
  equity          = USDC total + sum of unrealized PnL at mark
  initial margin  = |size| * mark / leverage, per position
  free margin     = equity - initial margins - USDC locked by open orders
An order may be placed when what it reserves fits in both free margin and USDC
available (total - locked): unrealized profit does not fund new exposure beyond cash.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_UP, Decimal

MONEY_QUANTUM = Decimal("1e-12")
DEFAULT_LEVERAGE = Decimal("10")


@dataclass(slots=True)
class PositionChange:
    size: Decimal
    open_notional: Decimal
    realized: Decimal


def apply_fill(
    size: Decimal, open_notional: Decimal, signed_qty: Decimal, price: Decimal
) -> PositionChange:
    """Position after a fill of `signed_qty` (buy > 0, sell < 0) at `price`.

    Closing fills release the closed share of the cost (rounded to 1e-12) and realize
    the difference; the rounding stays in `open_notional`, which reaches exactly zero
    when the position does, so nothing is lost over a position's life.
    """
    realized = Decimal(0)
    if size == 0 or (size > 0) == (signed_qty > 0):
        return PositionChange(size + signed_qty, open_notional + signed_qty * price, realized)
    closing = min(abs(signed_qty), abs(size))
    if closing == abs(size):
        released = open_notional
    else:
        released = (open_notional * closing / abs(size)).quantize(MONEY_QUANTUM)
    sign = 1 if size > 0 else -1
    # Long: sold `closing` at price, cost released; short: the mirror image.
    realized = sign * closing * price - released
    size_after = size + (closing if size < 0 else -closing)
    notional_after = open_notional - released
    opening = abs(signed_qty) - closing
    if opening:
        direction = 1 if signed_qty > 0 else -1
        size_after = direction * opening
        notional_after = direction * opening * price
    return PositionChange(size_after, notional_after, realized)


def fee_for(notional: Decimal, rate: Decimal) -> Decimal:
    """The fee of a fill, exact: markets keep tick, lot and fee decimals within the
    ledger's 12 places, so that a reservation made at the taker rate covers every fee
    to the last unit (rounding each fill up could overdraw it by dust)."""
    if rate <= 0:
        return Decimal(0)
    return (notional * rate).quantize(MONEY_QUANTUM, rounding=ROUND_UP)


def effective_leverage(chosen: Decimal | None, max_leverage: Decimal) -> Decimal:
    if chosen:
        return min(chosen, max_leverage)
    return min(DEFAULT_LEVERAGE, max_leverage)


def order_margin(notional: Decimal, leverage: Decimal, taker_fee: Decimal) -> Decimal:
    """Reserved for an open derivative order: initial margin plus the worst-case fee."""
    return (notional / leverage + notional * taker_fee).quantize(MONEY_QUANTUM, rounding=ROUND_UP)


def spot_buy_reserve(notional: Decimal, taker_fee: Decimal) -> Decimal:
    return (notional * (1 + taker_fee)).quantize(MONEY_QUANTUM, rounding=ROUND_UP)


def scale_reserve(
    reserved: Decimal, remaining_before: Decimal, remaining_after: Decimal
) -> Decimal:
    """The reservation of an order after part of it filled, proportional to what is left."""
    if remaining_after <= 0:
        return Decimal(0)
    if remaining_after == remaining_before:
        return reserved
    return (reserved * remaining_after / remaining_before).quantize(
        MONEY_QUANTUM, rounding=ROUND_UP
    )
