"""Index, mark and option prices.

Black-Scholes and implied volatility come from `vollib` (Jäckel's "Let's Be Rational"),
which computes in binary floating point, as every options model does; its results are
turned into Decimals here, rounded to the market's tick, before anything else sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from vollib.black_scholes import black_scholes
from vollib.black_scholes.greeks import analytical
from vollib.black_scholes.implied_volatility import implied_volatility

SECONDS_PER_YEAR = Decimal(365 * 24 * 3600)
RISK_FREE_RATE = 0.0  # USDC-margined crypto options: venues quote with r = 0
# The impact notional is 200 USDC of margin at the market's maximum leverage (4,000 USDC
# on a 20x perp): a price that cannot take that much is not a price to mark at.
IMPACT_MARGIN = Decimal("200")


def on_tick(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * tick


def futures_mark(
    *,
    index: Decimal,
    basis_avg: Decimal | None,
    impact_bid: Decimal | None,
    impact_ask: Decimal | None,
    band: Decimal,
    tick: Decimal,
) -> Decimal:
    """The mark of a perp or future: index + basis_avg where the book absorbs the impact
    notional on both sides, the bare index where it does not; then within `band` of the
    index, on the tick.

    The book moves the mark only through the basis average, a sample a tick, as on
    Deribit: a deep book at a premium must stay there for about a minute to carry the
    mark with it (a median with the impact prices would follow it in one tick, whoever
    put it there for that tick). A thin book falls back on the index, not on index +
    basis_avg: the average is only as fresh as the last deep book, and whoever built it
    with depth could pull the depth and leave the mark standing on it for as long as the
    book stays thin."""
    if impact_bid is None or impact_ask is None:
        return band_clamp(index, index=index, band=band, tick=tick)
    return band_clamp(index + (basis_avg or Decimal(0)), index=index, band=band, tick=tick)


def band_clamp(price: Decimal, *, index: Decimal, band: Decimal, tick: Decimal) -> Decimal:
    """`price` on the tick and within index x (1 +- band); the band's ends are rounded
    inwards, so that rounding to the tick never carries a price out of it."""
    low = (index * (1 - band) / tick).to_integral_value(ROUND_CEILING) * tick
    high = (index * (1 + band) / tick).to_integral_value(ROUND_FLOOR) * tick
    if low > high:  # a band narrower than a tick around an index off the tick
        return on_tick(index, tick)
    return min(high, max(low, on_tick(price, tick)))


def basis_sample(index: Decimal, impact_bid: Decimal, impact_ask: Decimal) -> Decimal:
    """What one deep, two-sided book says the basis is: impact mid - index."""
    return (impact_bid + impact_ask) / 2 - index


def ema(previous: Decimal | None, value: Decimal, samples: int = 60) -> Decimal:
    """Exponential moving average over about `samples` observations, starting from 0:
    a first sample weighs 2/(samples + 1), like every other, so one moment of a book
    cannot set the average outright."""
    alpha = Decimal(2) / Decimal(samples + 1)
    start = previous or Decimal(0)
    return (start + alpha * (value - start)).quantize(Decimal("1e-12"))


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


def impact_notional(max_leverage: Decimal) -> Decimal:
    """How much a side of a book must absorb for its price to count (the mark's basis
    and the funding premium): IMPACT_MARGIN at the market's maximum leverage."""
    return IMPACT_MARGIN * max_leverage


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
