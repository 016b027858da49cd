"""The ASGI application of the web role: HTTP and WebSockets on one port.

WebSockets go to the channels consumers on the server's event loop. Plain HTTP (the
REST API, pages, admin) is served by Django's WSGI handler in a pool of HTTP_WORKERS
threads (a2wsgi), each with its own database connection: requests run side by side, so
that orders several clients place on one book at once share a transaction (group
commit, trading/services/orders.py), and a request costs less CPU than under Django's
ASGI handler, which runs every sync view in one thread (docs/benchmarks.md).
HTTP_WORKERS=0 serves HTTP through Django's ASGI handler instead.
"""

import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dexsite.settings")
django_asgi_app = get_asgi_application()

from asgiref.sync import SyncToAsync  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from realtime.routing import websocket_urlpatterns  # noqa: E402

HTTP_WORKERS = int(os.environ.get("HTTP_WORKERS", "8"))


def http_in_threads(workers: int):
    """Django's WSGI handler in `workers` threads, as an ASGI application. A worker
    thread knows the server's event loop as asgiref's own threads do, so that what a
    request publishes (realtime events) and `async_to_sync` run there."""
    from a2wsgi import WSGIMiddleware
    from django.core.wsgi import get_wsgi_application

    wsgi = get_wsgi_application()
    loop_of_server: list[asyncio.AbstractEventLoop] = []

    def in_server(environ, start_response):
        local = SyncToAsync.threadlocal
        local.main_event_loop = loop_of_server[0]
        local.main_event_loop_pid = os.getpid()
        return wsgi(environ, start_response)

    pool = WSGIMiddleware(in_server, workers=workers)

    async def app(scope, receive, send):
        if not loop_of_server:
            loop_of_server.append(asyncio.get_running_loop())
        await pool(scope, receive, send)

    return app


# Origin checking and authentication happen in the consumer (realtime/auth.py): the
# stock OriginValidator refuses sockets without an Origin, which bots legitimately omit.
application = ProtocolTypeRouter(
    {
        "http": http_in_threads(HTTP_WORKERS) if HTTP_WORKERS > 0 else django_asgi_app,
        "websocket": SessionMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
