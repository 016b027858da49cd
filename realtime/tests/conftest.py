import pytest_asyncio
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections

from accounts.services import token_for
from dexsite.asgi import application
from realtime.buffer import delta_buffer


@pytest_asyncio.fixture
async def layer():
    """The configured channel layer (Redis in CI), emptied after each test."""
    layer = get_channel_layer()
    yield layer
    await delta_buffer().clear()
    await layer.flush()
    # The worker threads of database_sync_to_async keep their connections otherwise.
    await database_sync_to_async(connections.close_all)()


def communicator(
    path: str = "/ws/",
    *,
    token: str | None = None,
    origin: str | None = None,
    headers: list | None = None,
    host: str = "localhost:8000",
) -> WebsocketCommunicator:
    hdrs = [(b"host", host.encode()), *(headers or [])]
    if token:
        hdrs.append((b"authorization", f"Token {token}".encode()))
    if origin:
        hdrs.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, path, headers=hdrs)


def token(user) -> str:
    return token_for(user)
