from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey
from dexsite import schema as S
from realtime.models import WsTicket
from trading.presenters import ms

TICKET_TTL = timedelta(seconds=60)


class WsTicketApi(APIView):
    """A one-time ticket for the WebSocket handshake (`/ws/?ticket=...`)."""

    # A ticket only lets a socket read: `read` is enough.
    required_scope = "read"

    @extend_schema(request=None, responses=S.responses({201: S.WsTicketSerializer}, *S.PRIVATE))
    def post(self, request: Request) -> Response:
        now = timezone.now()
        WsTicket.objects.filter(expires_at__lte=now).delete()
        key = request.auth if isinstance(request.auth, ApiKey) else None
        session = None
        if isinstance(request.successful_authenticator, SessionAuthentication):
            session = request.session.session_key
        ticket = WsTicket.objects.create(
            user=request.user,
            api_key=key,
            session_key=session or "",
            expires_at=now + TICKET_TTL,
        )
        return Response(
            {"ticket": ticket.key, "expiresAt": ms(ticket.expires_at)},
            status=status.HTTP_201_CREATED,
        )
