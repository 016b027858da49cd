"""The watcher's deposits: each `Deposit` event of the vault contract credited once, after
CHAIN_CONFIRMATIONS blocks, through the vault's own deposit service (one DEPOSIT ledger
row, one `balanceUpdate`).

A block is final once CHAIN_CONFIRMATIONS blocks hold it, itself included. Only final
blocks are credited, each range in one transaction with the cursor
(`ChainDeployment.scanned_block`), so that a watcher killed anywhere starts again after
the last range it finished and, the credits being keyed by (tx hash, log index) under a
unique constraint, never credits an event twice. Events in blocks not yet final are
recorded as SEEN, for display; one that a reorganisation takes away is DROPPED and,
unless a final block holds it after all, never credited. A reorganisation deeper than
the confirmations (the block called final is gone) stops the watcher for staff: what it
credited cannot be taken back by a program.

Locks, in this order: the deployment row (one watcher at a time per deployment), a
chain-deposit row, then the vault's (a transfer row, balance rows).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from django.db import transaction
from web3 import Web3
from web3.exceptions import BlockNotFound

from accounts.evm import units_to_amount, vault_contract
from accounts.models import (
    ChainDeployment,
    ChainDeposit,
    ChainDepositStatus,
    Transfer,
    TransferKind,
    TransferStatus,
    User,
)
from accounts.services import vault
from dexsite.api import MONEY_LIMIT
from dexsite.errors import ExchangeError, NotFound
from ledger.models import Mode

log = logging.getLogger(__name__)
# Blocks read per eth_getLogs call (and per transaction of credits).
BLOCK_RANGE = 2000


class DeepReorg(Exception):
    """A block the watcher had called final is no longer in the chain."""


class ChainMoved(Exception):
    """The chain changed while a range was read; read it again at the next poll."""


@dataclass(frozen=True)
class DepositLog:
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    token: str
    sender: str
    trader_ref: uuid.UUID
    units: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.tx_hash, self.log_index)


@dataclass
class Poll:
    head: int
    final: int
    credited: list[ChainDeposit] = field(default_factory=list)
    held: list[ChainDeposit] = field(default_factory=list)
    seen: int = 0
    dropped: int = 0


def deposit_logs(w3: Web3, deployment: ChainDeployment, start: int, end: int) -> list[DepositLog]:
    event = vault_contract(w3, deployment).events.Deposit()
    raw = w3.eth.get_logs(
        {
            "address": deployment.vault,
            "fromBlock": start,
            "toBlock": end,
            "topics": [event.topic],
        }
    )
    logs = []
    for entry in raw:
        if entry.get("removed"):
            raise ChainMoved
        args = event.process_log(entry).args
        logs.append(
            DepositLog(
                tx_hash=entry["transactionHash"].to_0x_hex().lower(),
                log_index=entry["logIndex"],
                block_number=entry["blockNumber"],
                block_hash=entry["blockHash"].to_0x_hex().lower(),
                token=args.token,
                sender=args["from"],
                trader_ref=uuid.UUID(bytes=bytes(args.traderId)),
                units=args.amount,
            )
        )
    return logs


def _block_hash(w3: Web3, number: int) -> str | None:
    try:
        return w3.eth.get_block(number)["hash"].to_0x_hex().lower()
    except BlockNotFound:
        return None


def _canonical(w3: Web3, logs: list[DepositLog], end: int) -> str:
    """The hash of block `end`, once every log read is of the chain's blocks now: a
    reorganisation between reading the logs and now makes the range be read again."""
    hashes = {n: _block_hash(w3, n) for n in {end, *(lg.block_number for lg in logs)}}
    if hashes[end] is None or any(hashes[lg.block_number] != lg.block_hash for lg in logs):
        raise ChainMoved
    return hashes[end]


def chain_deposits_poll(*, w3: Web3, deployment: ChainDeployment, confirmations: int) -> Poll:
    """Credit what became final since the last poll, record what is not final yet."""
    deployment.refresh_from_db()
    head = w3.eth.block_number
    poll = Poll(head=head, final=head - confirmations + 1)
    if _block_hash(w3, deployment.scanned_block) != deployment.scanned_hash:
        raise DeepReorg(
            f"block {deployment.scanned_block} ({deployment.scanned_hash}) was final and is "
            "gone: a reorganisation deeper than CHAIN_CONFIRMATIONS"
        )
    while deployment.scanned_block < poll.final:
        start = deployment.scanned_block + 1
        end = min(poll.final, start + BLOCK_RANGE - 1)
        logs = deposit_logs(w3, deployment, start, end)
        end_hash = _canonical(w3, logs, end)
        with transaction.atomic():
            # The deployment row's lock: a second watcher waits here, then finds the
            # range done and reads on from where the first stopped.
            locked = ChainDeployment.objects.select_for_update().get(pk=deployment.pk)
            if locked.scanned_block != deployment.scanned_block:
                deployment.refresh_from_db()
                continue
            for entry in logs:
                row = _credit(locked, entry)
                if row is not None:
                    (
                        poll.credited if row.status == ChainDepositStatus.CREDITED else poll.held
                    ).append(row)
            poll.dropped += _drop_missing(locked, logs, up_to=end)
            locked.scanned_block, locked.scanned_hash = end, end_hash
            locked.save(update_fields=["scanned_block", "scanned_hash"])
        deployment.scanned_block, deployment.scanned_hash = end, end_hash
    start = deployment.scanned_block + 1
    pending = deposit_logs(w3, deployment, start, head) if start <= head else []
    with transaction.atomic():
        for entry in pending:
            _seen(deployment, entry)
        poll.seen = len(pending)
        poll.dropped += _drop_missing(deployment, pending, up_to=None)
    return poll


def _fields(entry: DepositLog) -> dict:
    return {
        "block_number": entry.block_number,
        "block_hash": entry.block_hash,
        "token": entry.token,
        "sender": entry.sender,
        "trader_ref": entry.trader_ref,
        "units": entry.units,
    }


def _seen(deployment: ChainDeployment, entry: DepositLog) -> None:
    row, created = ChainDeposit.objects.get_or_create(
        deployment=deployment,
        tx_hash=entry.tx_hash,
        log_index=entry.log_index,
        defaults={
            **_fields(entry),
            "asset": deployment.asset_of(entry.token) or "",
            "status": ChainDepositStatus.SEEN,
        },
    )
    if not created and row.status in (ChainDepositStatus.SEEN, ChainDepositStatus.DROPPED):
        # Back after a reorganisation, perhaps in another block.
        for name, value in _fields(entry).items():
            setattr(row, name, value)
        row.status, row.note = ChainDepositStatus.SEEN, ""
        row.save()


def _drop_missing(deployment: ChainDeployment, logs: list[DepositLog], up_to: int | None) -> int:
    """SEEN rows that the chain no longer holds where they were: in the final range just
    read (`up_to`), or anywhere above it (None)."""
    rows = ChainDeposit.objects.filter(deployment=deployment, status=ChainDepositStatus.SEEN)
    rows = (
        rows.filter(block_number__lte=up_to)
        if up_to is not None
        else rows.filter(block_number__gt=deployment.scanned_block)
    )
    present = {lg.key for lg in logs}
    gone = [r.pk for r in rows if (r.tx_hash, r.log_index) not in present]
    if gone:
        log.warning("deposits %s left the chain before they were final", gone)
    return ChainDeposit.objects.filter(pk__in=gone).update(
        status=ChainDepositStatus.DROPPED, note="gone from the chain before it was final"
    )


def _credit(deployment: ChainDeployment, entry: DepositLog) -> ChainDeposit | None:
    """Credit one final event, once. Returns its row, or None if it was done already."""
    ChainDeposit.objects.get_or_create(
        deployment=deployment,
        tx_hash=entry.tx_hash,
        log_index=entry.log_index,
        defaults={**_fields(entry), "status": ChainDepositStatus.SEEN},
    )
    # The row's lock: the same event credited by two hands is credited by the first;
    # the second finds it CREDITED. The unique constraint backs this up.
    row = ChainDeposit.objects.select_for_update().get(
        deployment=deployment, tx_hash=entry.tx_hash, log_index=entry.log_index
    )
    if row.status in (ChainDepositStatus.CREDITED, ChainDepositStatus.HELD):
        return None
    for name, value in _fields(entry).items():
        setattr(row, name, value)
    row.asset = deployment.asset_of(entry.token) or ""
    trader = User.objects.filter(trader_id=entry.trader_ref, is_system=False).first()
    decimals = deployment.tokens.get(row.asset, {}).get("decimals")
    amount = units_to_amount(entry.units, decimals) if decimals is not None else None
    if trader is None:
        row.status, row.note = ChainDepositStatus.HELD, "no trader has this id"
    elif amount is None:
        row.status, row.note = ChainDepositStatus.HELD, "a token the vault does not take"
    elif not 0 < amount < MONEY_LIMIT:
        row.status, row.note = ChainDepositStatus.HELD, "an amount the ledger cannot hold"
    else:
        row.transfer = _transfer_for(trader, row.asset, amount, entry.tx_hash)
        vault.deposit_confirm(deposit_id=row.transfer.pk, by=None)
        row.status, row.note = ChainDepositStatus.CREDITED, ""
    if row.status == ChainDepositStatus.HELD:
        log.warning("deposit %s#%s held for staff: %s", row.tx_hash, row.log_index, row.note)
    row.save()
    return row


def _transfer_for(trader: User, asset: str, amount, tx_hash: str) -> Transfer:
    """The trader's own notice of this transaction if it says the same, else a new
    deposit. A notice that says otherwise stays for staff, and the new deposit goes
    without the hash (one hash, one deposit row)."""
    notice = (
        Transfer.objects.select_for_update()
        .filter(kind=TransferKind.DEPOSIT, tx_hash=tx_hash)
        .first()
    )
    if (
        notice is not None
        and notice.status == TransferStatus.PENDING
        and (notice.trader_id, notice.asset, notice.amount) == (trader.pk, asset, amount)
        and not ChainDeposit.objects.filter(transfer=notice).exists()
    ):
        return notice
    return Transfer.objects.create(
        trader=trader,
        kind=TransferKind.DEPOSIT,
        asset=asset,
        mode=Mode.REAL,
        amount=amount,
        tx_hash=None if notice is not None else tx_hash,
    )


def held_deposit_release(*, chain_deposit_id: int, trader: User, by: User | None) -> ChainDeposit:
    """Staff credit a HELD deposit to the trader they found it was meant for (its trader
    id named no one), once: the row's lock and its status make a second release fail."""
    with transaction.atomic():
        row = ChainDeposit.objects.select_for_update().filter(pk=chain_deposit_id).first()
        if row is None:
            raise NotFound("chain deposit")
        if row.status != ChainDepositStatus.HELD:
            raise ExchangeError(
                "DEPOSIT_NOT_HELD", f"this deposit is {row.status}", status_code=409
            )
        spec = row.deployment.tokens.get(row.asset)
        amount = units_to_amount(int(row.units), spec["decimals"]) if spec else None
        if amount is None or not 0 < amount < MONEY_LIMIT:
            raise ExchangeError("INVALID_AMOUNT", "the ledger cannot hold this deposit")
        row.transfer = _transfer_for(trader, row.asset, amount, row.tx_hash)
        vault.deposit_confirm(deposit_id=row.transfer.pk, by=by)
        row.status, row.note = (
            ChainDepositStatus.CREDITED,
            f"released by staff to {trader.username}",
        )
        row.save()
    return row
