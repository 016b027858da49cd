"""Writes to balances and the ledger. They expect to run inside the caller's
transaction (the caller owns it: an order, a fill, a faucet credit, a transfer)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from dexsite import sql
from ledger.models import Balance, LedgerEntry
from ledger.selectors import balances_of

# The system accounts: they hold funds (fees collected, the insurance fund) but never
# log in.
FEE_ACCOUNT = "__fees__"
INSURANCE_ACCOUNT = "__insurance__"


@dataclass(slots=True)
class Posting:
    trader_id: int
    asset: str
    mode: str
    amount: Decimal
    reason: str
    ref: str = ""


def system_account(username: str) -> AbstractBaseUser:
    user, _ = get_user_model().objects.get_or_create(
        username=username, defaults={"is_system": True, "is_active": False}
    )
    return user


_system_ids: dict[str, int] = {}


def system_account_id(username: str) -> int:
    """Primary key of a system account, looked up once per process. Remembered only
    once committed: a row created by a transaction that then rolls back is gone, and a
    remembered id of it would fail every later posting."""
    if username in _system_ids:
        return _system_ids[username]
    pk = system_account(username).pk
    transaction.on_commit(lambda: _system_ids.setdefault(username, pk))
    return pk


def balances_ensure(keys: Iterable[tuple[int, str, str]]) -> None:
    """Create missing balance rows (zero) so that later locks find them."""
    Balance.objects.bulk_create(
        [Balance(trader_id=t, asset=a, mode=m) for t, a, m in set(keys)],
        ignore_conflicts=True,
    )


def balances_lock(keys: Iterable[tuple[int, str, str]]) -> dict[tuple[int, str, str], Balance]:
    """Lock balance rows in primary-key order, the one order every writer uses, so that
    two transactions touching the same accounts cannot deadlock on them."""
    return balances_of(keys, lock=True)


_LEDGER_COLUMNS = ("trader_id", "asset", "mode", "amount", "reason", "ref", "created_at")


def ledger_insert(postings: Sequence[Posting]) -> None:
    """Append the ledger rows of `postings` (one statement; their keys are not read
    back)."""
    now = timezone.now()
    sql.insert_values(
        LedgerEntry,
        _LEDGER_COLUMNS,
        [(p.trader_id, p.asset, p.mode, p.amount, p.reason, p.ref, now) for p in postings],
    )


def ledger_apply(
    postings: list[Posting],
    balances: dict[tuple[int, str, str], Balance],
    *,
    unlocked: Sequence[Posting] = (),
) -> None:
    """Append ledger rows and add them to the already-locked balance rows (in memory;
    the caller saves the balances it touched).

    `unlocked`: rows for accounts that everyone credits (the fee account), appended in
    the same statement; their balances are not in `balances` and are updated by
    `balances_credit_unlocked`, the caller's last write."""
    if not postings and not unlocked:
        return
    ledger_insert([*postings, *unlocked])
    ledger_post(postings, balances)


def ledger_post(postings: Iterable[Posting], balances: dict[tuple[int, str, str], Balance]) -> None:
    """Add postings to the already-locked balance rows, in memory only: for a caller that
    appends their ledger rows later in the same transaction (`ledger_insert`)."""
    for p in postings:
        balances[(p.trader_id, p.asset, p.mode)].total += p.amount


def balances_credit_unlocked(postings: list[Posting]) -> None:
    """Add postings (already in the ledger) to their balances with
    `INSERT ... ON CONFLICT DO UPDATE SET total = total + x` (an account's first credit in
    an asset creates its row): no row is read or locked ahead, nothing is read back, and
    the caller does this last so that it holds the row's lock only while committing."""
    sums: dict[tuple[int, str, str], Decimal] = defaultdict(Decimal)
    for p in postings:
        sums[(p.trader_id, p.asset, p.mode)] += p.amount
    if not sums:
        return
    table = sql.qn(Balance._meta.db_table)
    credit = (
        f'INSERT INTO {table} ("trader_id", "asset", "mode", "total", "locked")'  # noqa: S608
        ' VALUES (%s, %s, %s, %s, 0) ON CONFLICT ("trader_id", "asset", "mode")'
        f' DO UPDATE SET "total" = {table}."total" + EXCLUDED."total"'
    )
    for (t, a, m), amount in sorted(sums.items()):
        sql.execute(credit, [t, a, m, amount])
