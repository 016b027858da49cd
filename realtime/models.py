import secrets

from django.conf import settings
from django.db import models


def new_ticket() -> str:
    return secrets.token_urlsafe(32)


class WsTicket(models.Model):
    """A one-time credential for a WebSocket handshake (60 s, single use), so that an
    API token never travels in a URL."""

    key = models.CharField(max_length=64, unique=True, default=new_ticket)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    # The API key that asked for it, if one did: the ticket is worth no more than the
    # key, so a key revoked before the handshake refuses it, and the socket after.
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # The browser session that asked for it, if one did: the ticket is worth no more
    # than the session. Its logout deletes the session's unused tickets and closes the
    # sockets they opened; an expired session's ticket is refused. (The session's own
    # key: the sockets re-check the session by it, as cookie sockets do. A ticket row
    # lives 60 s at most and is deleted when used.)
    session_key = models.CharField(max_length=40, blank=True, default="", db_index=True)
    expires_at = models.DateTimeField()
