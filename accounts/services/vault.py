"""The vault: REAL money entering (deposits) and leaving (withdrawals).

Every movement is ledger rows: a confirmed deposit is a DEPOSIT row, an approved
withdrawal a WITHDRAWAL row; nothing else changes a mode's total. A withdrawal request
moves nothing yet: it locks the amount in `Balance.locked` at once (so neither an order
nor a second withdrawal can spend it), and staff approval turns the lock into the ledger
row, or rejection releases it.

Locks, always in this order: a transfer row, then balance rows (pk order through
`balances_lock`), then a linked-wallet row. A deposit notice locks its trader's row
before it writes its transfer row (the cap on pending deposits). A withdrawal request starts at the balance
row, the same row an order placement of this trader locks before reserving margin, so
orders and withdrawals queue on it and never spend the same free funds twice. The chain
watcher locks its chain-deposit row before all of these (accounts/services/chain_deposits.py).

Where the vault contract pays withdrawals (`VaultWatcher`), staff approval makes a
withdrawal SENDING and the watcher's signer books it once the chain has paid
(accounts/services/chain_withdrawals.py).
"""

from __future__ import annotations

import re
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.chain import chain_adapter
from accounts.models import (
    ChainDeposit,
    ChainDepositStatus,
    LinkedWallet,
    Transfer,
    TransferKind,
    TransferStatus,
    User,
)
from accounts.services.wallets import address_parse
from dexsite.db import retrying
from dexsite.errors import ExchangeError, NotFound
from ledger.models import Balance, LedgerReason, Mode
from ledger.services import Posting, balances_ensure, balances_lock, ledger_apply
from trading import margin
from trading.emit import Emitter
from trading.presenters import dec

TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


def tx_hash_parse(raw: object, field: str = "txHash") -> str:
    if not isinstance(raw, str) or not TX_HASH.match(raw):
        raise ExchangeError(
            "INVALID_TX_HASH", "a transaction hash is 0x and 64 hex digits", field=field
        )
    return raw.lower()


def _asset(asset: str) -> str:
    if asset not in settings.VAULT_ASSETS:
        raise ExchangeError(
            "INVALID_ASSET",
            f"the vault takes {', '.join(settings.VAULT_ASSETS)}",
            field="asset",
        )
    return asset


def _amount(amount: Decimal) -> Decimal:
    if amount <= 0:
        raise ExchangeError("INVALID_AMOUNT", "amount must be positive", field="amount")
    return amount


def _notify_balances(balances: list[Balance]) -> None:
    if balances:
        events = Emitter(balances[0].mode)
        events.paid(balances)
        events.send_on_commit()


# -- deposits ---------------------------------------------------------------------------


def deposit_record(
    *, trader: User, asset: str, amount: Decimal, tx_hash: str
) -> tuple[Transfer, bool]:
    """A pending deposit for an incoming transaction. Returns (deposit, created?): the
    same transaction reported again by its trader is the same deposit."""
    asset, amount, tx_hash = _asset(asset), _amount(amount), tx_hash_parse(tx_hash)
    existing = Transfer.objects.filter(kind=TransferKind.DEPOSIT, tx_hash=tx_hash).first()
    if existing is not None:
        return _same_deposit(existing, trader, asset, amount), False
    try:
        with transaction.atomic():
            _pending_deposits_below_cap(trader)
            deposit = Transfer.objects.create(
                trader=trader,
                kind=TransferKind.DEPOSIT,
                asset=asset,
                mode=Mode.REAL,
                amount=amount,
                tx_hash=tx_hash,
            )
    except IntegrityError:
        # Reported twice at once: the unique constraint let one in; this is the other.
        existing = Transfer.objects.get(kind=TransferKind.DEPOSIT, tx_hash=tx_hash)
        return _same_deposit(existing, trader, asset, amount), False
    # The deposit is recorded: the adapter's failure is logged, not the trader's.
    transaction.on_commit(lambda: chain_adapter().deposit_recorded(deposit), robust=True)
    return deposit, True


def _pending_deposits_below_cap(trader: User) -> None:
    """Refuse a notice past VAULT_PENDING_DEPOSITS_MAX of the trader's deposits waiting
    for staff: notices cost nothing to send and each one sits in the staff queue.

    The trader's row is locked for the rest of the caller's transaction: of two notices
    sent at once the second waits here and then counts the first, so a race cannot pass
    the cap. Nothing that holds a lock this transaction takes next (a transfer row)
    waits for a trader row, so this lock comes first."""
    User.objects.select_for_update().filter(pk=trader.pk).values_list("pk").get()
    cap = settings.VAULT_PENDING_DEPOSITS_MAX
    pending = Transfer.objects.filter(
        trader=trader, kind=TransferKind.DEPOSIT, status=TransferStatus.PENDING
    ).count()
    if pending >= cap:
        raise ExchangeError(
            "TOO_MANY_PENDING_DEPOSITS",
            f"{pending} deposits are waiting for confirmation; at most {cap} may wait at once",
            status_code=409,
        )


