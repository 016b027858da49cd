"""Who is on the other end of a WebSocket, and whether to let them in at all.

- Browsers: the session cookie, accepted only from an allowed Origin (a foreign page
  could otherwise open a socket with the victim's cookie: cross-site WebSocket hijacking).
- Bots: an `Authorization: Token …` header on the handshake, or a one-time `ticket`
  query parameter. Bots send no Origin; a socket without Origin is accepted only when no
  cookie authenticates it.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from channels.auth import get_user
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import validate_host
from django.utils import timezone

from realtime.models import WsTicket


def header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def origin_allowed(origin: str) -> bool:
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    return validate_host(parsed.hostname, settings.ALLOWED_HOSTS)


@database_sync_to_async
def user_for_token(key: str):
    from accounts.models import ApiKeyScope
    from accounts.services.api_keys import api_key_authenticate

    # A live API key of an active trader; streams are reads, so it needs `read`.
    api_key = api_key_authenticate(key)
    if api_key is None or ApiKeyScope.READ not in api_key.scope_set:
        return None
    return api_key.trader


@database_sync_to_async
def user_for_ticket(key: str):
    # Deleting the row is the claim: of two sockets presenting one ticket, one wins.
    ticket = WsTicket.objects.select_related("user").filter(key=key).first()
    if ticket is None:
        return None
    claimed, _ = WsTicket.objects.filter(pk=ticket.pk, expires_at__gt=timezone.now()).delete()
    if not claimed or not ticket.user.is_active:
        return None
    return ticket.user


class Refused(Exception):
    pass


async def authenticate(scope) -> tuple[object, str]:
    """(user, how) for a handshake, or raise Refused. `how` is session/token/ticket/anonymous."""
    origin = header(scope, b"origin")
    if origin is not None and not origin_allowed(origin):
        raise Refused("foreign origin")
    auth = header(scope, b"authorization")
    if auth:
        kind, _, key = auth.partition(" ")
        if kind.lower() != "token" or not key:
            raise Refused("bad authorization header")
        user = await user_for_token(key.strip())
        if user is None:
            raise Refused("bad token")
        return user, "token"
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "ticket" in query:
        user = await user_for_ticket(query["ticket"][0])
        if user is None:
            raise Refused("bad or used ticket")
        return user, "ticket"
    if "session" in scope:
        user = await get_user(scope)
        if user.is_authenticated:
            if origin is None:
                raise Refused("a cookie-authenticated socket must send an allowed Origin")
            return user, "session"
    return AnonymousUser(), "anonymous"
