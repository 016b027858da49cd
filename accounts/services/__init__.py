"""Writes of the accounts app: sign-up, tokens, the paper faucet. They post to the
ledger through `ledger.services`.

The other writes of the app live beside this module, each owning its transactions:
`api_keys`, `wallets`, `vault`, `paper` (the reset)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from accounts.selectors import paper_faucet_wait
from dexsite.errors import ExchangeError
from ledger.models import Balance, LedgerEntry, LedgerReason, Mode
from ledger.services import Posting, balances_ensure, balances_lock, ledger_apply
from trading.emit import Emitter


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

    events = Emitter(Mode.PAPER)
    events.paid(locked.values())
    events.send_on_commit()
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
