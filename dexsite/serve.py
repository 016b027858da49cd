"""`python -m dexsite.serve [daphne's arguments]`: daphne on uvloop's event loop, its
requests' bodies left to the application.

daphne creates its event loop when it is imported; with uvloop's policy installed
first, that loop is uvloop's. Measured in docs/benchmarks.md: about a fifth less CPU
per WebSocket delivery, no application change.

twisted, under daphne, parses every POST's Content-Type with the standard library's
e-mail header parser, to fill `request.args` from form bodies. daphne never reads
`request.args`: it hands the body to the application as it came, and Django parses
forms itself. `bodies_unparsed` turns that parsing off (twisted's
`parsePOSTFormSubmission`); it was a tenth of the web process's time under
`POST /api/v1/trade` (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def bodies_unparsed() -> None:
    """Make daphne's HTTP requests leave POST bodies to the application."""
    from daphne import http_protocol

    if getattr(http_protocol.WebRequest, "bodies_unparsed", False):
        return

    class WebRequest(http_protocol.WebRequest):
        bodies_unparsed = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

    # daphne's factory looks the class up by this name for every connection.
    http_protocol.WebRequest = WebRequest


def main() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    bodies_unparsed()
    from daphne.cli import CommandLineInterface

    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
