"""The clock: index and mark prices, tickers, funding, liquidations and expiries, each
on its schedule, in one long-running process. Safe to run twice: funding and
settlement are claimed by unique rows, liquidations under row locks."""

import logging
import os
import signal
import time
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections
from django.utils import timezone

log = logging.getLogger("clock")


class Command(BaseCommand):
    help = "Run the risk clock (prices, funding, liquidations, expiries)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run every job once and exit")
        parser.add_argument("--duration", type=float, default=0, help="stop after N seconds")
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=int(os.environ.get("CLOCK_METRICS_PORT") or 0),
            help="serve this process's Prometheus metrics (liquidation and expiry "
            "failures) on this port; 0, the default: not served",
        )

    def handle(
        self, *args, once: bool = False, duration: float = 0, metrics_port: int = 0, **options
    ) -> None:
        from trading.services import books, expiry, funding, liquidation, prices
        from trading.services.series import series_roll

        logging.basicConfig(level=logging.INFO, format="%(asctime)s clock %(message)s")
        if metrics_port:
            # The clock's counters live in this process: a web process's /metrics does
            # not see them.
            from prometheus_client import start_http_server

            start_http_server(metrics_port)
        jobs: list[tuple[str, float, Callable[[], object]]] = [
            ("index", 1, prices.index_poll_feeds),
            ("marks", 1, prices.marks_refresh),
            ("quiet-books", 2, books.books_quiet_announce),
            ("funding-sample", 60, funding.funding_sample),
            ("funding", 5, funding.funding_settle_due),
            ("liquidations", 2, liquidation.liquidations_run),
            ("expiry", 10, lambda: (expiry.settle_expired(), series_roll())),
        ]
        stop = False

        def on_signal(*_):
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        due = {name: 0.0 for name, _, _ in jobs}
        started = time.monotonic()
        while not stop:
            for name, every, job in jobs:
                if time.monotonic() < due[name]:
                    continue
                due[name] = time.monotonic() + every
                close_old_connections()
                t0 = time.perf_counter()
                try:
                    result = job()
                except Exception:
                    log.exception("job %s failed", name)
                    continue
                took = (time.perf_counter() - t0) * 1000
                if (isinstance(result, list | tuple) and any(result)) or took > 500:
                    log.info("%s: %s (%.0f ms)", name, _summary(result), took)
            if once or (duration and time.monotonic() - started > duration):
                break
            time.sleep(0.2)
        self.stdout.write(f"clock stopped at {timezone.now().isoformat()}")


def _summary(result: object) -> str:
    if isinstance(result, list | tuple):
        return ", ".join(_summary(r) for r in result) or "-"
    return str(result)
