"""Prometheus metrics of the realtime layer, served at /metrics (per process)."""

import math
from bisect import bisect_left

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

OPEN_SOCKETS = Gauge("dex_ws_open_sockets", "Open WebSocket connections")
SUBSCRIPTIONS = Gauge("dex_ws_subscriptions", "Current subscriptions", ["kind"])
DROPPED = Counter(
    "dex_ws_messages_dropped_total",
    "Messages not sent: already covered by a snapshot, or lost to a gap",
    ["reason"],
)
REFUSED = Counter("dex_ws_refused_total", "Refused handshakes and closed sockets", ["reason"])


class SentCounter:
    """`dex_ws_messages_sent_total{type}`: one plain integer add per message. It is
    counted per socket per message on the event loop, where a `prometheus_client`
    Counter takes a lock every time; scrapes read the totals (`collect`)."""

    name = "dex_ws_messages_sent"
    documentation = "Messages sent to sockets"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def inc(self, kind: str, n: int = 1) -> None:
        counts = self.counts
        counts[kind] = counts.get(kind, 0) + n

    def value(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=["type"])
        for kind, n in list(self.counts.items()):  # one step under the GIL
            family.add_metric([kind], n)
        return [family]


class DelayHistogram:
    """`dex_ws_fanout_delay_seconds`, a histogram kept as plain per-bucket counts for
    the same reason; scrapes turn them into Prometheus's cumulative buckets."""

    name = "dex_ws_fanout_delay_seconds"
    documentation = "From the commit that caused an event to its send on a socket"

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # le: seconds <= bound
        self.sum += seconds

    def count(self) -> int:
        return sum(self.counts)

    def collect(self) -> list[HistogramMetricFamily]:
        counts, total, buckets = list(self.counts), 0, []
        for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
            total += n
            buckets.append((floatToGoString(bound), total))
        return [
            HistogramMetricFamily(
                self.name, self.documentation, buckets=buckets, sum_value=self.sum
            )
        ]


SENT = SentCounter()
FANOUT_DELAY = DelayHistogram(
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
)
REGISTRY.register(SENT)
REGISTRY.register(FANOUT_DELAY)


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
