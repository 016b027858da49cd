import pytest_asyncio
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections

from accounts.services import token_for
from dexsite.asgi import application
from realtime.buffer import delta_buffer
from realtime.slots import socket_slots


@pytest_asyncio.fixture
async def layer():
    """The configured channel layer (Redis in CI), emptied after each test."""
    layer = get_channel_layer()
    yield layer
    await delta_buffer().clear()
    await socket_slots().clear()
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
    client: str = "127.0.0.1",
) -> WebsocketCommunicator:
    hdrs = [(b"host", host.encode()), *(headers or [])]
    if token:
        hdrs.append((b"authorization", f"Token {token}".encode()))
    if origin:
        hdrs.append((b"origin", origin.encode()))
    comm = WebsocketCommunicator(application, path, headers=hdrs)
    # The peer's address, as a server gives it (the application has not read the scope
    # yet: it starts at the first await).
    comm.scope["client"] = [client, 50000]
    return comm


def token(user) -> str:
    return token_for(user)
