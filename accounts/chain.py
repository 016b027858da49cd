"""How the vault meets a blockchain: a pluggable adapter (settings.VAULT_CHAIN_ADAPTER).

No chain is reachable from this repository, so no code here pretends to watch one. The
default adapter, StaffConfirmation, leaves both directions to people: staff check an
incoming transaction on a block explorer and confirm the deposit (Django admin, or
`manage.py confirm_deposit TXHASH`); they send an approved withdrawal from the hot
wallet and record its transaction hash when approving it in the admin.

An adapter for a real chain would verify a recorded deposit (right amount, asset and
confirmations) and call `accounts.services.vault.deposit_confirm`, and broadcast
withdrawals staff approved. Its hooks run after the transaction that recorded the
transfer commits, so they never see a rolled-back one; they must not raise.
"""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from accounts.models import Transfer


class ChainAdapter:
    name = "abstract"

    def deposit_recorded(self, deposit: Transfer) -> None:
        """A trader reported a deposit; it is PENDING until confirmed."""

    def withdrawal_requested(self, withdrawal: Transfer) -> None:
        """A withdrawal was requested; its amount is locked until staff decide."""


class StaffConfirmation(ChainAdapter):
    """Staff confirm deposits and approve or reject withdrawals; nothing is automatic."""

    name = "staff"


@cache
def _adapter(path: str) -> ChainAdapter:
    return import_string(path)()


def chain_adapter() -> ChainAdapter:
    return _adapter(settings.VAULT_CHAIN_ADAPTER)
