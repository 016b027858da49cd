"""API keys: made, listed, revoked, and looked up on every token-authenticated request.

Only the SHA-256 of a key is stored; the key is shown once, in the response that makes
it. Keys made by signup, `/auth/token` and `token_for` (source LOGIN) hold every scope,
and only the newest `API_LOGIN_KEYS_KEPT` of a trader stay valid, so that a script that
logs in on every start does not grow the table without bound. Keys a trader makes for
their bots (source USER) carry the scopes they chose and live until revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import ALL_SCOPES, ApiKey, ApiKeySource, User
from dexsite import sql
from dexsite.errors import ExchangeError, NotFound

KEY_PREFIX = "dx_"
# How stale `last_used_at` may get: touching it on every request would add a write to
# every order a bot places.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _scopes(scopes: Iterable[str]) -> str:
    wanted = set(scopes)
    if not wanted or not wanted <= ALL_SCOPES:
        raise ExchangeError(
            "INVALID_SCOPES",
            f"scopes must be a non-empty subset of {', '.join(sorted(ALL_SCOPES))}",
            field="scopes",
        )
    return " ".join(sorted(wanted))


def _create(*, trader: User, scopes: str, name: str, source: str) -> tuple[ApiKey, str]:
    # 256 random bits: unguessable, so a fast hash is the right one to store.
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        trader=trader,
        name=name,
        prefix=secret[:10],
        key_hash=key_hash(secret),
        scopes=scopes,
        source=source,
    )
    return key, secret


def api_key_create(*, trader: User, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """A key for the trader's bots. Returns the row and the key, which is never stored."""
    scope_str = _scopes(scopes)
    with transaction.atomic():
        # The trader's row lock makes the count and the insert one step, so two
        # concurrent requests cannot both pass the limit.
        User.objects.select_for_update().filter(pk=trader.pk).first()
        active = ApiKey.objects.filter(
            trader=trader, source=ApiKeySource.USER, revoked_at__isnull=True
        ).count()
        if active >= settings.API_KEYS_MAX:
            raise ExchangeError(
                "TOO_MANY_API_KEYS",
                f"at most {settings.API_KEYS_MAX} API keys; revoke one first",
                status_code=409,
            )
        return _create(trader=trader, scopes=scope_str, name=name, source=ApiKeySource.USER)


def api_key_issue_login(*, trader: User) -> str:
    """A new full-scope key, as signup and /auth/token hand out; older login keys past
    the newest `API_LOGIN_KEYS_KEPT` are revoked."""
    with transaction.atomic():
        _, secret = _create(
            trader=trader, scopes=_scopes(ALL_SCOPES), name="login", source=ApiKeySource.LOGIN
        )
        stale = list(
            ApiKey.objects.filter(trader=trader, source=ApiKeySource.LOGIN, revoked_at__isnull=True)
            .order_by("-id")
            .values_list("id", flat=True)[settings.API_LOGIN_KEYS_KEPT :]
        )
        if stale:
            ApiKey.objects.filter(pk__in=stale).update(revoked_at=timezone.now())
    return secret


def api_key_revoke(*, trader: User, key_id: int) -> ApiKey:
    key = ApiKey.objects.filter(pk=key_id, trader=trader, revoked_at__isnull=True).first()
    if key is None:
        raise NotFound("API key")
    # Conditional, so that a key revoked twice at once keeps its first revocation time.
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key


def api_key_authenticate(secret: str) -> ApiKey | None:
    """The live key for `secret`, with its trader loaded, or None."""
    if not secret or len(secret) > 200:
        return None
    # Every API request runs this: one statement written once (dexsite.sql), not a
    # queryset compiled per request.
    rows = sql.fetch(_KEY_LOOKUP, [key_hash(secret)])
    if not rows:
        return None
    key = _KEY.build(rows[0])
    key.trader = _TRADER.build(rows[0], len(_KEY))
    if not key.trader.is_active:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


_KEY = sql.Columns(ApiKey, alias="k")
_TRADER = sql.Columns(User, alias="u")
_KEY_LOOKUP = (
    f"SELECT {_KEY.sql}, {_TRADER.sql} FROM {sql.qn(ApiKey._meta.db_table)} k"  # noqa: S608
    f' JOIN {sql.qn(User._meta.db_table)} u ON u."id" = k."trader_id"'
    ' WHERE k."key_hash" = %s AND k."revoked_at" IS NULL'
)
