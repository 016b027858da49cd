"""Domain events of trading. Sent only from `transaction.on_commit`, so a receiver never
sees a change that was rolled back. Payloads are the API's JSON-ready dicts, built once
per event; trading does not know who listens (the realtime app does).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.dispatch import Signal

# order: dict (the order object of the API)
order_updated = Signal()
# market, mode, trade: dict {"id","px","qty","side","ts"}
trade_executed = Signal()
# fill: dict (the fill object of the API), trader_id: UUID
fill_created = Signal()
# market, mode, seq, bids, asks: the book delta ([[px, qty], ...], qty "0" removes)
book_changed = Signal()
# position: dict, trader_id
position_updated = Signal()
# market, mode, seq: the book has not moved since delta `seq` (sent by the clock)
book_quiet = Signal()
# market, status
market_state_changed = Signal()
# market, mode, ticker: dict {"markPrice","indexPrice","lastPrice","change24h","volume24h","openInterest"}
ticker_updated = Signal()
# market, mode, rate, next_funding_ts
funding_rate_updated = Signal()
# market, mode, iv: dict {"markIv","bidIv","askIv","delta","gamma","vega","theta"}
option_iv_updated = Signal()
# trader_id (UUID), payment: dict {"market","mode","amount","rate"}
funding_paid = Signal()
# trader_id (UUID), liquidation: dict
liquidated = Signal()

# The events of one commit are sent between these two: a receiver may hold what it
# would deliver and deliver it all at once (one round trip for the whole commit).
events_started = Signal()
events_finished = Signal()


@contextmanager
def events_of_one_commit() -> Iterator[None]:
    events_started.send(sender=None)
    try:
        yield
    finally:
        events_finished.send(sender=None)
