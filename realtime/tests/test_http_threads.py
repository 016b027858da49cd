"""The web role's plain HTTP (dexsite/asgi.py): an ASGI request handed whole to Django's
WSGI handler in a worker thread, its response handed back whole. (Here, beside the
consumers: what a request publishes goes out on the loop that serves it, this test's.)"""

import json

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection

from accounts.services import token_for
from dexsite.asgi import http_in_threads
from trading.models import Order
from trading.tests.factories import MarketFactory, UserFactory, fund

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def call(app, scope_: dict, chunks: list[bytes], *, disconnect_at: int | None = None):
    """Run one request; returns (messages sent, body chunks read)."""
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        if disconnect_at is not None and read == disconnect_at:
            return {"type": "http.disconnect"}
        read += 1
        return {
            "type": "http.request",
            "body": chunks[read - 1],
            "more_body": read < len(chunks),
        }

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope_, receive, send)
    return sent, read


@database_sync_to_async
def orders_with_ids(*ids: int) -> int:
    found = Order.objects.filter(pk__in=ids) if ids else Order.objects.all()
    return found.count()


@pytest.fixture
def trader(db, monkeypatch, layer):
    # The worker threads keep their connections (CONN_MAX_AGE): here each closes its own
    # after every request, so that none is left open on the test database.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    MarketFactory()
    user = UserFactory()
    fund(user, "100000")
    return user


async def test_a_request_in_chunks_gets_the_whole_response_from_the_middleware_and_view(trader):
    app = http_in_threads(2)
    token = await database_sync_to_async(token_for)(trader)
    body = json.dumps(
        {"market": "BTC-PERP", "mode": "PAPER", "side": "BUY", "type": "LIMIT",
         "price": "60000", "qty": "0.01"}
    ).encode()  # fmt: skip
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Token {token}".encode()),
    ]
    sent, read = await call(app, scope("POST", "/api/v1/trade", headers), [body[:10], body[10:]])
    assert read == 2
    start, content = sent
    assert start["type"] == "http.response.start" and start["status"] == 201
    names = {k for k, _ in start["headers"]}
    assert b"content-type" in names and b"x-content-type-options" in names  # middleware ran
    assert content == {"type": "http.response.body", "body": content["body"]}
    order = json.loads(content["body"])
    assert order["status"] == "NEW"
    assert await orders_with_ids(order["id"]) == 1


async def test_a_body_past_the_limit_is_refused_unread_and_changes_nothing(trader):
    app = http_in_threads(2)
    token = await database_sync_to_async(token_for)(trader)
    piece = b" " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 4 + 1)
    chunks = [piece] * 10  # no content-length: sent in chunks
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", f"Token {token}".encode()),
    ]
    sent, read = await call(app, scope("POST", "/api/v1/trade", headers), chunks)
    assert read == 4  # the first chunks past the limit; the rest never read
    start, content = sent
    assert start["status"] == 413
    assert json.loads(content["body"])["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert await orders_with_ids() == 0


async def test_a_client_gone_before_its_body_ends_gets_nothing_and_changes_nothing(trader):
    app = http_in_threads(2)
    headers = [(b"content-type", b"application/json")]
    sent, _ = await call(
        app, scope("POST", "/api/v1/trade", headers), [b'{"market"', b': "BTC-PERP"}'],
        disconnect_at=1,
    )  # fmt: skip
    assert sent == []
    assert await orders_with_ids() == 0
