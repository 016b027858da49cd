from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from realtime.consumers import ExchangeConsumer


class UnknownPath(AsyncWebsocketConsumer):
    """Any other path: the handshake is refused (403), as a page that is not there."""

    async def connect(self) -> None:
        await self.close()


websocket_urlpatterns = [
    path("ws/", ExchangeConsumer.as_asgi()),
    re_path(r"", UnknownPath.as_asgi()),
]
