"""Persisted orders per second, and their latency, on PostgreSQL.

Measures the whole write path of an order (book row lock, margin check, matching,
bulk writes, commit), not just the in-memory engine (that is bench/engine.py):

* service: ``trading.orders.place.order_place`` called directly from Python by 1 or
  8 concurrent clients, on one book or on four (four BTC-PERP-style PERP markets). A
  client is a thread with its own database connection (Django connections are
  per-thread) in this one process: the engine-book cache lives in process memory, so
  several processes on one book would each rebuild the book from the database whenever
  another process moved it (``--service-procs`` adds such rows to show that cost);
* http: ``POST /api/v1/trade`` with ``Authorization: Token <key>`` against a real
  server on 127.0.0.1, 1 or 8 concurrent clients (aiohttp coroutines in this process,
  one keep-alive connection each), one book or four, under several serving
  arrangements started and stopped by the script (daphne, uvicorn, uvicorn with 2
  workers, gunicorn gthread through dexsite/wsgi.py, ...).

The flow: GTC limit orders around a fixed mid of 64,000 on a 0.5 tick, 0.001 lot grid
(1-40 lots), from 64 funded traders picked at random (so self-trade prevention is rare),
each order crossing with probability 1/2 (priced 1-10 ticks through the mid, which the
book's touch almost always is) or resting 1-10 ticks behind the mid. The measured
fraction that traded on arrival is reported.

Every run starts from the same state (orders, trades, fills, positions, ledger and
balances truncated; each trader re-funded with PAPER USDC; book seq moved to a fresh
value so that no server's cached engine book is taken as current), warms up, then
measures for a fixed duration; latency is per order as the client saw it. After each
run, every acknowledged order (service: returned; http: 2xx) is looked up in the
database by id and ``trading.invariants.check_invariants()`` runs; both are printed.
Results are medians over the repetitions.

The profile (``--profile``, on by default) runs the service path on one book with one
client: SQL statements per resting and per crossing order, wall time split between
the database round trips (queries + COMMIT) and Python, and cProfile's top functions.

Usage::

    python bench/orders.py [--quick] [--duration S] [--warmup S] [--repeat R]
        [--only service|http|profile] [--servers daphne,uvicorn,...] [--clients 1,8]
        [--books 1,4] [--service-procs] [--no-profile] [--json PATH]

The database is ``$BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/dexsite_bench): created if missing and migrated by
the script; its data is overwritten. Servers run with DEBUG off.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import io
import json
import logging
import math
import os
import platform
import pstats
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/dexsite_bench"
HOST = "127.0.0.1"
MODE = "PAPER"
MID = Decimal("64000")
TICK = Decimal("0.5")
LOT = Decimal("0.001")
MAX_LOTS = 40
MAX_OFFSET = 10  # ticks from the mid
CROSS_P = 0.5
FUNDS = Decimal("100000000")  # PAPER USDC per trader
# BTC-PERP-style grids under names no test or other tool uses (channel-layer groups are
# named after markets, and a Redis layer is shared by everything on the machine).
SYMBOLS = ["BENCH1-PERP", "BENCH2-PERP", "BENCH3-PERP", "BENCH4-PERP"]
SERVER_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "bench-only-not-secret",
    "SECURE_SSL_REDIRECT": "false",
    "LOG_LEVEL": "WARNING",
}


# Serving arrangements: argv templates ({port}); gunicorn serves dexsite/wsgi.py.
def _uvicorn(*extra: str) -> list[str]:
    return [
        "uvicorn",
        "dexsite.asgi:application",
        "--host",
        HOST,
        "--port",
        "{port}",
        "--no-access-log",
        "--lifespan",
        "off",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        *extra,
    ]


def _gunicorn(*extra: str) -> list[str]:
    return ["gunicorn", "dexsite.wsgi:application", "-b", f"{HOST}:{{port}}", *extra]


# The Procfile's web role: daphne on uvloop, HTTP in worker threads that each keep a
# database connection.
_WEB = ["python", "-m", "dexsite.serve", "-b", HOST, "-p", "{port}", "dexsite.asgi:application"]
SERVERS: dict[str, list[str]] = {
    "web": _WEB,
    # The same with a process-wide connection pool (DB_POOL_MAX), taken from per request.
    "web-pool": _WEB,
    "daphne": ["daphne", "-b", HOST, "-p", "{port}", "dexsite.asgi:application"],
    "uvicorn": _uvicorn(),
    "uvicorn-w2": _uvicorn("--workers", "2"),
    "gunicorn-gthread-1x8": _gunicorn("-k", "gthread", "-w", "1", "--threads", "8"),
    "gunicorn-gthread-2x4": _gunicorn("-k", "gthread", "-w", "2", "--threads", "4"),
    "gunicorn-sync-4": _gunicorn("-k", "sync", "-w", "4"),
}
# Environment of one arrangement beyond SERVER_ENV.
SERVER_EXTRA_ENV: dict[str, dict[str, str]] = {"web-pool": {"DB_POOL_MAX": "16"}}
DEFAULT_SERVERS = [
    "web",
    "daphne",
    "uvicorn",
    "uvicorn-w2",
    "gunicorn-gthread-1x8",
    "gunicorn-gthread-2x4",
]
QUICK_SERVERS = ["web", "gunicorn-gthread-1x8"]


def log(msg: str) -> None:
    print(msg, flush=True)


# -- database and fixtures ------------------------------------------------------------


def setup_django(db_url: str, migrate: bool = True) -> None:
    os.environ["DATABASE_URL"] = db_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "dexsite.settings"
    for k, v in SERVER_ENV.items():
        os.environ[k] = v
    ensure_database(db_url)
    import django

    django.setup()
    if not migrate:
        return
    from django.core.management import call_command

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    log(f"database {db_url}: migrated in {time.perf_counter() - t0:.1f}s")


def migrate_subprocess(db_url: str) -> None:
    env = dict(os.environ, DATABASE_URL=db_url, DJANGO_SETTINGS_MODULE="dexsite.settings")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )


def ensure_database(db_url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urllib.parse.urlparse(db_url)
    name = parts.path.lstrip("/")
    admin = urllib.parse.urlunparse(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        log(f"created database {name}")


def perp_create(symbol: str, **extra: Any) -> Any:
    """A BTC-style perpetual (0.5 tick, 0.001 lot, 20x) marked at MID, with both books;
    `extra` sets more market fields."""
    from trading.models import Book, Market

    market, _ = Market.objects.update_or_create(
        symbol=symbol,
        defaults=dict(
            kind="PERP",
            base="BTC",
            quote="USDC",
            underlying="BTC",
            tick_size=TICK,
            lot_size=LOT,
            min_notional=Decimal("10"),
            max_leverage=Decimal("20"),
            maker_fee=Decimal("0.0002"),
            taker_fee=Decimal("0.0005"),
            mark_price=MID,
            status="ACTIVE",
            **extra,
        ),
    )
    for mode in ("REAL", "PAPER"):
        Book.objects.update_or_create(market=market, mode=mode, defaults={"mark_price": MID})
    return market


@dataclass
class Fixture:
    traders: list  # User rows
    tokens: list[str]
    symbols: list[str]


def make_fixture(n_traders: int, with_tokens: bool = True) -> Fixture:
    from accounts.models import User
    from accounts.services import token_for

    for symbol in SYMBOLS:
        perp_create(symbol)
    names = [f"bench{i:03d}" for i in range(n_traders)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    new = []
    for name in names:
        if name not in existing:
            u = User(username=name)
            u.set_unusable_password()
            new.append(u)
    User.objects.bulk_create(new)
    traders = list(User.objects.filter(username__in=names).order_by("username"))
    # token_for may issue a new key and revoke older ones: call it once per run, here.
    tokens = [token_for(u) for u in traders] if with_tokens else []
    return Fixture(traders, tokens, SYMBOLS)


_reset_count = 0


def reset_data(fx: Fixture) -> None:
    """Empty the trading tables, re-fund every trader, move book seqs to a fresh value."""
    global _reset_count
    from django.db import connection, transaction

    from ledger.models import Balance, LedgerEntry, LedgerReason
    from trading.models import Book, Candle, Fill, Order, Position, Trade
    from trading.services.books import engine_cache_clear

    _reset_count += 1
    tables = ", ".join(
        m._meta.db_table for m in (Fill, Trade, Candle, Order, Position, LedgerEntry, Balance)
    )
    with transaction.atomic():
        with connection.cursor() as c:
            c.execute(f"TRUNCATE {tables} CASCADE")
        # A seq no server process can hold a cached engine book for.
        Book.objects.update(seq=_reset_count * 1_000_000_000 + os.getpid(), last_price=None)
        LedgerEntry.objects.bulk_create(
            LedgerEntry(
                trader=u,
                asset="USDC",
                mode=MODE,
                amount=FUNDS,
                reason=LedgerReason.DEPOSIT,
                ref="bench",
            )
            for u in fx.traders
        )
        Balance.objects.bulk_create(
            Balance(trader=u, asset="USDC", mode=MODE, total=FUNDS) for u in fx.traders
        )
    with connection.cursor() as c:
        c.execute(f"ANALYZE {tables}")
    engine_cache_clear()


# -- the flow -------------------------------------------------------------------------


def next_order(rng: random.Random, n_traders: int, symbols: list[str]):
    """(trader index, symbol, side, price, qty) of one GTC limit order."""
    side = "BUY" if rng.random() < 0.5 else "SELL"
    through = rng.random() < CROSS_P
    k = rng.randint(1, MAX_OFFSET)
    sign = 1 if side == "BUY" else -1
    price = MID + (sign * k if through else -sign * k) * TICK
    qty = rng.randint(1, MAX_LOTS) * LOT
    return rng.randrange(n_traders), rng.choice(symbols), side, price, qty


# -- measurement ----------------------------------------------------------------------


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)  # measured window only, s
    acked: list[int] = field(default_factory=list)  # every acknowledged order id
    traded: int = 0  # measured orders that filled on arrival
    errors: Counter = field(default_factory=Counter)
    statements: int = 0  # SQL statements sent after the warm-up (service only)
    placed: int = 0  # orders started after the warm-up (service only)
    cancelled: list[int] = field(default_factory=list)  # acknowledged cancels' orders
    not_open: int = 0  # cancels of orders that had filled


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


@dataclass
class Run:
    path: str  # service | service-proc | http
    arrangement: str
    books: int
    clients: int
    rep: int
    duration: float
    orders: int = 0
    orders_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    traded_frac: float = 0.0
    errors: dict = field(default_factory=dict)
    acked: int = 0
    in_db: int = 0
    open_orders_end: int = 0
    engine_rebuilds: int | None = None
    retries: int | None = None
    statements_per_order: float | None = None
    # CPU seconds per measured order: the exchange (service: this process; http: the
    # server's processes), its PostgreSQL backends, the HTTP load generator; and how many
    # cores everything else on the machine kept busy meanwhile (a shared machine).
    app_cpu_ms: float = 0.0
    db_cpu_ms: float = 0.0
    # PostgreSQL sessions opened per order (pg_stat_database.sessions): ~1 means a new
    # connection per request, and db_cpu_ms then misses the backends that exited.
    db_connects_per_order: float = 0.0
    client_cpu_ms: float = 0.0
    other_cores: float = 0.0
    load1: float = 0.0
    invariants: list = field(default_factory=list)


def summarize(run: Run, results: list[ClientResult]) -> None:
    lat = [x for r in results for x in r.latencies]
    run.orders = len(lat)
    run.orders_per_s = len(lat) / run.duration
    run.p50_ms = percentile(lat, 50) * 1000
    run.p99_ms = percentile(lat, 99) * 1000
    run.mean_ms = statistics.fmean(lat) * 1000 if lat else float("nan")
    run.traded_frac = sum(r.traded for r in results) / len(lat) if lat else 0.0
    errors: Counter = Counter()
    for r in results:
        errors.update(r.errors)
    run.errors = dict(errors)
    run.acked = sum(len(r.acked) for r in results)
    run.load1 = os.getloadavg()[0]


def verify(run: Run, results: list[ClientResult]) -> None:
    """Every acknowledged order is in the database; the exchange's invariants hold."""
    from trading.invariants import check_invariants
    from trading.models import OPEN_STATUSES, Order

    ids = sorted({i for r in results for i in r.acked})
    found = 0
    for i in range(0, len(ids), 5000):
        found += Order.objects.filter(pk__in=ids[i : i + 5000]).count()
    run.in_db = found
    run.open_orders_end = Order.objects.filter(status__in=OPEN_STATUSES).count()
    run.invariants = check_invariants()
    cancelled = sorted({i for r in results for i in r.cancelled})
    if cancelled:
        # An acknowledged cancel is durable.
        not_cancelled = Order.objects.filter(pk__in=cancelled).exclude(status="CANCELED")
        run.invariants += [
            f"order {i} acknowledged cancelled is not"
            for i in not_cancelled.values_list("pk", flat=True)
        ]