def _same_deposit(existing: Transfer, trader: User, asset: str, amount: Decimal) -> Transfer:
    if (existing.trader_id, existing.asset, existing.amount) != (trader.pk, asset, amount):
        raise ExchangeError(
            "TX_HASH_CONFLICT",
            "this transaction is already recorded as another deposit",
            field="txHash",
            status_code=409,
        )
    return existing


def _locked_transfer(kind: str, status: str = TransferStatus.PENDING, **lookup) -> Transfer:
    # The transfer row's lock: of two staff members deciding one transfer at once, the
    # second waits here and then finds it no longer PENDING.
    transfer = Transfer.objects.select_for_update().filter(kind=kind, **lookup).first()
    if transfer is None:
        raise NotFound(kind.lower())
    if transfer.status != status:
        raise ExchangeError(
            f"{kind}_NOT_PENDING", f"this {kind.lower()} is {transfer.status}", status_code=409
        )
    return transfer


@retrying
def deposit_confirm(
    *, by: User | None, tx_hash: str | None = None, deposit_id: int | None = None
) -> Transfer:
    """Credit a pending deposit, exactly once: a DEPOSIT ledger row."""
    lookup = {"pk": deposit_id} if deposit_id is not None else {"tx_hash": tx_hash_parse(tx_hash)}
    with transaction.atomic():
        deposit = _locked_transfer(TransferKind.DEPOSIT, **lookup)
        if deposit.tx_hash and _credited_from_chain(deposit):
            raise ExchangeError(
                "TX_HASH_CONFLICT",
                "the chain watcher credited this transaction to another deposit",
                field="txHash",
                status_code=409,
            )
        key = (deposit.trader_id, deposit.asset, deposit.mode)
        balances_ensure([key])
        rows = balances_lock([key])
        ledger_apply(
            [
                Posting(
                    deposit.trader_id,
                    deposit.asset,
                    deposit.mode,
                    deposit.amount,
                    LedgerReason.DEPOSIT,
                    f"deposit:{deposit.pk}",
                )
            ],
            rows,
        )
        Balance.objects.bulk_update(rows.values(), ["total"])
        _decide(deposit, TransferStatus.CONFIRMED, by)
        _notify_balances(list(rows.values()))
    return deposit


def _credited_from_chain(deposit: Transfer) -> bool:
    # A notice naming a transaction whose Deposit event the watcher credited (to the
    # trader the event names) would credit that money a second time.
    return (
        ChainDeposit.objects.filter(tx_hash=deposit.tx_hash, status=ChainDepositStatus.CREDITED)
        .exclude(transfer=deposit)
        .exists()
    )


@retrying
def deposit_reject(*, deposit_id: int, by: User | None, note: str = "") -> Transfer:
    """A reported deposit staff found no such transaction for. Nothing was credited."""
    with transaction.atomic():
        deposit = _locked_transfer(TransferKind.DEPOSIT, pk=deposit_id)
        _decide(deposit, TransferStatus.REJECTED, by, note=note)
    return deposit


def _decide(
    transfer: Transfer, status: str, by: User | None, note: str = "", tx_hash: str | None = None
) -> None:
    transfer.status = status
    transfer.decided_at = timezone.now()
    transfer.decided_by = by
    fields = ["status", "decided_at", "decided_by"]
    if note:
        transfer.note = note[:200]
        fields.append("note")
    if tx_hash is not None:
        transfer.tx_hash = tx_hash
        fields.append("tx_hash")
    transfer.save(update_fields=fields)


# -- withdrawals ------------------------------------------------------------------------


def _linked(trader: User, address: str, *, lock: bool) -> LinkedWallet | None:
    qs = LinkedWallet.objects.filter(trader=trader, address=address, unlinked_at__isnull=True)
    return (qs.select_for_update() if lock else qs).first()


@retrying
def withdrawal_request(*, trader: User, asset: str, amount: Decimal, address: str) -> Transfer:
    """Lock `amount` for a withdrawal to one of the trader's linked addresses."""
    asset, amount, address = _asset(asset), _amount(amount), address_parse(address)
    chain_adapter().withdrawal_check(asset, amount)
    not_linked = ExchangeError(
        "WALLET_NOT_LINKED", "withdrawals go only to a linked wallet", field="address"
    )
    if _linked(trader, address, lock=False) is None:
        raise not_linked
    key = (trader.pk, asset, Mode.REAL)
    with transaction.atomic():
        balances_ensure([key])
        # The balance row's lock serialises this trader's withdrawals and orders: 50
        # concurrent requests pass here one at a time, each seeing what the last locked.
        balance = balances_lock([key])[key]
        # Locked too, so that an unlink in flight either finished (and we refuse) or
        # waits for this request and then sees it pending.
        if _linked(trader, address, lock=True) is None:
            raise not_linked
        # The risk gate: what the withdrawal locks must be cash the account has free.
        if margin.shortfall(margin.withdrawal_account(balance, trader.pk), reserve=amount) > 0:
            raise ExchangeError(
                "INSUFFICIENT_BALANCE",
                f"{dec(amount)} {asset} requested, "
                f"{dec(margin.withdrawable(balance, trader.pk))} can be withdrawn",
                field="amount",
            )
        balance.locked += amount
        balance.withdrawing += amount
        balance.save(update_fields=["locked", "withdrawing"])
        withdrawal = Transfer.objects.create(
            trader=trader,
            kind=TransferKind.WITHDRAWAL,
            asset=asset,
            mode=Mode.REAL,
            amount=amount,
            address=address,
        )
        _notify_balances([balance])
    transaction.on_commit(lambda: chain_adapter().withdrawal_requested(withdrawal), robust=True)
    return withdrawal


