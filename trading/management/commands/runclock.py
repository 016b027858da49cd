"""The clock: index and mark prices, tickers, funding, liquidations and expiries, each
on its schedule, in one long-running process. Safe to run twice: funding and
settlement are claimed by unique rows, liquidations under row locks."""

import logging
import os
import signal
import time
from collections.abc import Callable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections
from django.utils import timezone

log = logging.getLogger("clock")

NO_FEED = (
    "no index feed: INDEX_FEEDS is empty (its default wherever DATABASE_URL is set), so "
    "every index would go stale {stale} s (INDEX_STALE_SECONDS) after it was last set, "
    "and funding and liquidations of its markets would pause without a word. Set "
    "INDEX_FEEDS to the oracle feed classes, comma separated "
    "(trading.feeds.RandomWalkFeed: the demo's random walk), or INDEX_MANUAL=true where "
    "the index is set by hand with `manage.py set_index_price`."
)


# The loop's turn, and how often it sweeps for crossed triggers: a conditional order
# fires within about this long of the price crossing it (one indexed statement a sweep).
TICK_SECONDS = 0.025
TRIGGER_SWEEP_SECONDS = 0.05


def feeds_check() -> str:
    """What feeds the index, or CommandError where nothing would."""
    from trading.feeds import configured_feeds

    feeds = configured_feeds()  # each feed class imported and made: a typo fails here
    if feeds:
        return "index feeds: " + ", ".join(f.name for f in feeds)
    if settings.INDEX_MANUAL:
        return "no index feed: the index is set by hand (INDEX_MANUAL)"
    raise CommandError(NO_FEED.format(stale=settings.INDEX_STALE_SECONDS))


class Command(BaseCommand):
    help = "Run the risk clock (prices, funding, liquidations, expiries)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run every job once and exit")
        parser.add_argument(
            "--check",
            action="store_true",
            help="check that something feeds the index (INDEX_FEEDS or INDEX_MANUAL) and exit",
        )
        parser.add_argument("--duration", type=float, default=0, help="stop after N seconds")
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=int(os.environ.get("CLOCK_METRICS_PORT") or 0),
            help="serve this process's Prometheus metrics (liquidation and expiry "
            "failures) on this port; 0, the default: not served",
        )

    def handle(
        self,
        *args,
        once: bool = False,
        check: bool = False,
        duration: float = 0,
        metrics_port: int = 0,
        **options,
    ) -> None:
        from trading import matcher
        from trading.orders import conditional
        from trading.services import books, expiry, funding, liquidation, prices
        from trading.services.series import series_roll

        # Refused before anything runs: a clock without a feed would seem to work.
        feeding = feeds_check()
        if check:
            self.stdout.write(feeding)
            return
        logging.basicConfig(level=logging.INFO, format="%(asctime)s clock %(message)s")
        log.info(feeding)
        if metrics_port:
            # The clock's counters live in this process: a web process's /metrics does
            # not see them.
            from prometheus_client import start_http_server

            start_http_server(metrics_port)
        jobs: list[tuple[str, float, Callable[[], object]]] = [
            ("index", 1, prices.index_poll_feeds),
            ("marks", 1, prices.marks_refresh),
            # Stop and take-profit orders, against the marks just set and the last trades.
            ("triggers", TRIGGER_SWEEP_SECONDS, matcher.triggers_fire),
            ("tpsl-tidy", 1, conditional.tpsl_tidy),
            # The TP/SL attached to orders that have filled as makers since the last look.
            ("tpsl-arm", TRIGGER_SWEEP_SECONDS, conditional.orders_tpsl_arm),
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
            time.sleep(TICK_SECONDS)
        self.stdout.write(f"clock stopped at {timezone.now().isoformat()}")


def _summary(result: object) -> str:
    if isinstance(result, list | tuple):
        return ", ".join(_summary(r) for r in result) or "-"
    return str(result)