def report_run(run: Run) -> None:
    extra = ""
    if run.engine_rebuilds is not None:
        extra = (
            f" stmts/order={run.statements_per_order:.1f} rebuilds={run.engine_rebuilds}"
            f" retries={run.retries}"
        )
    ok = "OK" if run.in_db == run.acked and not run.invariants else "FAIL"
    log(
        f"  {run.path:<8} {run.arrangement:<22} books={run.books} clients={run.clients} "
        f"rep={run.rep}: {run.orders_per_s:6.0f} orders/s  p50={run.p50_ms:6.2f}ms "
        f"p99={run.p99_ms:6.2f}ms  traded={run.traded_frac:.0%} errors={run.errors or 0}"
        f"{extra}"
    )
    log(
        f"    cpu/order: app {run.app_cpu_ms:.2f}ms db {run.db_cpu_ms:.2f}ms"
        f" (db connections opened/order {run.db_connects_per_order:.2f})"
        + (f" client {run.client_cpu_ms:.2f}ms" if run.path == "http" else "")
        + f"; other load {run.other_cores:.2f} cores, load1 {run.load1:.1f}"
        f"; open orders at end {run.open_orders_end}"
    )
    log(
        f"    verify: acked={run.acked} in_db={run.in_db} "
        f"check_invariants()={run.invariants!r} -> {ok}"
    )
    if run.invariants:
        for p in run.invariants[:10]:
            log(f"    INVARIANT: {p}")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _pid_cpu(pid: int) -> float | None:
    """utime + stime of a process (all its threads), seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text.rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuMeter:
    """CPU used during a window by the exchange's processes, the PostgreSQL backends of
    the bench database, this process, and the rest of the machine."""

    def __init__(self, db_url: str, app_root: int | None) -> None:
        import psycopg

        parts = urllib.parse.urlparse(db_url)
        self.db = parts.path.lstrip("/")
        self.conn = psycopg.connect(
            urllib.parse.urlunparse(parts._replace(path="/postgres")), autocommit=True
        )
        self.app_root = app_root  # None: the exchange runs in this process

    def snap(self) -> dict[str, Any]:
        backends = [
            r[0]
            for r in self.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db,)
            )
        ]
        app = _tree(self.app_root) if self.app_root else []
        row = self.conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.db,)
        ).fetchone()
        return {
            "sessions": row[0] if row else 0,
            "t": time.perf_counter(),
            "self": _pid_cpu(os.getpid()) or 0.0,
            "app": {p: _pid_cpu(p) for p in app},
            "db": {p: _pid_cpu(p) for p in backends},
            "machine": _machine_busy(),
        }

    @staticmethod
    def _delta(a: dict[int, float | None], b: dict[int, float | None]) -> float:
        total = 0.0
        for pid, end in b.items():
            if end is not None:
                start = a.get(pid)
                total += end - (start or 0.0) if start is not None else end
        return total

    def apply(self, run: Run, a: dict[str, Any], b: dict[str, Any]) -> None:
        n = max(run.orders, 1)
        me = b["self"] - a["self"]
        app = self._delta(a["app"], b["app"]) if self.app_root else me
        client = me if self.app_root else 0.0
        db = self._delta(a["db"], b["db"])
        run.app_cpu_ms = app / n * 1000
        run.db_cpu_ms = db / n * 1000
        run.db_connects_per_order = (b["sessions"] - a["sessions"]) / n
        run.client_cpu_ms = client / n * 1000
        others = (b["machine"] - a["machine"]) - app - db - client
        run.other_cores = max(others, 0.0) / (b["t"] - a["t"])

    def close(self) -> None:
        self.conn.close()


def _sleep_until(t: float) -> None:
    while (left := t - time.perf_counter()) > 0:
        time.sleep(min(left, 0.5))


class _Counters(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("retrying"):
            self.retries += 1


_rebuilds = [0]


def install_service_counters() -> _Counters:
    """Count engine-book rebuilds (cache misses) and deadlock retries in this process."""
    from trading.services import books

    original = books.engine_book_build
    if not getattr(original, "_bench_counted", False):

        def counted(book):
            _rebuilds[0] += 1
            return original(book)

        counted._bench_counted = True
        books.engine_book_build = counted
    handler = _Counters()
    lg = logging.getLogger("dexsite.db")
    lg.setLevel(logging.INFO)
    lg.addHandler(handler)
    return handler


def _proc_client(db_url, n_traders, symbols, seed, ready, go, times, queue) -> None:
    """A client process (spawned): its own Django, connection and engine-book cache."""
    setup_django(db_url, migrate=False)
    fx = make_fixture(n_traders, with_tokens=False)
    counters = install_service_counters()
    from django.db import connection

    connection.ensure_connection()
    ready.put(os.getpid())
    go.wait()
    r = service_client(fx, symbols, seed, times[0], times[1])
    queue.put((asdict(r), _rebuilds[0], counters.retries))


def warm_process(fx: Fixture) -> None:
    """Import and cache everything an order touches before anything is measured."""
    from trading.orders.place import order_place

    reset_data(fx)
    rng = random.Random(0)
    for _ in range(50):
        ti, symbol, side, price, qty = next_order(rng, len(fx.traders), fx.symbols)
        order_place(
            trader=fx.traders[ti],
            market=symbol,
            mode=MODE,
            side=side,
            type="LIMIT",
            qty=qty,
            price=price,
        )


def service_client(
    fx: Fixture,
    symbols: list[str],
    seed: int,
    t_measure: float,
    t_end: float,
    place: Callable[..., tuple[dict[str, Any], bool]] | None = None,
    cancel: Callable[..., dict[str, Any]] | None = None,
    cancel_p: float = 0.0,
) -> ClientResult:
    """One client: order_place() (or `place`, which takes its arguments) in a loop on
    this thread's own DB connection. With `cancel` (`order_cancel`'s arguments), a
    request in `cancel_p` is instead a cancel of the oldest order this client left
    resting (which may have filled since: ORDER_NOT_OPEN, counted apart)."""
    from django.db import connection

    from dexsite.errors import ExchangeError
    from trading.orders.place import order_place

    order_place = place or order_place

    rng = random.Random(seed)
    out = ClientResult()
    n = len(fx.traders)
    perf = time.perf_counter
    resting: collections.deque[tuple[int, int]] = collections.deque()  # (order id, trader)

    def cancel_oldest() -> None:
        order_id, ti = resting.popleft()
        t0 = perf()
        try:
            cancel(trader=fx.traders[ti], order_id=order_id)
        except ExchangeError as e:
            if e.code != "ORDER_NOT_OPEN":
                out.errors[e.code] += 1
                return
            out.not_open += 1
        else:
            out.cancelled.append(order_id)
        t1 = perf()
        if t_measure <= t1 <= t_end:
            out.latencies.append(t1 - t0)

    def count(execute, sql, params, many, context):
        if perf() >= t_measure:
            out.statements += 1
        return execute(sql, params, many, context)

    try:
        with connection.execute_wrapper(count):
            while perf() < t_end:
                if cancel is not None and resting and rng.random() < cancel_p:
                    try:
                        cancel_oldest()
                    except Exception as e:
                        out.errors[type(e).__name__] += 1
                    continue
                ti, symbol, side, price, qty = next_order(rng, n, symbols)
                t0 = perf()
                try:
                    body, _ = order_place(
                        trader=fx.traders[ti],
                        market=symbol,
                        mode=MODE,
                        side=side,
                        type="LIMIT",
                        qty=qty,
                        price=price,
                    )
                except ExchangeError as e:
                    out.errors[e.code] += 1
                    continue
                except Exception as e:
                    out.errors[type(e).__name__] += 1
                    continue
                t1 = perf()
                out.acked.append(body["id"])
                out.placed += t0 >= t_measure
                if body["status"] in ("NEW", "PARTIALLY_FILLED"):
                    resting.append((body["id"], ti))
                if t_measure <= t1 <= t_end:
                    out.latencies.append(t1 - t0)
                    out.traded += body["filledQty"] != "0"
    finally:
        connection.close()
    return out


_RECEIVERS: dict[Any, list] = {}


def set_broadcast(on: bool) -> None:
    """Connect or disconnect every receiver of the order path's domain events (the
    realtime app's broadcasters), in this process only."""
    from ledger.signals import balances_changed
    from trading import signals

    sigs = [
        signals.book_changed,
        signals.trade_executed,
        signals.order_updated,
        signals.fill_created,
        signals.position_updated,
        balances_changed,
    ]
    for sig in sigs:
        if sig not in _RECEIVERS:
            _RECEIVERS[sig] = list(sig.receivers)
        with sig.lock:
            sig.receivers = list(_RECEIVERS[sig]) if on else []
            sig.sender_receivers_cache.clear()


