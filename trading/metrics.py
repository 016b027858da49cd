"""Prometheus metrics of the risk engine, in the process's default registry: served at
/metrics by a web process, and by the clock on its own port when it is given one
(`runclock --metrics-port`, or CLOCK_METRICS_PORT). Imported by the app's `ready()`, so
that every process registers them."""

import logging

from django.core.exceptions import SynchronousOnlyOperation
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

# Labelled by the error's code (an ExchangeError) or its class: a bounded set.
LIQUIDATION_FAILURES = Counter(
    "dex_liquidation_failures_total",
    "Accounts whose liquidation raised and was rolled back (retried next sweep)",
    ["error"],
)
EXPIRY_FAILURES = Counter(
    "dex_expiry_failures_total",
    "Markets whose settlement at expiry raised and was rolled back (retried next run)",
    ["error"],
)

# Where each depth read was answered from (trading/depth.py): `snapshot` (made already,
# at that seq), `engine` (this process's copy of the book) or `database`.
DEPTH_READS = Counter("dex_depth_reads_total", "Order book depth reads by source", ["source"])


def error_label(e: BaseException) -> str:
    return getattr(e, "code", None) or type(e).__name__


class IndexAge:
    """`dex_index_age_seconds{underlying}`: how long ago each index was last set, read
    from the database at each scrape, so that every process's /metrics tells it the
    same way whoever fed it (the clock's feeds, `set_index_price`). Past
    INDEX_STALE_SECONDS (120 s) funding and liquidations of its markets pause: alert
    well before."""

    name = "dex_index_age_seconds"
    documentation = "Seconds since the index of an underlying was last set"

    def describe(self) -> list[GaugeMetricFamily]:
        # Named without a query: registering asks, and that happens at import.
        return [GaugeMetricFamily(self.name, self.documentation, labels=["underlying"])]

    def collect(self) -> list[GaugeMetricFamily]:
        from trading.models import IndexPrice

        family = GaugeMetricFamily(self.name, self.documentation, labels=["underlying"])
        now = timezone.now()
        try:
            ages = list(IndexPrice.objects.values_list("underlying", "updated_at"))
        except SynchronousOnlyOperation:
            return []  # scraped on an event loop (not /metrics, a sync view): left out
        except DatabaseError:
            log.exception("index ages not read")
            return []  # the rest of the scrape goes on
        for underlying, updated_at in sorted(ages):
            family.add_metric([underlying], (now - updated_at).total_seconds())
        return [family]


REGISTRY.register(IndexAge())
