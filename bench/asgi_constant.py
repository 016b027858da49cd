"""An ASGI application that answers every HTTP request with one constant JSON body: the
serving arrangement's own floor (bench/http_floor.py). Only the benchmark uses it::

    python -m dexsite.serve -b 127.0.0.1 -p 8001 bench.asgi_constant:application
"""

from __future__ import annotations

from typing import Any

# About the size of an order as `POST /api/v1/trade` answers it.
BODY = b'{"id":1,"status":"NEW","detail":"' + b"x" * 400 + b'"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
