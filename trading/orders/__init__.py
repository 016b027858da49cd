"""The stages of an order, as plain functions over plain data (no database):

  request  `request.py`  its shape against the market: ticks, lots, types, reduce-only
  gate     `gate.py`     price bands, what it reserves, whether the account carries it
  match    `trading.engine`
  settle   `trading.settle`

The transaction that runs them on a locked book, persists what they decided and emits
the events on commit is `trading.services.orders`.
"""
