"""The ASGI application of `python -m dexsite.serve`: HTTP and WebSockets on one port.
In production it serves the `ws` role's WebSockets (the router sends plain HTTP to the
`http` role, dexsite/wsgi.py); in the embedded run (Procfile.dev) both.

WebSockets go to the channels consumers on the server's event loop. Plain HTTP (the
REST API, pages, admin) is served by Django's WSGI handler in a pool of HTTP_WORKERS
threads, each with its own database connection: requests run side by side, so
that orders several clients place on one book at once share a transaction (group
commit, trading/orders/place.py), and a request costs less CPU than under Django's
ASGI handler, which runs every sync view in one thread (docs/benchmarks.md).
HTTP_WORKERS=0 serves HTTP through Django's ASGI handler instead.
"""

import asyncio
import io
import os
from concurrent.futures import ThreadPoolExecutor

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dexsite.settings")
django_asgi_app = get_asgi_application()

from asgiref.sync import SyncToAsync  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from realtime.routing import websocket_urlpatterns  # noqa: E402

HTTP_WORKERS = int(os.environ.get("HTTP_WORKERS", "8"))


def http_in_threads(workers: int):
    """Django's WSGI handler in `workers` threads, as an ASGI application.

    A request is handed to a worker thread once, whole, and its response comes back
    once, whole: each hand-over between the server's loop and a thread costs a wake-up
    of each and a turn of the GIL, and a2wsgi's streaming adapter made five or more per
    request (the body read through the loop, then the response's start, each chunk and
    its end sent through it, each waited for). Our requests and responses are small
    (bodies are refused past DATA_UPLOAD_MAX_MEMORY_SIZE, by their declared length or
    as they stream in, before they are held), so nothing is lost by holding them whole
    (docs/benchmarks.md: about 15 % less CPU per order request). a2wsgi's
    `build_environ` still makes the environ.

    A worker thread knows the server's event loop as asgiref's own threads do, so that
    what a request publishes (realtime events) and `async_to_sync` run there."""
    from a2wsgi.wsgi import build_environ
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application

    wsgi = get_wsgi_application()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http")
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    def respond(environ: dict, loop: asyncio.AbstractEventLoop) -> tuple[int, list, bytes]:
        local = SyncToAsync.threadlocal
        local.main_event_loop = loop
        local.main_event_loop_pid = os.getpid()
        started: list = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list, exc_info=None):
            started[:] = [status, headers]
            return chunks.append

        result = wsgi(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()  # request_finished: the thread's database connection is tidied
        status, headers = started
        raw = [(k.strip().lower().encode("latin1"), v.strip().encode("latin1")) for k, v in headers]
        return int(status.split(" ", 1)[0]), raw, b"".join(chunks)

    async def app(scope, receive, send):
        body = bytearray()
        declared = _content_length(scope)
        # A body declared past the limit is not read at all; one that streams past it
        # (chunked, or longer than declared) is read no further: the server holds back
        # the rest (flow control), so no oversized body is ever held in memory.
        while declared is None or limit is None or declared <= limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
            if limit is not None and len(body) > limit:
                break  # past the limit: refused below, the rest unread
        environ = build_environ(scope, io.BytesIO(body))
        # The body's length is known even when it came chunked, without a Content-Length
        # (Django would read such a body as empty).
        environ["CONTENT_LENGTH"] = str(max(len(body), declared or 0))
        if limit is not None and max(len(body), declared or 0) > limit:
            # The request guard refuses it by its length (413), without reading it.
            environ["wsgi.input"] = io.BytesIO()
        loop = asyncio.get_running_loop()
        status, headers, content = await loop.run_in_executor(executor, respond, environ, loop)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    return app


def _content_length(scope: dict) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# Origin checking and authentication happen in the consumer (realtime/auth.py): the
# stock OriginValidator refuses sockets without an Origin, which bots legitimately omit.
application = ProtocolTypeRouter(
    {
        "http": http_in_threads(HTTP_WORKERS) if HTTP_WORKERS > 0 else django_asgi_app,
        "websocket": SessionMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
