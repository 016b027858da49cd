"""The EVM chain the vault contract lives on: the connection, the compiled contracts
(contracts/build/, made by `make install-js`), the deployment in use and the conversion
between token units and ledger amounts."""

from __future__ import annotations

import json
import uuid
from decimal import ROUND_DOWN, Decimal
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from web3 import Web3
from web3.contract import Contract

from accounts.models import ChainDeployment
from ledger.models import MONEY

ARTIFACTS = Path(settings.BASE_DIR) / "contracts" / "build"
LEDGER_QUANTUM = Decimal(1).scaleb(-MONEY["decimal_places"])


def chain_configured() -> bool:
    return bool(settings.CHAIN_RPC_URL)


@cache
def artifact(name: str) -> dict:
    path = ARTIFACTS / f"{name}.json"
    if not path.exists():
        raise ImproperlyConfigured(f"{path} is missing: `make install-js` compiles the contracts")
    return json.loads(path.read_text())


def web3_connect(url: str | None = None) -> Web3:
    return Web3(Web3.HTTPProvider(url or settings.CHAIN_RPC_URL, request_kwargs={"timeout": 30}))


def deployment_current(chain_id: int | None = None) -> ChainDeployment | None:
    """The deployment in use on the configured chain (the newest recorded)."""
    chain_id = settings.CHAIN_ID if chain_id is None else chain_id
    return ChainDeployment.objects.filter(chain_id=chain_id).order_by("-id").first()


def vault_contract(w3: Web3, deployment: ChainDeployment) -> Contract:
    return w3.eth.contract(address=deployment.vault, abi=artifact("Vault")["abi"])


def token_contract(w3: Web3, address: str) -> Contract:
    return w3.eth.contract(address=address, abi=artifact("TestToken")["abi"])


def trader_ref(trader_id: uuid.UUID) -> bytes:
    """A trader id as the contract's bytes16."""
    return trader_id.bytes


def units_to_amount(units: int, decimals: int) -> Decimal:
    """Token units as a ledger amount, rounded down to the ledger's 12 decimals (a token
    with more decimals leaves the dust in the vault rather than credit what it lacks)."""
    return (Decimal(units).scaleb(-decimals)).quantize(LEDGER_QUANTUM, rounding=ROUND_DOWN)


def amount_to_units(amount: Decimal, decimals: int) -> int | None:
    """A ledger amount in token units, or None where the token cannot pay it exactly."""
    units = amount.scaleb(decimals)
    return int(units) if units == units.to_integral_value() else None


def hot_wallet():
    """The withdrawal signer's account, from CHAIN_WITHDRAWAL_KEY or the file named by
    CHAIN_WITHDRAWAL_KEY_FILE; None where neither is set. Read from the environment
    each time and never logged or kept in settings."""
    import os

    from eth_account import Account

    key = os.environ.get("CHAIN_WITHDRAWAL_KEY", "").strip()
    path = os.environ.get("CHAIN_WITHDRAWAL_KEY_FILE", "").strip()
    if not key and path and Path(path).exists():
        key = Path(path).read_text().strip()
    return Account.from_key(key) if key else None


def transact(w3: Web3, call, sender, **tx) -> dict:
    """Send a contract call (or a deployment) from `sender`: a local account (signed here)
    or the address of an account the node holds (a development chain's). Waits for the
    receipt; a reverted transaction raises."""
    from eth_account.signers.local import LocalAccount

    if isinstance(sender, LocalAccount):
        built = call.build_transaction(
            {
                "from": sender.address,
                "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
                **tx,
            }
        )
        tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(built).raw_transaction)
    else:
        tx_hash = call.transact({"from": sender, **tx})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {tx_hash.to_0x_hex()} reverted")
    return receipt
