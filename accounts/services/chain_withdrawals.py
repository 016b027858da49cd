"""The watcher's withdrawals: each withdrawal staff approved (SENDING) paid by the vault
contract from the hot wallet, then booked: one WITHDRAWAL ledger row, once.

Paid once, whatever stops the signer: the contract pays each withdrawal id (the
transfer's id) at most once, and before sending anything the signer looks for the
contract's `Withdrawal` event of that id. A signer killed after sending and before
booking finds the event when it starts again and books it with that transaction's
hash; it never sends a second payment that could succeed.

The order, for each withdrawal: sign; record the hash (so that the trader sees it and a
restarted signer waits for it instead of sending anew); broadcast; wait for the receipt;
book once CHAIN_CONFIRMATIONS blocks hold the payment (a later poll, if not yet). A transaction the node no longer knows (dropped) is signed again with the nonce
the wallet is at, which is the dropped one's, so that at most one of them can be mined.
One that reverted, or that could not be built (the vault holds too little), goes back
to staff with the amount still locked: nothing is released but by a staff rejection,
and that releases it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound

from accounts.evm import amount_to_units, vault_contract
from accounts.models import ChainDeployment, Transfer, TransferKind, TransferStatus
from accounts.services import vault

log = logging.getLogger(__name__)
RECEIPT_TIMEOUT = 120  # seconds


@dataclass(frozen=True)
class Outcome:
    withdrawal_id: int
    result: str  # PAID (booked), RETURNED (to staff), WAITING (still in flight)
    tx_hash: str | None = None


def withdrawals_to_send() -> list[Transfer]:
    return list(
        Transfer.objects.filter(
            kind=TransferKind.WITHDRAWAL, status=TransferStatus.SENDING
        ).order_by("id")
    )


def withdrawals_pay(
    *, w3: Web3, deployment: ChainDeployment, signer: LocalAccount
) -> list[Outcome]:
    if signer.address != deployment.signer:
        log.error(
            "the hot wallet is not the vault's withdrawal signer %s: nothing sent",
            deployment.signer,
        )
        return []
    return [
        withdrawal_pay(w3=w3, deployment=deployment, signer=signer, withdrawal=w)
        for w in withdrawals_to_send()
    ]


@dataclass(frozen=True)
class Paid:
    tx_hash: str
    block: int


def paid_by(w3: Web3, deployment: ChainDeployment, withdrawal_id: int) -> Paid | None:
    """The transaction in which the vault paid this withdrawal, if it did."""
    contract = vault_contract(w3, deployment)
    if not contract.functions.paid(withdrawal_id).call():
        return None
    event = contract.events.Withdrawal()
    logs = w3.eth.get_logs(
        {
            "address": deployment.vault,
            "fromBlock": deployment.deployed_block,
            "toBlock": "latest",
            "topics": [event.topic, "0x" + withdrawal_id.to_bytes(32, "big").hex()],
        }
    )
    if not logs:
        return None
    return Paid(logs[-1]["transactionHash"].to_0x_hex(), logs[-1]["blockNumber"])


def _book(w3: Web3, withdrawal: Transfer, paid: Paid) -> Outcome:
    """Book the payment once CHAIN_CONFIRMATIONS blocks hold it, as deposits wait: a
    payment a reorganisation takes away is not booked (its transaction, still signed
    and unpaid, is mined again or the signer sends it anew)."""
    if w3.eth.block_number - paid.block + 1 < settings.CHAIN_CONFIRMATIONS:
        return Outcome(withdrawal.pk, "WAITING", paid.tx_hash)
    vault.withdrawal_approve(
        withdrawal_id=withdrawal.pk, tx_hash=paid.tx_hash, by=None, sent_by_chain=True
    )
    log.info("withdrawal %s paid in %s", withdrawal.pk, paid.tx_hash)
    return Outcome(withdrawal.pk, "PAID", paid.tx_hash)


def _return(withdrawal: Transfer, note: str) -> Outcome:
    log.warning("withdrawal %s back to staff: %s", withdrawal.pk, note)
    vault.withdrawal_send_failed(withdrawal_id=withdrawal.pk, note=note)
    return Outcome(withdrawal.pk, "RETURNED")


def _receipt(w3: Web3, tx_hash: str, timeout: float):
    """The receipt, None while the node holds the transaction unmined after `timeout`,
    or False where the node does not know it (dropped)."""
    try:
        w3.eth.get_transaction(tx_hash)
    except TransactionNotFound:
        return False
    try:
        return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    except TimeExhausted:
        return None


def withdrawal_pay(
    *, w3: Web3, deployment: ChainDeployment, signer: LocalAccount, withdrawal: Transfer
) -> Outcome:
    paid = paid_by(w3, deployment, withdrawal.pk)
    if paid is not None:
        # Sent by an earlier run (perhaps killed before it booked): book it, send nothing.
        return _book(w3, withdrawal, paid)
    if withdrawal.tx_hash:
        receipt = _receipt(w3, withdrawal.tx_hash, RECEIPT_TIMEOUT)
        if receipt is None:
            return Outcome(withdrawal.pk, "WAITING", withdrawal.tx_hash)
        if receipt is not False:
            return _after(w3, deployment, withdrawal, withdrawal.tx_hash, receipt)
    spec = deployment.tokens[withdrawal.asset]
    units = amount_to_units(withdrawal.amount, spec["decimals"])
    if units is None:
        return _return(withdrawal, f"{withdrawal.asset} cannot pay this amount exactly")
    call = vault_contract(w3, deployment).functions.withdraw(
        spec["address"], withdrawal.address, units, withdrawal.pk
    )
    try:
        tx = call.build_transaction(
            {
                "from": signer.address,
                "nonce": w3.eth.get_transaction_count(signer.address, "pending"),
                "chainId": deployment.chain_id,
            }
        )
    except ContractLogicError as e:
        # Nothing was sent: the vault holds too little, or the id was paid meanwhile.
        paid = paid_by(w3, deployment, withdrawal.pk)
        if paid is not None:
            return _book(w3, withdrawal, paid)
        return _return(withdrawal, f"not sent, the vault refused it: {e.message or e}")
    signed = signer.sign_transaction(tx)
    tx_hash = signed.hash.to_0x_hex()
    vault.withdrawal_send_recorded(withdrawal_id=withdrawal.pk, tx_hash=tx_hash)
    w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = _receipt(w3, tx_hash, RECEIPT_TIMEOUT)
    if not receipt:
        return Outcome(withdrawal.pk, "WAITING", tx_hash)
    return _after(w3, deployment, withdrawal, tx_hash, receipt)


def _after(
    w3: Web3, deployment: ChainDeployment, withdrawal: Transfer, tx_hash: str, receipt
) -> Outcome:
    if receipt["status"] == 1:
        return _book(w3, withdrawal, Paid(tx_hash, receipt["blockNumber"]))
    paid = paid_by(w3, deployment, withdrawal.pk)
    if paid is not None:
        return _book(w3, withdrawal, paid)
    return _return(withdrawal, f"reverted on chain: {tx_hash}")
