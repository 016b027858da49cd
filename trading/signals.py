"""Domain events of trading. Sent only from `transaction.on_commit`, so a receiver never
sees a change that was rolled back. Payloads are the API's JSON-ready dicts, built once
per event; trading does not know who listens (the realtime app does).
"""

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
# market, status
market_state_changed = Signal()
