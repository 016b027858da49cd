"""The risk gate of an order: its price band, what it reserves, and whether its account
can carry it. The account's arithmetic is `trading.margin` (`shortfall`: the one gate
for every action that moves cash or changes exposure); this module says what an order
is to it. See docs/risk.md, "The risk gate" and "Price bands".

The risk engine's own orders (liquidation) are exempt by design: the caller skips them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_UP, Decimal

from dexsite.errors import ExchangeError
from trading import margin, risk
from trading.models import Market, MarketKind, Side
from trading.presenters import dec

INSUFFICIENT_MARGIN = "INSUFFICIENT_MARGIN"
INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"


def band_check(market: Market, *, side: str, price: Decimal, reference: Decimal) -> None:
    """Refuse a limit order that would trade further than the band from the reference
    (the mark; the index on spot): a buy above it, a sell below it. On its passive side
    it may rest as far away as it likes: it trades there only if the market comes to it."""
    band = market.price_band
    if side == Side.BUY and price > reference * (1 + band):
        limit, word = reference * (1 + band), "above"
    elif side == Side.SELL and price < reference * (1 - band):
        limit, word = reference * (1 - band), "below"
    else:
        return
    raise ExchangeError(
        "PRICE_OUT_OF_BAND",
        f"a {side.lower()} may not be priced {word} {dec(limit.quantize(market.tick_size))} "
        f"({dec(band * 100)}% from the mark {dec(reference)})",
        field="price",
    )


def slippage_limit(market: Market, *, side: str, reference: Decimal) -> int:
    """The furthest tick a market order may fill at: `market_slippage` from the
    reference, on the tick grid inside the band."""
    slip = market.market_slippage
    if side == Side.BUY:
        ticks = int((reference * (1 + slip) / market.tick_size).to_integral_value(ROUND_FLOOR))
    else:
        ticks = int((reference * (1 - slip) / market.tick_size).to_integral_value(ROUND_CEILING))
    return max(ticks, 1)


def covered_sell(
    market: Market, *, side: str, qty: Decimal, reduce_only: bool, long: Decimal, promised: Decimal
) -> bool:
    """Whether an option sell is covered: the long it sells is held (`long`), and not
    promised to the owner's other resting sells that may only shrink it (`promised`:
    reduce-only or covered themselves). A covered sell reserves nothing and may only
    ever sell that long (the engine treats it as reduce-only); any other option sell is
    margined as a short of its whole size, so that no short is ever opened without
    margin, whichever of the owner's sells fills first."""
    if market.kind != MarketKind.OPTION or side != Side.SELL or reduce_only or long <= 0:
        return False
    return qty <= long - promised


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an order locks while it rests: `amount` of `asset`; `code` refuses it."""

    asset: str
    amount: Decimal
    code: str


def reservation(
    market: Market,
    *,
    side: str,
    qty: Decimal,
    notional: Decimal,
    reducing: bool,
    leverage: Decimal | None,
    mark: Decimal,
    index: Decimal,
) -> Reservation:
    """Perps and futures: initial margin at the order's price plus the worst-case fee.
    Option buys: the premium and fee, in cash. Option sells: short-option margin on the
    whole size, unless risk-reducing (reduce-only, or covered by a held long), which
    needs none. Spot: the quote of a buy with its fee, or the base of a sell."""
    if side == Side.BUY and market.kind in (MarketKind.SPOT, MarketKind.OPTION):
        # Paid in cash at the fill: the quote and the worst-case fee.
        amount = risk.spot_buy_reserve(notional, market.taker_fee)
        return Reservation(market.quote, amount, INSUFFICIENT_BALANCE)
    if market.kind == MarketKind.SPOT:
        return Reservation(market.base, qty, INSUFFICIENT_BALANCE)
    if reducing:
        return Reservation(market.quote, Decimal(0), INSUFFICIENT_MARGIN)
    if market.kind == MarketKind.OPTION:
        per_unit = margin.short_option_margin(market.option_type, market.strike, index, mark)
        amount = (qty * per_unit + notional * market.taker_fee).quantize(
            risk.MONEY_QUANTUM, rounding=ROUND_UP
        )
        return Reservation(market.quote, amount, INSUFFICIENT_MARGIN)
    chosen = risk.effective_leverage(leverage, market.max_leverage)
    amount = risk.order_margin(notional, chosen, market.taker_fee)
    return Reservation(market.quote, amount, INSUFFICIENT_MARGIN)


def order_shortfall(
    market: Market,
    account: margin.Account,
    own: margin.Exposure | None,
    *,
    side: str,
    fill_qty: Decimal,
    fill_notional: Decimal,
    reserve: Decimal,
    reducing: bool,
) -> Decimal:
    """What the account lacks for an order (`margin.shortfall`): resting, it reserves
    `reserve`; filled (`fill_qty` for `fill_notional`, its worst: a limit order at its
    price, a market order at what the book holds for it), taker fee paid, it carries what
    it then holds (`own`: its exposure in the market, flat if new). A spot buy moves no
    position: what it reserves is its cost, paid from free margin."""
    after = None
    if market.is_derivative and fill_qty > 0 and own is not None:
        signed = fill_qty if side == Side.BUY else -fill_qty
        fee = risk.fee_for(fill_notional, market.taker_fee)
        after = margin.after_fill(account, own, signed, fill_notional / fill_qty, fee)
    return margin.shortfall(account, reserve=reserve, after=after, reducing=reducing)


def refusal(
    market: Market,
    held: Reservation,
    *,
    lacking: Decimal,
    available: Decimal,
    reducing: bool,
    margined: bool,
) -> ExchangeError:
    """The refusal of an order the gate found `lacking`: what it reserves is more than
    the cash `available`, or (risk-reducing) it would leave equity below zero, or it
    would leave the account below its initial margin."""
    if held.amount > 0 and held.amount > available:
        message = f"order needs {dec(held.amount)} {held.asset}, more than is available"
    elif reducing:
        why = f"its equity would end {dec(lacking)} {market.quote} below zero"
        message = f"the account cannot carry this trade: {why}"
    elif margined:
        message = f"order needs {dec(lacking)} {market.quote} more than the free margin"
    else:
        message = f"order needs {dec(lacking)} {held.asset} more than is available"
    return ExchangeError(held.code, message, field="qty")
