"""Users, API keys, linked wallets, the vault, the paper faucet and paper reset.

Above `trading`, whose risk gate a withdrawal passes and whose orders and positions a
paper reset closes; trading never imports this app. Layers: ledger/__init__.py.
"""
