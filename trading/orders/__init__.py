"""The path of an order, one module per stage:

  request  `request.py`  the order as asked for; its shape against the market       (pure)
  gate     `gate.py`     price bands, what it reserves, whether the account carries it (pure)
  admit    `admit.py`    request and gate on the account as the batch holds it
  match    `match.py`    the engine (`trading.engine`, pure, in memory)
  settle   `fills.py`    trades, fills, fees; positions and cash via `trading.settle`
  record   `record.py`   what one order changed, into its batch
  persist  `persist.py`  the transaction's locks, reads and writes (`dexsite.sql`)
  emit     `trading.emit` the events, sent once the transaction commits

`place.py` runs them, in one transaction per book (`batch.py` holds its state);
`cancel.py` takes orders off the book; `conditional.py` holds stop and take-profit
orders until their trigger is crossed, then places them through the same stages.
"""
