"""How the vault meets a blockchain: a pluggable adapter (settings.VAULT_CHAIN_ADAPTER).

VaultWatcher, where a chain is configured (CHAIN_RPC_URL): the vault contract's
`Deposit` events are credited by `manage.py runchainwatch` after CHAIN_CONFIRMATIONS
blocks, and withdrawals staff approve are paid by that process's signer
(accounts/services/chain_deposits.py, chain_withdrawals.py; docs/accounts.md).

StaffConfirmation, for a chain without a watcher, leaves both directions to people:
staff check an incoming transaction on a block explorer and confirm the deposit (Django
admin, or `manage.py confirm_deposit TXHASH`); they send an approved withdrawal from the
hot wallet and record its transaction hash when approving it in the admin.

The hooks run after the transaction that recorded the transfer commits, so they never
see a rolled-back one; they must not raise.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from accounts.models import Transfer
from dexsite.errors import ExchangeError


class ChainAdapter:
    name = "abstract"
    # Whether approved withdrawals are paid by a program (the watcher's signer) rather
    # than sent by staff, who then record the hash.
    sends_withdrawals = False

    def deposit_recorded(self, deposit: Transfer) -> None:
        """A trader reported a deposit; it is PENDING until confirmed."""

    def withdrawal_requested(self, withdrawal: Transfer) -> None:
        """A withdrawal was requested; its amount is locked until staff decide."""

    def withdrawal_check(self, asset: str, amount: Decimal) -> None:
        """Refuse (ExchangeError) a withdrawal request this chain could not pay exactly.
        Runs before anything is locked; may raise."""


class StaffConfirmation(ChainAdapter):
    """Staff confirm deposits and approve or reject withdrawals; nothing is automatic."""

    name = "staff"


class VaultWatcher(ChainAdapter):
    """The vault contract on an EVM chain, watched by `manage.py runchainwatch`. A
    deposit notice needs no staff: the watcher credits the event it names."""

    name = "chain"
    sends_withdrawals = True

    def withdrawal_check(self, asset: str, amount: Decimal) -> None:
        from accounts.evm import amount_to_units, deployment_current

        deployment = deployment_current()
        spec = deployment.tokens.get(asset) if deployment is not None else None
        if spec is None:
            raise ExchangeError(
                "CHAIN_UNAVAILABLE", f"the vault takes no {asset} on this chain", status_code=409
            )
        if amount_to_units(amount, spec["decimals"]) is None:
            raise ExchangeError(
                "INVALID_AMOUNT",
                f"{asset} has {spec['decimals']} decimals on this chain",
                field="amount",
            )


@cache
def _adapter(path: str) -> ChainAdapter:
    return import_string(path)()


def chain_adapter() -> ChainAdapter:
    return _adapter(settings.VAULT_CHAIN_ADAPTER)
