"""`python -m dexsite.serve [daphne's arguments]`: daphne on uvloop's event loop, request
bodies and WebSocket messages bounded at the server, bodies left to the application.

daphne creates its event loop when it is imported; with uvloop's policy installed
first, that loop is uvloop's. Measured in docs/benchmarks.md: about a fifth less CPU
per WebSocket delivery, no application change.

Bodies are refused at the server (`requests_bounded`). Django refuses a body over
DATA_UPLOAD_MAX_MEMORY_SIZE (413), but only once the server hands it over, and daphne
reads every body whole first (to a temporary file past 100 kB), then queues all of it
for the application at once: one unauthenticated 1 GB upload held a gigabyte of the web
process. Here a body is refused with the API's 413 `PAYLOAD_TOO_LARGE` by its
Content-Length, before a byte of it is read (nor a `100 Continue` sent to invite it),
and a chunked one as soon as what has come passes the limit; then the connection
closes. WebSocket messages and frames over WS_MAX_MESSAGE_BYTES are refused by the
protocol library as their headers arrive (close 1009, message too big): daphne's
default is 1 MiB, where the consumer refuses anything over 4 KiB (`MESSAGE_TOO_LARGE`)
once it has it.

twisted, under daphne, parses every POST's Content-Type with the standard library's
e-mail header parser, to fill `request.args` from form bodies. daphne never reads
`request.args`: it hands the body to the application as it came, and Django parses
forms itself. The request class here turns that parsing off (twisted's
`parsePOSTFormSubmission`); it was a tenth of the web process's time under
`POST /api/v1/trade` (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

# Larger WebSocket messages (and frames) end the socket with 1009 as they arrive: ten
# times anything the protocol lets a client send (realtime.consumers.MAX_MESSAGE_BYTES).
WS_MAX_MESSAGE_BYTES = 16 * 1024
# After a refusal what the client still sends is read and dropped this long, so that it
# can read the 413 (a close with data unread would reset the connection under it).
LINGER_SECONDS = 2.0


def body_limit() -> int | None:
    from django.conf import settings

    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def too_large(limit: int) -> bytes:
    """The 413 of the API's shape (dexsite.middleware), as raw HTTP, closing."""
    body = json.dumps(
        {
            "error": {
                "code": "PAYLOAD_TOO_LARGE",
                "message": f"request bodies are limited to {limit} bytes",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 413 Payload Too Large\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def requests_bounded() -> None:
    """Make daphne's HTTP requests refuse bodies past the limit before they are read,
    and leave POST bodies to the application."""
    import io

    from daphne import http_protocol
    from twisted.web import http

    if getattr(http_protocol.WebRequest, "bounded", False):
        return

    class WebRequest(http_protocol.WebRequest):
        bounded = True
        refused = False
        body_seen = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

        def gotLength(self, length: int | None) -> None:
            # The headers are in, the body is not: refused now, not a byte of it is read.
            limit = body_limit()
            if length is not None and limit is not None and length > limit:
                # twisted answers `Expect: 100-continue` right after this: no invitation.
                self.requestHeaders.removeHeader(b"expect")
                self.content = io.BytesIO()
                self.refuse(limit)
                return
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:
            if self.refused:
                return
            self.body_seen += len(data)
            limit = body_limit()
            if limit is not None and self.body_seen > limit:
                self.refuse(limit)
                return
            super().handleContentChunk(data)

        def refuse(self, limit: int) -> None:
            """Answer 413 and close: what else comes on this connection is dropped
            unread, for LINGER_SECONDS at most."""
            # Imported here: daphne installs its reactor when the server starts.
            from twisted.internet import reactor

            self.refused = True
            channel = self.channel
            transport = channel.transport
            transport.write(too_large(limit))
            channel.dataReceived = lambda data: None
            half_close = getattr(transport, "loseWriteConnection", transport.loseConnection)
            half_close()
            reactor.callLater(LINGER_SECONDS, transport.abortConnection)

        def process(self) -> Any:
            # A refused body may still end in the bytes read with its last chunk: the
            # application never hears of the request.
            if self.refused:
                return None
            return super().process()

        def connectionLost(self, reason: Any) -> None:
            if self.refused:
                # daphne's would look for the application it never started.
                http.Request.connectionLost(self, reason)
                return
            super().connectionLost(reason)

    # daphne's factory looks the class up by this name for every connection.
    http_protocol.WebRequest = WebRequest


def websockets_refused_with_a_close() -> None:
    """Make a socket refused by the protocol library (a message past the limit, a
    protocol error) end with a close frame carrying the reason's code (1009: too big),
    where autobahn's default is to drop the connection, which a client sees as 1006,
    abnormal closure, with no reason. Imports daphne's server, which installs the
    reactor: after uvloop's policy."""
    from daphne import server

    if getattr(server.WebSocketFactory, "closes_on_failure", False):
        return

    class WebSocketFactory(server.WebSocketFactory):
        closes_on_failure = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.setProtocolOptions(failByDrop=False)

    server.WebSocketFactory = WebSocketFactory


def main() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    requests_bounded()
    websockets_refused_with_a_close()
    from daphne.cli import CommandLineInterface

    args = sys.argv[1:]
    for option in ("--websocket-max-message-size", "--websocket-max-frame-size"):
        if not any(a == option or a.startswith(option + "=") for a in args):
            args = [option, str(WS_MAX_MESSAGE_BYTES), *args]
    sys.argv = ["daphne", *args]
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
