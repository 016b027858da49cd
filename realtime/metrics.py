"""Prometheus metrics of the realtime layer, served at /metrics (per process)."""

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

OPEN_SOCKETS = Gauge("dex_ws_open_sockets", "Open WebSocket connections")
SUBSCRIPTIONS = Gauge("dex_ws_subscriptions", "Current subscriptions", ["kind"])
SENT = Counter("dex_ws_messages_sent_total", "Messages sent to sockets", ["type"])
DROPPED = Counter(
    "dex_ws_messages_dropped_total",
    "Messages not sent: already covered by a snapshot, or lost to a gap",
    ["reason"],
)
REFUSED = Counter("dex_ws_refused_total", "Refused handshakes and closed sockets", ["reason"])
FANOUT_DELAY = Histogram(
    "dex_ws_fanout_delay_seconds",
    "From the commit that caused an event to its send on a socket",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


_sent_children: dict[str, object] = {}


def sent(kind: str):
    """The SENT counter of one message type, resolved once: `labels()` costs more than
    the increment on a path run per socket per message."""
    child = _sent_children.get(kind)
    if child is None:
        child = _sent_children[kind] = SENT.labels(type=kind)
    return child


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
