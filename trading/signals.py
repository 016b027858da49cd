"""Domain events of trading. Sent only from `transaction.on_commit`, so a receiver never
sees a change that was rolled back. Payloads are the API's JSON-ready dicts, built once
per event; trading does not know who listens (the realtime app does).
"""

import threading
import time
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


# How long the events of a book's commit wait for those of the commit before it (see
# `in_commit_order`).
COMMIT_ORDER_WAIT = 0.02

_sent_seq: dict[tuple[str, str], int] = {}
_sent_changed = threading.Condition()


@contextmanager
def in_commit_order(book: tuple[str, str], first: int | None, last: int | None) -> Iterator[None]:
    """Send the events of one commit of `book` (its deltas `first`..`last`) after those of
    the commit before it. Each commit's events leave from the thread that committed it,
    after the COMMIT: two threads committing one after the other on one book could
    otherwise send in the other order (an order's update before the one it follows).
    A commit whose predecessor this process has not sent within COMMIT_ORDER_WAIT
    (another process made it, or its thread died) goes ahead; subscribers order the
    deltas by seq in any case."""
    if first is None or last is None:
        yield
        return
    deadline = time.monotonic() + COMMIT_ORDER_WAIT
    with _sent_changed:
        while (sent := _sent_seq.get(book)) is not None and sent < first - 1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            _sent_changed.wait(remaining)
    try:
        yield
    finally:
        with _sent_changed:
            if last > _sent_seq.get(book, last - 1):
                _sent_seq[book] = last
            _sent_changed.notify_all()
