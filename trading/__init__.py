"""The exchange: markets, books, orders, risk, settlement and their checker.

Built on `ledger` and `dexsite` and on nothing above: users come through
`settings.AUTH_USER_MODEL`, and what accounts adds (the vault's checks, the trade page's
wallets) it hands down. Layers: ledger/__init__.py.
"""
