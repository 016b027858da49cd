"""The ledger: balances, their append-only history and the row locks every writer of
them takes.

The bottom layer of the apps. It imports no app (only Django, the standard library and
app-free `dexsite` modules); its models reach the user through
`settings.AUTH_USER_MODEL`, and it expects that model to have `is_system` and
`trader_id` (system accounts, public ids). The layers, each importing only those below
it (checked by dexsite/tests/test_layers.py):

    dexsite (app-free infra) <- ledger <- trading <- accounts <- realtime
"""
