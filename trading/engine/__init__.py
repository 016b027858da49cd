"""The matching engine: a pure in-memory limit order book (no Django, no I/O).

Prices and quantities are integers here (ticks and lots); the service layer converts
to and from `Decimal` at the edge.
"""

from trading.engine.book import (
    BUY,
    FOK,
    GTC,
    IOC,
    POST_ONLY,
    SELL,
    BookError,
    Fill,
    MatchResult,
    OrderBook,
)

__all__ = [
    "BUY",
    "FOK",
    "GTC",
    "IOC",
    "POST_ONLY",
    "SELL",
    "BookError",
    "Fill",
    "MatchResult",
    "OrderBook",
]
