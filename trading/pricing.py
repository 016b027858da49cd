"""Index, mark and option prices.

Black-Scholes and implied volatility come from `vollib` (Jäckel's "Let's Be Rational"),
which computes in binary floating point, as every options model does; its results are
turned into Decimals here, rounded to the market's tick, before anything else sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from vollib.black_scholes import black_scholes
from vollib.black_scholes.greeks import analytical
from vollib.black_scholes.implied_volatility import implied_volatility

SECONDS_PER_YEAR = Decimal(365 * 24 * 3600)
RISK_FREE_RATE = 0.0  # USDC-margined crypto options: venues quote with r = 0


def on_tick(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * tick


def median3(a: Decimal, b: Decimal, c: Decimal) -> Decimal:
    return sorted((a, b, c))[1]


def futures_mark(
    *,
    index: Decimal,
    basis_avg: Decimal | None,
    best_bid: Decimal | None,
    best_ask: Decimal | None,
    tick: Decimal,
) -> Decimal:
    """Median of (index + average basis, best bid, best ask); the index alone when the
    book is empty. A missing side counts as index + basis, so one stray order on an
    otherwise empty book cannot move the mark by itself."""
    anchored = index + (basis_avg or Decimal(0))
    if best_bid is None and best_ask is None:
        return on_tick(index, tick)
    bid = best_bid if best_bid is not None else anchored
    ask = best_ask if best_ask is not None else anchored
    return on_tick(median3(anchored, bid, ask), tick)


def ema(previous: Decimal | None, value: Decimal, samples: int = 60) -> Decimal:
    """Exponential moving average over about `samples` observations."""
    if previous is None:
        return value
    alpha = Decimal(2) / Decimal(samples + 1)
    return (previous + alpha * (value - previous)).quantize(Decimal("1e-12"))


def years_until(expiry: datetime, now: datetime) -> Decimal:
    return max(Decimal(0), Decimal((expiry - now).total_seconds()) / SECONDS_PER_YEAR)


def _flag(option_type: str) -> str:
    return "c" if option_type == "CALL" else "p"


def intrinsic(option_type: str, spot: Decimal, strike: Decimal) -> Decimal:
    return max(Decimal(0), spot - strike if option_type == "CALL" else strike - spot)


def bs_price(
    option_type: str,
    spot: Decimal,
    strike: Decimal,
    years: Decimal,
    vol: Decimal,
    rate: float = RISK_FREE_RATE,
) -> Decimal:
    """Black-Scholes value; at or after expiry, the intrinsic value."""
    if years <= 0 or vol <= 0:
        return intrinsic(option_type, spot, strike)
    value = black_scholes(
        _flag(option_type), float(spot), float(strike), float(years), rate, float(vol)
    )
    return Decimal(repr(float(value)))


def implied_vol(
    option_type: str, price: Decimal, spot: Decimal, strike: Decimal, years: Decimal
) -> Decimal | None:
    """The volatility that prices the option at `price`; None where no volatility does
    (below intrinsic, or expired)."""
    if years <= 0 or price <= intrinsic(option_type, spot, strike):
        return None
    try:
        vol = implied_volatility(
            float(price),
            float(spot),
            float(strike),
            float(years),
            RISK_FREE_RATE,
            _flag(option_type),
        )
    except Exception:  # the solver refuses prices outside the model's range
        return None
    if vol != vol or vol <= 0 or vol > 20:  # NaN or absurd
        return None
    return Decimal(repr(float(vol))).quantize(Decimal("1e-6"))


@dataclass(slots=True)
class Greeks:
    delta: Decimal
    gamma: Decimal
    vega: Decimal
    theta: Decimal


def greeks(
    option_type: str, spot: Decimal, strike: Decimal, years: Decimal, vol: Decimal
) -> Greeks:
    if years <= 0 or vol <= 0:
        itm = intrinsic(option_type, spot, strike) > 0
        sign = 1 if option_type == "CALL" else -1
        return Greeks(Decimal(sign if itm else 0), Decimal(0), Decimal(0), Decimal(0))
    args = (
        _flag(option_type),
        float(spot),
        float(strike),
        float(years),
        RISK_FREE_RATE,
        float(vol),
    )
    q = Decimal("1e-8")
    return Greeks(
        Decimal(repr(float(analytical.delta(*args)))).quantize(q),
        Decimal(repr(float(analytical.gamma(*args)))).quantize(q),
        Decimal(repr(float(analytical.vega(*args)))).quantize(q),
        Decimal(repr(float(analytical.theta(*args)))).quantize(q),
    )


def impact_price(levels: list[tuple[Decimal, Decimal]], notional: Decimal) -> Decimal | None:
    """Average price to trade `notional` against `levels` (best first); None when the
    book cannot absorb it."""
    left, cost, qty = notional, Decimal(0), Decimal(0)
    for price, size in levels:
        take_value = min(left, price * size)
        take_qty = take_value / price
        cost += take_value
        qty += take_qty
        left -= take_value
        if left <= 0:
            return (cost / qty).quantize(Decimal("1e-12"))
    return None


def premium_index(
    index: Decimal, impact_bid: Decimal | None, impact_ask: Decimal | None
) -> Decimal:
    """(max(0, impact bid - index) - max(0, index - impact ask)) / index; a side the
    book cannot fill contributes nothing."""
    up = max(Decimal(0), impact_bid - index) if impact_bid is not None else Decimal(0)
    down = max(Decimal(0), index - impact_ask) if impact_ask is not None else Decimal(0)
    return ((up - down) / index).quantize(Decimal("1e-12"))


def funding_rate(avg_premium: Decimal, interest: Decimal, cap: Decimal) -> Decimal:
    """rate = premium + clamp(interest - premium, ±0.05%), capped at ±cap."""
    clamp = Decimal("0.0005")
    rate = avg_premium + min(clamp, max(-clamp, interest - avg_premium))
    return min(cap, max(-cap, rate)).quantize(Decimal("1e-8"))
