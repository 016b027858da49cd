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
    expires_at = models.DateTimeField()
