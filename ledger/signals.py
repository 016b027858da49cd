"""Events of the ledger, sent only after the transaction commits."""

from django.dispatch import Signal

# balances: list[Balance] whose totals or locks changed.
balances_changed = Signal()
