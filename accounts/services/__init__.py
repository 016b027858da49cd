"""Writes to balances and the ledger. The ledger helpers expect to run inside the
caller's transaction (the caller owns it: an order, a fill, a faucet credit).

The other writes of the accounts app live beside this module, each owning its
transactions: `api_keys`, `wallets`, `vault`, `paper` (the reset). They are not imported
here, because they use trading's services, which import this module."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Balance, LedgerEntry, LedgerReason, Mode, User
from accounts.selectors import balances_of, paper_faucet_wait
from dexsite import sql
from dexsite.errors import ExchangeError


@dataclass(slots=True)
class Posting:
    trader_id: int
    asset: str
    mode: str
    amount: Decimal
    reason: str
    ref: str = ""


def system_account(username: str) -> User:
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


def user_signup(*, username: str, password: str) -> User:
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    from accounts import usernames

    # The sign-up page's rule (accounts/usernames.py): its shape, then the password,
    # then whether it (or a name that looks the same) is taken.
    try:
        username = usernames.username_validate(username)
    except ValidationError as e:
        raise ExchangeError("INVALID_USERNAME", e.messages[0], field="username") from e
    try:
        validate_password(password)
    except ValidationError as e:
        raise ExchangeError("INVALID_PASSWORD", " ".join(e.messages), field="password") from e
    try:
        usernames.username_available(username)
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password)
    except (ValidationError, IntegrityError) as e:
        message = e.messages[0] if isinstance(e, ValidationError) else "That username is taken."
        raise ExchangeError("USERNAME_TAKEN", message, field="username", status_code=409) from e


def token_for(user: User) -> str:
    """A new full-scope API key for `user` (what signup and /auth/token return)."""
    from accounts.services.api_keys import api_key_issue_login

    return api_key_issue_login(trader=user)


def faucet_cooldown(retry_after: int) -> ExchangeError:
    return ExchangeError(
        "FAUCET_COOLDOWN",
        "the paper faucet can be used once per cooldown",
        status_code=429,
        extra={"retryAfter": retry_after},
    )


def paper_faucet_credit(*, trader: User) -> dict[str, Decimal]:
    """Credit PAPER funds once per cooldown. The conditional UPDATE claims the faucet
    atomically, so concurrent calls credit once."""
    now = timezone.now()
    cooldown = timezone.timedelta(seconds=settings.PAPER_FAUCET_COOLDOWN)
    with transaction.atomic():
        claimed = (
            User.objects.filter(pk=trader.pk)
            .filter(Q(last_faucet_at__isnull=True) | Q(last_faucet_at__lte=now - cooldown))
            .update(last_faucet_at=now)
        )
        if not claimed:
            raise faucet_cooldown(paper_faucet_wait(trader=trader, now=now) or 1)
        amounts = {a: Decimal(v) for a, v in settings.PAPER_FAUCET_AMOUNTS.items()}
        keys = [(trader.pk, a, Mode.PAPER) for a in amounts]
        balances_ensure(keys)
        locked = balances_lock(keys)
        ledger_apply(
            [
                Posting(trader.pk, a, Mode.PAPER, amt, LedgerReason.FAUCET, "faucet")
                for a, amt in amounts.items()
            ],
            locked,
        )
        Balance.objects.bulk_update(locked.values(), ["total"])
        paper_points_start(trader=trader, first_only=True)
    from accounts.signals import balances_changed

    transaction.on_commit(
        lambda: balances_changed.send(sender=User, balances=list(locked.values()))
    )
    return amounts


def paper_points_start(*, trader: User, first_only: bool) -> None:
    """Make paperPoints count from the trader's latest faucet credit (written just now in
    the caller's transaction). `first_only`: only if they have never been counted."""
    latest = (
        LedgerEntry.objects.filter(trader=trader, mode=Mode.PAPER, reason=LedgerReason.FAUCET)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    users = User.objects.filter(pk=trader.pk)
    if first_only:
        users = users.filter(paper_points_from__isnull=True)
    users.update(paper_points_from=latest)
