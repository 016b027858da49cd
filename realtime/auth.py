"""Who is on the other end of a WebSocket, and whether to let them in at all.

- Browsers: the session cookie, accepted only from an allowed Origin (a foreign page
  could otherwise open a socket with the victim's cookie: cross-site WebSocket hijacking).
  As Django's CSRF check has it for forms: the site's own origin (the scheme, host and
  port the socket was opened on) or one of CSRF_TRUSTED_ORIGINS.
- Bots: an `Authorization: Token …` header on the handshake, or a one-time `ticket`
  query parameter. Bots send no Origin; a socket without Origin is accepted only when no
  cookie authenticates it.

A socket outlives its handshake, so the credential it came with is watched: a logout
or a deleted session publishes `auth.revoke` to the socket's revoke group at once, and
the consumer re-checks the credential (session, API key, active user) before private
deliveries at most every REVALIDATE_SECONDS, which also catches revoked keys and
expired sessions. A ticket is worth no more than what asked for it: one asked for with
an API key is watched as the key is, one asked for by a browser session as the session
is (its logout also voids the session's unused tickets).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

from channels.auth import get_user
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user as session_user
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from django.utils import timezone
from django.utils.http import is_same_domain

from realtime.models import WsTicket


def header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def origin_allowed(origin: str, scope) -> bool:
    """Whether a page of `origin` may open this socket: the site's own origin (the
    socket's scheme, its Host header, a host of ALLOWED_HOSTS) or a trusted one
    (CSRF_TRUSTED_ORIGINS, exact or `https://*.example.com`)."""
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if origin == trusted:
            return True
        pattern = urlparse(trusted)
        if "*" in pattern.netloc and pattern.scheme == parsed.scheme:
            domain = pattern.netloc[pattern.netloc.index("*") + 1 :]
            if is_same_domain(parsed.netloc, domain):
                return True
    host = header(scope, b"host")
    if not host or not validate_host(split_domain_port(host)[0], settings.ALLOWED_HOSTS):
        return False
    return origin == f"{page_scheme(scope)}://{host}"


def page_scheme(scope) -> str:
    """The scheme of a page on this socket's origin: https behind a TLS proxy that says
    so (SECURE_PROXY_SSL_HEADER) or on a wss socket, else http."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure = proxy
        said = header(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode())
        if said is not None:
            return "https" if said.split(",")[0].strip() == secure else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


@database_sync_to_async
def api_key_for_token(key: str):
    from accounts.models import ApiKeyScope
    from accounts.services.api_keys import api_key_authenticate

    # A live API key of an active trader; streams are reads, so it needs `read`.
    api_key = api_key_authenticate(key)
    if api_key is None or ApiKeyScope.READ not in api_key.scope_set:
        return None
    return api_key


@database_sync_to_async
def user_for_ticket(key: str):
    """(the ticket's user, the API key or the session key that asked for it, else None
    each), or None: unknown, used, expired, its user inactive, its key revoked since
    (or without `read`), or its session ended."""
    from accounts.models import ApiKeyScope

    # Deleting the row is the claim: of two sockets presenting one ticket, one wins.
    ticket = WsTicket.objects.select_related("user", "api_key").filter(key=key).first()
    if ticket is None:
        return None
    claimed, _ = WsTicket.objects.filter(pk=ticket.pk, expires_at__gt=timezone.now()).delete()
    if not claimed or not ticket.user.is_active:
        return None
    api_key = ticket.api_key
    if api_key is not None and (
        api_key.revoked_at is not None or ApiKeyScope.READ not in api_key.scope_set
    ):
        return None
    session_key = ticket.session_key or None
    if session_key is not None and not _session_holds(session_key, ticket.user):
        return None
    return ticket.user, api_key.pk if api_key is not None else None, session_key


class Refused(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a socket is, and by which credential: `via` is session/token/ticket/anonymous."""

    user: object
    via: str
    session_key: str | None = None
    api_key_id: int | None = None


async def identify(scope) -> Identity:
    """The identity of a handshake, or raise Refused."""
    origin = header(scope, b"origin")
    if origin is not None and not origin_allowed(origin, scope):
        raise Refused("foreign origin")
    auth = header(scope, b"authorization")
    if auth:
        kind, _, key = auth.partition(" ")
        if kind.lower() != "token" or not key:
            raise Refused("bad authorization header")
        api_key = await api_key_for_token(key.strip())
        if api_key is None:
            raise Refused("bad token")
        return Identity(api_key.trader, "token", api_key_id=api_key.pk)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "ticket" in query:
        found = await user_for_ticket(query["ticket"][0])
        if found is None:
            raise Refused("bad or used ticket")
        user, api_key_id, session_key = found
        # A ticket is watched as what asked for it is (`still_valid`, `revoke_groups`):
        # an API key, or a browser session, whose logout ends the socket at once.
        return Identity(user, "ticket", session_key=session_key, api_key_id=api_key_id)
    if "session" in scope:
        user = await get_user(scope)
        if user.is_authenticated:
            if origin is None:
                raise Refused("a cookie-authenticated socket must send an allowed Origin")
            return Identity(user, "session", session_key=scope["session"].session_key)
    return Identity(AnonymousUser(), "anonymous")


# -- revocation ---------------------------------------------------------------------------

REVOKE = "auth.revoke"


def session_group(session_key: str) -> str:
    # A digest: session keys are credentials and stay out of the channel layer.
    return "revoke.s." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def revoke_groups(identity: Identity) -> list[str]:
    """The groups whose `auth.revoke` ends a socket of this identity: a session's (its
    logout or deletion). A revoked API key is found by the re-check instead."""
    return [session_group(identity.session_key)] if identity.session_key else []


def revoke(groups: list[str]) -> None:
    """Close the sockets of these groups once the current transaction commits."""
    from realtime.broadcast import publish

    events = [{"type": REVOKE, "channel": g} for g in groups]
    transaction.on_commit(lambda: publish(events))


def session_ended(session_key: str) -> None:
    """A browser session has ended: its unused tickets are void, and the sockets it
    opened (with its cookie or its tickets) close once the transaction commits."""
    WsTicket.objects.filter(session_key=session_key).delete()
    revoke([session_group(session_key)])


@receiver(user_logged_out)
def on_logged_out(sender, request=None, **kwargs) -> None:
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if key:
        session_ended(key)


@receiver(post_delete, sender=Session)
def on_session_deleted(sender, instance: Session, **kwargs) -> None:
    session_ended(instance.session_key)


def _session_holds(session_key: str, user) -> bool:
    """Whether the session is current and still signs in `user`, active."""
    engine = import_module(settings.SESSION_ENGINE)
    request = SimpleNamespace(session=engine.SessionStore(session_key))
    current = session_user(request)
    return current.is_authenticated and current.pk == user.pk and current.is_active


def _still_valid(identity: Identity) -> bool:
    from accounts.models import ApiKey, ApiKeyScope, User

    user = identity.user
    if identity.session_key:
        return _session_holds(identity.session_key, user)
    if identity.api_key_id is not None:
        key = (
            ApiKey.objects.filter(
                pk=identity.api_key_id, revoked_at__isnull=True, trader__is_active=True
            )
            .only("scopes")
            .first()
        )
        return key is not None and ApiKeyScope.READ in key.scope_set
    return User.objects.filter(pk=user.pk, is_active=True).exists()


still_valid = database_sync_to_async(_still_valid)