def run_service(
    fx: Fixture,
    books: int,
    clients: int,
    rep: int,
    warmup: float,
    duration: float,
    procs: bool,
    db_url: str,
    broadcast: bool = True,
) -> Run:
    from django.db import connections

    reset_data(fx)
    set_broadcast(broadcast)
    meter = CpuMeter(db_url, os.getpid() if procs else None)
    counters = install_service_counters()
    _rebuilds[0] = 0
    symbols = fx.symbols[:books]
    seed0 = 1000 * rep + 10 * books + clients
    start = time.perf_counter() + 0.2
    t_measure, t_end = start + warmup, start + warmup + duration
    results: list[ClientResult] = []
    if not procs:
        slots: list[ClientResult | None] = [None] * clients

        def target(i: int) -> None:
            slots[i] = service_client(fx, symbols, seed0 + i, t_measure, t_end)

        threads = [threading.Thread(target=target, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        _sleep_until(t_measure)
        snap_a = meter.snap()
        _sleep_until(t_end)
        snap_b = meter.snap()
        for t in threads:
            t.join()
        results = [r for r in slots if r is not None]
        rebuilds, retries = _rebuilds[0], counters.retries
    else:
        import multiprocessing as mp

        # spawn, not fork: a forked child inherits this process's threads' state (the
        # realtime receivers' async_to_sync executors) and can hang in it.
        ctx = mp.get_context("spawn")
        ready, go, queue = ctx.Queue(), ctx.Event(), ctx.Queue()
        times = ctx.Array("d", 2)
        connections.close_all()
        ps = [
            ctx.Process(
                target=_proc_client,
                args=(db_url, len(fx.traders), symbols, seed0 + i, ready, go, times, queue),
            )
            for i in range(clients)
        ]
        for p in ps:
            p.start()
        for _ in ps:
            ready.get(timeout=120)  # every child has Django loaded and connected
        start = time.perf_counter() + 0.2
        t_measure, t_end = start + warmup, start + warmup + duration
        times[0], times[1] = t_measure, t_end
        go.set()
        _sleep_until(t_measure)
        snap_a = meter.snap()
        _sleep_until(t_end)
        snap_b = meter.snap()
        rebuilds = retries = 0
        for _ in ps:
            d, rb, rt = queue.get()
            results.append(ClientResult(**d))
            rebuilds += rb
            retries += rt
        for p in ps:
            p.join()
    logging.getLogger("dexsite.db").removeHandler(counters)
    set_broadcast(True)
    arrangement = "processes" if procs else "threads"
    run = Run(
        "service",
        arrangement if broadcast else f"{arrangement}, no realtime",
        books,
        clients,
        rep,
        duration,
        engine_rebuilds=rebuilds,
        retries=retries,
    )
    summarize(run, results)
    meter.apply(run, snap_a, snap_b)
    meter.close()
    placed = sum(r.placed for r in results)
    run.statements_per_order = sum(r.statements for r in results) / max(placed, 1)
    verify(run, results)
    report_run(run)
    return run


# -- HTTP -----------------------------------------------------------------------------


# Ports handed out by this process: never twice, though each is closed until its server
# binds it.
_ports_given: set[int] = set()
# Not the module's generator, which runs may seed alike in several processes at once.
_ports_random = random.SystemRandom()


def free_port() -> int:
    """A port for a server to listen on that nothing holds now. Taken below the kernel's
    range for outgoing connections: a port from that range (what binding to port 0
    gives) can be taken, between this look and the server's bind, by any client socket
    opened meanwhile (a database connection, another test's request); and never one
    this process gave before (several servers are started at once)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(500):
        port = _ports_random.randint(min(10000, low - 1000), low - 1)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def process_group_stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group `proc` leads, SIGKILL it after 15 s; nothing if the
    process has exited."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Server:
    def __init__(self, name: str, db_url: str, out_dir: Path) -> None:
        self.name = name
        self.db_url = db_url
        self.port = free_port()
        argv = [a.format(port=self.port) for a in SERVERS[name]]
        argv[0] = str(Path(sys.executable).parent / argv[0])
        env = dict(os.environ, DATABASE_URL=db_url, DJANGO_SETTINGS_MODULE="dexsite.settings")
        env.update(SERVER_ENV)
        env.update(SERVER_EXTRA_ENV.get(name, {}))
        self.log_path = out_dir / f"server-{name}.log"
        self.log_file = self.log_path.open("w")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one below
        )
        self.argv = argv

    def wait_ready(self, timeout: float = 60) -> None:
        url = f"http://{HOST}:{self.port}/api/v1/markets?mode=PAPER"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        process_group_stop(self.proc)
        self.log_file.close()


async def _http_clients(
    port: int | list[int],
    fx: Fixture,
    symbols: list[str],
    clients: int,
    seed0: int,
    t_measure: float,
    t_end: float,
    meter: CpuMeter,
    snaps: list,
) -> list[ClientResult]:
    import aiohttp

    # Several servers: client i sends to the (i mod n)th.
    urls = [f"http://{HOST}:{p}/api/v1/trade" for p in (port if isinstance(port, list) else [port])]
    headers = [
        {"Authorization": f"Token {tok}", "Content-Type": "application/json"} for tok in fx.tokens
    ]
    n = len(fx.traders)
    perf = time.perf_counter
    conn = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def client(i: int) -> ClientResult:
            rng = random.Random(seed0 + i)
            out = ClientResult()
            while perf() < t_end:
                ti, symbol, side, price, qty = next_order(rng, n, symbols)
                body = json.dumps(
                    {
                        "market": symbol,
                        "mode": MODE,
                        "side": side,
                        "type": "LIMIT",
                        "price": str(price),
                        "qty": str(qty),
                        "timeInForce": "GTC",
                    }
                ).encode()
                t0 = perf()
                try:
                    async with session.post(
                        urls[i % len(urls)], data=body, headers=headers[ti]
                    ) as resp:
                        status = resp.status
                        payload = await resp.read()
                except aiohttp.ClientError as e:
                    out.errors[type(e).__name__] += 1
                    continue
                t1 = perf()
                if not 200 <= status < 300:
                    try:
                        code = json.loads(payload)["error"]["code"]
                    except Exception:
                        code = ""
                    out.errors[f"{status} {code}".strip()] += 1
                    continue
                order = json.loads(payload)
                out.acked.append(order["id"])
                if t_measure <= t1 <= t_end:
                    out.latencies.append(t1 - t0)
                    out.traded += order["filledQty"] != "0"
            return out

        return await gathered([client(i) for i in range(clients)], meter, snaps, t_measure, t_end)


async def gathered(
    clients: list[Awaitable[ClientResult]],
    meter: CpuMeter,
    snaps: list,
    t_measure: float,
    t_end: float,
) -> list[ClientResult]:
    """The clients' results, run together; the meter is read into `snaps` when the
    measured window opens and when it closes."""

    async def sample() -> None:
        for t in (t_measure, t_end):
            await asyncio.sleep(max(0.0, t - time.perf_counter()))
            snaps.append(await asyncio.to_thread(meter.snap))

    sampler = asyncio.create_task(sample())
    results = list(await asyncio.gather(*clients))
    await sampler
    return results


def run_http(
    server: Server, fx: Fixture, books: int, clients: int, rep: int, warmup: float, duration: float
) -> Run:
    reset_data(fx)
    symbols = fx.symbols[:books]
    seed0 = 1000 * rep + 10 * books + clients
    start = time.perf_counter() + 0.1
    t_measure, t_end = start + warmup, start + warmup + duration
    try:
        import uvloop

        runner: Callable = uvloop.run
    except ImportError:
        runner = asyncio.run
    meter = CpuMeter(server.db_url, server.proc.pid)
    snaps: list = []
    results = runner(
        _http_clients(server.port, fx, symbols, clients, seed0, t_measure, t_end, meter, snaps)
    )
    run = Run("http", server.name, books, clients, rep, duration)
    summarize(run, results)
    meter.apply(run, *snaps)
    meter.close()
    verify(run, results)
    report_run(run)
    return run


# -- profile --------------------------------------------------------------------------


def one_book_groups(fx: Fixture, n: int, group: int, seed: int) -> None:
    """Place n orders of the flow on one book, `group` to a transaction: what a group
    commit's leader (or a matcher's batch) runs for `group` waiting clients, without the
    threads, so that the same orders go into the same transactions on every run."""
    from trading.orders.place import _place_together
    from trading.orders.request import OrderRequest

    rng = random.Random(seed)
    symbol = fx.symbols[0]
    for start in range(0, n, group):
        requests = []
        for _ in range(min(group, n - start)):
            ti, _, side, price, qty = next_order(rng, len(fx.traders), [symbol])
            requests.append(
                OrderRequest(fx.traders[ti], side, "LIMIT", qty, price, "GTC", False, None, "USER")
            )
        for outcome in _place_together(symbol, MODE, requests):
            if isinstance(outcome, BaseException):
                raise outcome


def _one_book_orders(fx: Fixture, n: int, seed: int, each: Callable[[Callable], Any] | None):
    """Place n orders on one book from one client; `each(call)` wraps every order."""
    from trading.orders.place import order_place

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ti, symbol, side, price, qty = next_order(rng, len(fx.traders), fx.symbols[:1])

        def call(ti=ti, symbol=symbol, side=side, price=price, qty=qty):
            return order_place(
                trader=fx.traders[ti],
                market=symbol,
                mode=MODE,
                side=side,
                type="LIMIT",
                qty=qty,
                price=price,
            )[0]

        out.append(each(call) if each else call())
    return out


def _shape(sql: str) -> str:
    """A statement reduced to its verb and table, e.g. 'SELECT accounts_balance FOR UPDATE'."""
    s = " ".join(sql.split())
    head = s.split(" ", 1)[0].upper()
    words = s.replace('"', "").split()
    if head == "INSERT":
        shape = f"INSERT {words[2]}" + (" ON CONFLICT" if "ON CONFLICT" in s else "")
    elif head == "UPDATE":
        shape = f"UPDATE {words[1]}" + (" (CASE per row)" if "CASE WHEN" in s else "")
    elif head == "SELECT" and " FROM " in s:
        table = s.split(" FROM ", 1)[1].split()[0].replace('"', "")
        shape = f"SELECT {table}" + (" FOR UPDATE" if "FOR UPDATE" in s else "")
    else:
        shape = s[:40]
    return shape


def run_profile(fx: Fixture, n: int, out_dir: Path) -> dict[str, Any]:
    from django.db import connection, connections
    from django.test.utils import CaptureQueriesContext

    log(f"\n== profile: service path, one book, one client, {n} orders ==")
    reset_data(fx)
    _one_book_orders(fx, max(80, n // 4), 7, None)  # warm-up and a populated book

    conn = connections["default"]
    perf = time.perf_counter

    # SELECT 1 round trip: the floor of any statement.
    with connection.cursor() as c:
        rtts = []
        for _ in range(500):
            t0 = perf()
            c.execute("SELECT 1")
            c.fetchone()
            rtts.append(perf() - t0)
    rtt = statistics.median(rtts)

    # A. wall time split: SQL round trips (execute_wrapper), COMMIT, the rest (Python).
    acc = {"sql": 0.0, "n": 0, "commit": 0.0}

    def timed_sql(execute, sql, params, many, context):
        t0 = perf()
        try:
            return execute(sql, params, many, context)
        finally:
            acc["sql"] += perf() - t0
            acc["n"] += 1

    orig_commit = conn._commit

    def timed_commit():
        t0 = perf()
        try:
            return orig_commit()
        finally:
            acc["commit"] += perf() - t0

    rows: list[dict[str, Any]] = []

    def measure(call):
        acc.update(sql=0.0, n=0, commit=0.0)
        t0 = perf()
        body = call()
        wall = perf() - t0
        rows.append(
            dict(
                kind="crossing" if body["filledQty"] != "0" else "resting",
                fills=len(body.get("fills") or []),
                wall=wall,
                sql=acc["sql"],
                n=acc["n"],
                commit=acc["commit"],
            )
        )
        return body

    conn._commit = timed_commit
    try:
        with connection.execute_wrapper(timed_sql):
            _one_book_orders(fx, n, 11, measure)
    finally:
        del conn._commit

    # B. the statements themselves, per kind of order.
    shapes: dict[str, Counter] = defaultdict(Counter)
    counts: dict[str, list[int]] = defaultdict(list)
    examples: dict[str, list[str]] = {}

    def capture(call):
        connection.queries_log.clear()  # a full log (9000) would make the capture empty
        with CaptureQueriesContext(connection) as ctx:
            body = call()
        nf = len(body.get("fills") or [])
        kind = "resting" if nf == 0 else ("crossing, 1 fill" if nf == 1 else "crossing, 2+ fills")
        qs = [_shape(q["sql"]) for q in ctx.captured_queries]
        counts[kind].append(len(qs))
        shapes[kind].update(qs)
        examples.setdefault(kind, qs)
        return body

    _one_book_orders(fx, min(n, 1000), 13, capture)

    # C. cProfile.
    prof = cProfile.Profile()
    prof.enable()
    t0 = perf()
    _one_book_orders(fx, n, 17, None)
    prof_wall = perf() - t0
    prof.disable()
    prof.dump_stats(out_dir / "orders-profile.prof")
    st = pstats.Stats(prof)
    by_pkg: Counter = Counter()
    for (filename, _, _), (_, _, tt, _, _) in st.stats.items():
        by_pkg[_package(filename)] += tt
    total_tt = sum(by_pkg.values())

    def top(sort: str, k: int) -> str:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(sort).print_stats(k)
        return buf.getvalue()

    # Report.
    summary: dict[str, Any] = {"orders": n, "select1_rtt_ms": rtt * 1000, "kinds": {}}
    log(f"SELECT 1 round trip: median {rtt * 1000:.3f} ms")
    log(
        "A. per order (no profiler): kind, share, wall ms, SQL statements, time in SQL ms, "
        "COMMIT ms, Python ms (median)"
    )
    for kind in ("resting", "crossing"):
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        med = {k: statistics.median(r[k] for r in rs) for k in ("wall", "sql", "n", "commit")}
        py = statistics.median(r["wall"] - r["sql"] - r["commit"] for r in rs)
        fills = statistics.fmean(r["fills"] for r in rs)
        summary["kinds"][kind] = dict(
            share=len(rs) / len(rows),
            wall_ms=med["wall"] * 1000,
            statements=med["n"],
            sql_ms=med["sql"] * 1000,
            commit_ms=med["commit"] * 1000,
            python_ms=py * 1000,
            mean_fills=fills,
        )
        log(
            f"  {kind:<9} {len(rs) / len(rows):4.0%}  wall {med['wall'] * 1000:.2f}  "
            f"stmts {med['n']:.0f}  sql {med['sql'] * 1000:.2f}  commit "
            f"{med['commit'] * 1000:.2f}  python {py * 1000:.2f}  (mean fills {fills:.2f})"
        )
    tot_wall = sum(r["wall"] for r in rows)
    tot_db = sum(r["sql"] + r["commit"] for r in rows)
    summary["db_share"] = tot_db / tot_wall
    summary["orders_per_s_unprofiled"] = len(rows) / tot_wall
    log(
        f"  all: {len(rows) / tot_wall:.0f} orders/s; database round trips (statements + "
        f"COMMIT) {tot_db / tot_wall:.0%} of wall time, Python {1 - tot_db / tot_wall:.0%}"
    )
    log("B. SQL statements per order (CaptureQueriesContext; BEGIN/COMMIT not included)")
    summary["statements"] = {}
    for kind in ("resting", "crossing, 1 fill", "crossing, 2+ fills"):
        if kind not in counts:
            continue
        c = counts[kind]
        summary["statements"][kind] = dict(
            orders=len(c),
            median=statistics.median(c),
            mean=statistics.fmean(c),
            sequence=examples[kind],
        )
        log(f"  {kind}: {len(c)} orders, median {statistics.median(c)} statements")
        for q in examples[kind]:
            log(f"      {q}")
    log(f"C. cProfile ({n} orders, {prof_wall:.2f}s under the profiler)")
    log("  own time by package:")
    summary["own_time_by_package"] = {}
    for pkg, tt in by_pkg.most_common(12):
        summary["own_time_by_package"][pkg] = tt / total_tt
        log(f"    {pkg:<40} {tt / total_tt:5.1%}")
    tt_text = top("tottime", 25)
    cum_text = top("cumulative", 45)
    (out_dir / "orders-profile-tottime.txt").write_text(tt_text)
    (out_dir / "orders-profile-cumulative.txt").write_text(cum_text)
    log(_trim_stats(tt_text))
    log(_trim_stats(cum_text))
    return summary


def _package(filename: str) -> str:
    f = filename.replace("\\", "/")
    if "site-packages/" in f:
        rest = f.split("site-packages/", 1)[1].split("/")
        return rest[0] if rest[0] != "django" else "/".join(rest[:3])
    if f.startswith(str(ROOT)):
        rel = f[len(str(ROOT)) + 1 :]
        return rel
    if f.startswith("~") or f.startswith("<"):
        return "builtins (C: " + ("method calls)" if "method" in f else "functions)")
    return "stdlib/" + Path(f).stem


def _trim_stats(text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("ncalls"):
            return "\n".join(lines[i - 2 :])
    return text


# -- main -----------------------------------------------------------------------------


def medians(runs: list[Run]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.path, r.arrangement, r.books, r.clients)].append(r)
    rows = []
    for (path, arr, books, clients), rs in groups.items():
        rows.append(
            dict(
                path=path,
                arrangement=arr,
                books=books,
                clients=clients,
                reps=len(rs),
                orders_per_s=statistics.median(r.orders_per_s for r in rs),
                p50_ms=statistics.median(r.p50_ms for r in rs),
                p99_ms=statistics.median(r.p99_ms for r in rs),
                traded=statistics.median(r.traded_frac for r in rs),
                rebuilds=(
                    statistics.median(r.engine_rebuilds for r in rs)
                    if rs[0].engine_rebuilds is not None
                    else None
                ),
                app_cpu_ms=statistics.median(r.app_cpu_ms for r in rs),
                db_cpu_ms=statistics.median(r.db_cpu_ms for r in rs),
                db_connects=statistics.median(r.db_connects_per_order for r in rs),
                other_cores=statistics.median(r.other_cores for r in rs),
                statements=(
                    statistics.median(r.statements_per_order for r in rs)
                    if rs[0].statements_per_order is not None
                    else None
                ),
                verified=all(r.in_db == r.acked and not r.invariants for r in rs),
                errors=sum(sum(r.errors.values()) for r in rs),
            )
        )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| path | arrangement | books | clients | orders/s | p50 ms | p99 ms | traded | "
        "app CPU ms/order | PG CPU ms/order | PG connects/order | other load (cores) | "
        "SQL stmts/order | engine rebuilds/run | errors | verified |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        rb = "" if r["rebuilds"] is None else f"{r['rebuilds']:.0f}"
        st = "" if r["statements"] is None else f"{r['statements']:.1f}"
        out.append(
            f"| {r['path']} | {r['arrangement']} | {r['books']} | {r['clients']} | "
            f"{r['orders_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['traded']:.0%} | {r['app_cpu_ms']:.2f} | {r['db_cpu_ms']:.2f}"
            f"{'*' if r['db_connects'] > 0.5 else ''} | {r['db_connects']:.2f} | "
            f"{r['other_cores']:.2f} | {st} | {rb} | {r['errors']} | "
            f"{'yes' if r['verified'] else 'NO'} |"
        )
    return "\n".join(out)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for pkg in ("django", "psycopg", "daphne", "uvicorn", "gunicorn", "aiohttp"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[pkg] = metadata.version(pkg)
    try:
        from django.db import connection

        with connection.cursor() as c:
            c.execute("SHOW server_version")
            info["postgresql"] = c.fetchone()[0]
            for setting in ("synchronous_commit", "fsync", "shared_buffers"):
                c.execute(f"SHOW {setting}")
                info[setting] = c.fetchone()[0]
    except Exception:
        pass
    return info


def git_state() -> str:
    """The commit measured, and whether the work tree differed from it (read-only).
    A copy of the tree made for a stable run carries this in a SNAPSHOT file."""
    if (ROOT / "SNAPSHOT").exists():
        return (ROOT / "SNAPSHOT").read_text().strip()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
        changed = [line[3:] for line in dirty if line.strip()]
        return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")
    except OSError:
        return "unknown"


def parse_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs, 2 servers; < 60 s")
    ap.add_argument("--duration", type=float, help="measured seconds per run (default 8)")
    ap.add_argument("--warmup", type=float, help="unmeasured seconds before each run (2)")
    ap.add_argument("--repeat", type=int, help="repetitions per scenario (3)")
    ap.add_argument("--only", choices=["service", "http", "profile"], action="append")
    ap.add_argument("--servers", help=f"comma list of {', '.join(SERVERS)}")
    ap.add_argument("--clients", default="1,8", help="client counts (1,8)")
    ap.add_argument("--books", default="1,4", help="book counts (1,4)")
    ap.add_argument("--traders", type=int, default=64)
    ap.add_argument("--service-procs", action="store_true", help="also service via processes")
    ap.add_argument(
        "--realtime",
        choices=["on", "off", "both"],
        help="service runs with the realtime receivers connected, disconnected, or both "
        "(default both; --quick: on)",
    )
    ap.add_argument(
        "--redis-url",
        help="set REDIS_URL (Redis channel layer and delta buffer) for this process and "
        "the servers; default: unset (in-memory layer), unless the environment has one",
    )
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-orders", type=int, help="orders in the profile (2000)")
    ap.add_argument("--json", type=Path, help="results file (bench/results/orders-*.json)")
    args = ap.parse_args(argv)

    quick = args.quick
    duration = args.duration or (1.0 if quick else 8.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if quick else 2.0)
    repeat = args.repeat or (1 if quick else 3)
    servers = (
        args.servers.split(",") if args.servers else (QUICK_SERVERS if quick else DEFAULT_SERVERS)
    )
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s}")
    clients_list, books_list = parse_list(args.clients), parse_list(args.books)
    only = set(args.only or ["service", "http", "profile"])
    if args.no_profile:
        only.discard("profile")
    profile_orders = args.profile_orders or (80 if quick else 2000)
    realtime = args.realtime or ("on" if quick else "both")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.json or out_dir / time.strftime("orders-%Y%m%d-%H%M%S.json")

    t_start = time.perf_counter()
    # A SIGTERM unwinds like Ctrl-C, so that `finally` stops the server under test.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.redis_url:
        os.environ["REDIS_URL"] = args.redis_url
    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    setup_django(db_url)
    fx = make_fixture(args.traders)
    info = machine()
    info["redis_url"] = os.environ.get("REDIS_URL") or "(unset: in-memory channel layer)"
    info["git"] = git_state()
    log(f"machine: {json.dumps(info)}")
    log(
        f"runs: {warmup}s warm-up + {duration}s measured, {repeat} repetitions; "
        f"clients {clients_list}, books {books_list}; {len(fx.traders)} traders"
    )
    runs: list[Run] = []
    scenarios = [(b, c) for b in books_list for c in clients_list]
    profile: dict[str, Any] | None = None

    def save() -> None:
        """Written after every run, so that an interrupted run keeps what it measured."""
        out_path.write_text(
            json.dumps(
                dict(
                    machine=info,
                    argv=sys.argv,
                    duration=duration,
                    warmup=warmup,
                    repeat=repeat,
                    medians=medians(runs),
                    runs=[asdict(r) for r in runs],
                    profile=profile,
                ),
                indent=1,
                default=str,
            )
        )

    def record(run: Run) -> None:
        runs.append(run)
        save()

    warm_process(fx)

    if "service" in only:
        log("\n== service: order_place() from Python threads, one DB connection each ==")
        variants = {"on": [True], "off": [False], "both": [True, False]}[realtime]
        for rep in range(repeat):
            for broadcast in variants:
                for b, c in scenarios:
                    record(run_service(fx, b, c, rep, warmup, duration, False, db_url, broadcast))
            if args.service_procs:
                for b, c in scenarios:
                    if c > 1:
                        record(run_service(fx, b, c, rep, warmup, duration, True, db_url))

    if "http" in only:
        from django.db import connections

        for name in servers:
            log(f"\n== http: POST /api/v1/trade, server {name} ==")
            connections.close_all()
            migrate_subprocess(db_url)  # the servers load the code on disk now
            server = Server(name, db_url, out_dir)
            try:
                server.wait_ready()
                log(f"  {' '.join(server.argv)}")
                for rep in range(repeat):
                    for b, c in scenarios:
                        record(run_http(server, fx, b, c, rep, warmup, duration))
            finally:
                server.stop()

    if "profile" in only:
        profile = run_profile(fx, profile_orders, out_dir)

    rows = medians(runs)
    if rows:
        log(f"\n== medians over {repeat} repetition(s) ==")
        log(markdown_table(rows))
        log(
            "* PostgreSQL CPU counts live backends only; with ~1 connection opened per order"
            " the backends that served one request and exited are missing from it."
        )
    ok = all(r.in_db == r.acked and not r.invariants for r in runs)
    save()
    log(f"\nresults: {out_path}  ({time.perf_counter() - t_start:.0f}s)")
    log("verification: " + ("every acknowledged order found, invariants hold" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