@retrying
def withdrawal_approve(
    *, withdrawal_id: int, tx_hash: str, by: User | None, sent_by_chain: bool = False
) -> Transfer:
    """Staff sent the funds (or, `sent_by_chain`, the vault contract paid a SENDING
    withdrawal): the lock becomes a WITHDRAWAL ledger row."""
    tx_hash = tx_hash_parse(tx_hash)
    status = TransferStatus.SENDING if sent_by_chain else TransferStatus.PENDING
    with transaction.atomic():
        withdrawal = _locked_transfer(TransferKind.WITHDRAWAL, status, pk=withdrawal_id)
        if Transfer.objects.filter(
            ~Q(pk=withdrawal.pk), kind=TransferKind.WITHDRAWAL, tx_hash=tx_hash
        ).exists():
            raise ExchangeError(
                "TX_HASH_CONFLICT",
                "this transaction already pays another withdrawal",
                field="txHash",
                status_code=409,
            )
        key = (withdrawal.trader_id, withdrawal.asset, withdrawal.mode)
        rows = balances_lock([key])
        rows[key].locked -= withdrawal.amount
        rows[key].withdrawing -= withdrawal.amount
        ledger_apply(
            [
                Posting(
                    withdrawal.trader_id,
                    withdrawal.asset,
                    withdrawal.mode,
                    -withdrawal.amount,
                    LedgerReason.WITHDRAWAL,
                    f"withdrawal:{withdrawal.pk}",
                )
            ],
            rows,
        )
        Balance.objects.bulk_update(rows.values(), ["total", "locked", "withdrawing"])
        if sent_by_chain:
            # Staff decided when they queued it; the chain only carried it out.
            by = withdrawal.decided_by
        _decide(withdrawal, TransferStatus.APPROVED, by, tx_hash=tx_hash)
        _notify_balances(list(rows.values()))
    return withdrawal


# -- withdrawals paid by the vault contract (settings.VAULT_CHAIN_ADAPTER sends them) ----


@retrying
def withdrawal_send_approve(*, withdrawal_id: int, by: User | None) -> Transfer:
    """Staff approved: the watcher's signer pays it from the vault contract. The amount
    stays locked until the chain has paid it (`withdrawal_approve(sent_by_chain=True)`)
    or the send failed and staff decide again (`withdrawal_send_failed`). A SENDING
    withdrawal cannot be rejected: that would free funds a transaction in flight may
    still pay."""
    with transaction.atomic():
        withdrawal = _locked_transfer(TransferKind.WITHDRAWAL, pk=withdrawal_id)
        withdrawal.note = ""
        _decide(withdrawal, TransferStatus.SENDING, by)
        withdrawal.save(update_fields=["note"])
    return withdrawal


@retrying
def withdrawal_send_recorded(*, withdrawal_id: int, tx_hash: str) -> Transfer:
    """The signer's transaction, recorded as it is broadcast, for the trader to follow
    and for a restarted signer to find."""
    with transaction.atomic():
        withdrawal = _locked_transfer(
            TransferKind.WITHDRAWAL, TransferStatus.SENDING, pk=withdrawal_id
        )
        withdrawal.tx_hash = tx_hash_parse(tx_hash)
        withdrawal.save(update_fields=["tx_hash"])
    return withdrawal


@retrying
def withdrawal_send_failed(*, withdrawal_id: int, note: str) -> Transfer:
    """The chain did not pay it (the vault holds too little, the transaction reverted):
    back to staff, the amount still locked, so that a rejection releases it once."""
    with transaction.atomic():
        withdrawal = _locked_transfer(
            TransferKind.WITHDRAWAL, TransferStatus.SENDING, pk=withdrawal_id
        )
        withdrawal.status, withdrawal.tx_hash, withdrawal.note = (
            TransferStatus.PENDING,
            None,
            note[:200],
        )
        withdrawal.save(update_fields=["status", "tx_hash", "note"])
    return withdrawal


@retrying
def withdrawal_reject(*, withdrawal_id: int, by: User | None, note: str = "") -> Transfer:
    """Staff refused: the locked amount is available again; no ledger row."""
    with transaction.atomic():
        withdrawal = _locked_transfer(TransferKind.WITHDRAWAL, pk=withdrawal_id)
        key = (withdrawal.trader_id, withdrawal.asset, withdrawal.mode)
        rows = balances_lock([key])
        rows[key].locked -= withdrawal.amount
        rows[key].withdrawing -= withdrawal.amount
        Balance.objects.bulk_update(rows.values(), ["locked", "withdrawing"])
        _decide(withdrawal, TransferStatus.REJECTED, by, note=note)
        _notify_balances(list(rows.values()))
    return withdrawal
