"""The matcher role (`manage.py runmatcher`, MATCHER=redis) against the embedded order
path (MATCHER=embedded: group commit in the process that took the order), on
PostgreSQL and Redis.

1. **service**: one book, 8 client threads in this process, closed loop. *matcher*:
   each thread calls `trading.matcher.order_submit` (MATCHER=redis: the request goes
   over Redis to a runmatcher process, the thread waits for its answer); *embedded*:
   each calls `order_place` (group commit among the threads); *matcher, realtime off*
   (not in --quick): the matcher with its realtime receivers disconnected, i.e. what
   publishing the events costs it. The arrangements alternate round by round.
   **mix**: the same, with a quarter of each client's requests cancels of the oldest
   order it left resting (`order_cancel_submit`; most have filled since and are
   refused ORDER_NOT_OPEN, as in the soak); its rates count requests. An acknowledged
   cancel must have left its order CANCELED.
2. **http**: `POST /api/v1/trade`, 8 keep-alive clients (aiohttp, in this process),
   against one web process (`python -m dexsite.serve`, Procfile.dev's `web`: HTTP and
   WebSockets on one port; bench/serving.py compares the servers) with one matcher,
   and against one web process with MATCHER=embedded.
3. **scale-out**: the same flow against two web processes (4 clients each) and the
   one matcher. All the HTTP arrangements run side by side, started once, and take
   turns round by round.
4. **restart**: `--resting` resting orders on one book (100,000), then the Procfile's
   matcher role started again and again: seconds from its start until it holds that
   book's lease with the engine book built (its log line), and until the first order
   sent to it (queued in Redis before it started) is answered.
5. **profile**: where the matcher's CPU goes, py-spy sampling the matcher process
   during a service round (non-idle samples; by function and by stage).

The flow is bench/orders.py's: GTC limits of 1-40 lots around 64,000 from 64 funded
PAPER traders, half of them crossing. Every round starts from the same state
(`bench.orders.reset_data`); after it every acknowledged order must be in the database
and `check_invariants()` empty. CPU per order is read from /proc over the measured
window: this process (the service clients, and the embedded path's matching), the
web processes, the matcher, the PostgreSQL backends of the bench database and the
Redis server (its INFO cpu: the whole server, whoever else uses it). The matcher of
rounds 1-3 is `runmatcher` started by this script (`--serve-matcher`) with
`engine_book_build` wrapped to count every engine book it builds (a Redis counter):
after the warm-up of a round it must build none.

The resting book of the restart is written by SQL, each order a copy of one of two
real resting orders (a buy, a sell) placed through the order path, at its own price
(1-2,000 ticks from the mid) and size (1-40 lots), its reservation scaled from the
copied order's by notional, and each trader's locked balance set to the sum of its
open orders' reservations; `check_invariants()` must hold on it.

Usage::

    python bench/matcher.py [--quick] [--rounds R] [--duration S] [--warmup S]
        [--only service,mix,http,profile,restart] [--resting N] [--restarts N]
        [--db-url URL] [--redis-url URL] [--json PATH]

The database (default postgres://postgres@127.0.0.1:5432/dexsite_benchm) is created
if missing and migrated, its data overwritten; Redis (default redis://127.0.0.1:6379/7)
is used under prefixes of the run's own.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import orders as common  # noqa: E402
from bench.orders import (  # noqa: E402
    LOT,
    MID,
    MODE,
    TICK,
    ClientResult,
    CpuMeter,
    Run,
    _pid_cpu,
    _tree,
    log,
)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/dexsite_benchm"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"
CLIENTS = 8
SERVICE = ["embedded", "matcher"]
# The matcher with its realtime receivers disconnected (no events published, no account
# updates): what publishing costs it.
NO_REALTIME = "matcher, realtime off"
HTTP = ["embedded web", "1 web + matcher", "2 web + matcher"]
# The mix: a quarter of the requests are cancels of the client's oldest resting order
# (as the soak's), most of them of orders that have filled since.
CANCEL_P = 0.25
MIX = ["embedded, cancels", "matcher, cancels"]


def builds_key(prefix: str) -> str:
    return f"{prefix}:bench:builds"


# -- the counting matcher -----------------------------------------------------------------


def serve_matcher() -> None:
    """`manage.py runmatcher`, every engine book it builds counted in Redis (at once),
    and its batches and their requests (written to Redis after a batch, every 0.2 s at
    most, when it also reads whether the bench wants its realtime receivers off)."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from trading.matcher import server
    from trading.matcher.redis_queue import redis_client
    from trading.services import books

    key = builds_key(settings.MATCHER_PREFIX)
    build, run = books.engine_book_build, server.request_run
    batches = {"batches": 0, "requests": 0}

    def build_counted(book: Any) -> Any:
        redis_client().incr(key)
        return build(book)

    def run_counted(requests: list) -> list:
        batches["batches"] += 1
        batches["requests"] += len(requests)
        try:
            return run(requests)
        finally:
            # Told every 0.2 s at most, from the matcher's own thread; the realtime
            # receivers turned off or on as the bench asks.
            if time.monotonic() - told[0] > 0.2:
                told[0] = time.monotonic()
                pipe = redis_client().pipeline(transaction=False)
                pipe.hset(f"{key}:batches", mapping=batches)
                pipe.get(f"{key}:realtime")
                on = pipe.execute()[1] != b"off"
                if on != realtime[0]:
                    common.set_broadcast(on)
                    realtime[0] = on

    told, realtime = [0.0], [True]
    books.engine_book_build = server.engine_book_build = build_counted
    server.request_run = run_counted
    call_command("runmatcher")


def matcher_class() -> type:
    from trust import procs

    class CountingMatcher(procs.MatcherProcess):
        """The matcher role, started through `serve_matcher`."""

        def start(self) -> None:
            with self.log_path.open("a") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--serve-matcher"],
                    cwd=ROOT,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.starts += 1

    return CountingMatcher


# -- measurement ----------------------------------------------------------------------------


class Meter(CpuMeter):
    """CPU of named groups of processes (each a list of roots and their children), this
    process, the bench database's PostgreSQL backends and the Redis server."""

    def __init__(self, ctx: Ctx, groups: dict[str, list[int]]) -> None:
        super().__init__(ctx.db_url, None)
        self.groups = groups
        self.redis = ctx.redis
        self.builds_key = builds_key(ctx.mprefix)

    def snap(self) -> dict[str, Any]:
        s = super().snap()
        s["groups"] = {
            g: {p: _pid_cpu(p) for root in roots for p in _tree(root)}
            for g, roots in self.groups.items()
        }
        info = self.redis.info("cpu")
        s["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        s["commands"] = {
            k.removeprefix("cmdstat_"): v["calls"]
            for k, v in self.redis.info("commandstats").items()
        }
        # The engine books the counting matcher has built so far; the embedded path's,
        # in this process (bench.orders counts them).
        s["builds"] = int(self.redis.get(self.builds_key) or 0)
        s["local builds"] = common._rebuilds[0]
        batches = self.redis.hgetall(f"{self.builds_key}:batches")
        s["batches"] = {k.decode(): int(v) for k, v in batches.items()}
        return s

    @staticmethod
    def batch_mean(a: dict[str, Any], b: dict[str, Any]) -> float | None:
        """Requests per batch the matcher ran between two snaps."""
        n = b["batches"].get("batches", 0) - a["batches"].get("batches", 0)
        if n <= 0:
            return None
        return (b["batches"]["requests"] - a["batches"].get("requests", 0)) / n

    def per_order(self, a: dict[str, Any], b: dict[str, Any], orders: int) -> dict[str, float]:
        """CPU ms per order by part; `other cores`: the rest of the machine, in cores."""
        n = max(orders, 1)
        seconds = {g: self._delta(a["groups"][g], b["groups"][g]) for g in self.groups}
        seconds["this process"] = b["self"] - a["self"]
        seconds["postgres"] = self._delta(a["db"], b["db"])
        seconds["redis"] = b["redis"] - a["redis"]
        out = {k: v / n * 1000 for k, v in seconds.items()}
        busy = b["machine"] - a["machine"]
        out["other cores"] = max(busy - sum(seconds.values()), 0.0) / (b["t"] - a["t"])
        return out

    @staticmethod
    def commands(a: dict[str, Any], b: dict[str, Any], orders: int) -> dict[str, float]:
        """Redis commands per order (the whole server's), by command, most first."""
        calls = {k: v - a["commands"].get(k, 0) for k, v in b["commands"].items()}
        calls = {k: v / max(orders, 1) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
        return {"all": sum(calls.values()), **{k: v for k, v in calls.items() if v >= 0.05}}


@dataclass
class Round(Run):
    # CPU ms per order by part (this process, web, matcher, postgres, redis), and the
    # exchange's total (the client's CPU left out over HTTP).
    cpu: dict = field(default_factory=dict)
    exchange_cpu_ms: float = 0.0
    # Engine books built in the measured window: the matcher's, or for the embedded
    # service this process's.
    builds: int | None = None
    # Requests per batch the matcher ran in the window (over HTTP one request per order).
    batch_mean: float | None = None
    # Redis commands per order in the window (the whole server's), by command.
    redis_commands: dict = field(default_factory=dict)
    # Of the mix's requests: cancels answered (cancelled, or refused ORDER_NOT_OPEN).
    cancels: int = 0
    not_open: int = 0


def reset(fx: Any) -> None:
    """`bench.orders.reset_data`, once the last round's account updates (sent by each
    process COALESCE_SECONDS after a change, reading the accounts) have gone: such a
    read racing the TRUNCATE can deadlock with it, which is then tried again."""
    from django.db import OperationalError

    for attempt in range(3):
        time.sleep(0.5)
        try:
            return common.reset_data(fx)
        except OperationalError as e:
            if "deadlock" not in str(e) or attempt == 2:
                raise
            log(f"  reset: {str(e).splitlines()[0]}; again")


def prime(fx: Any, remote: bool) -> None:
    """One order (resting far from the flow) placed before a round's clock starts: the
    reset book's engine is rebuilt for it, by the matcher or in this process, so that no
    warm-up is too short for the rebuild (it then counts as a build after the warm-up)."""
    from django.conf import settings

    from trading.matcher import order_submit

    settings.MATCHER = "redis" if remote else "embedded"
    try:
        order_submit(
            trader=fx.traders[0],
            market=fx.symbols[0],
            mode=MODE,
            side="BUY",
            type="LIMIT",
            qty=LOT,
            price=MID - 100 * TICK,
        )
    finally:
        settings.MATCHER = "embedded"


def _finish(run: Round, results: list[ClientResult], cpu: dict[str, float], exchange: list) -> None:
    common.summarize(run, results)
    run.cpu = cpu
    run.exchange_cpu_ms = sum(cpu.get(k, 0.0) for k in exchange)
    run.other_cores = cpu["other cores"]
    common.verify(run, results)
    builds = "" if run.builds is None else f" engine builds={run.builds}"
    if run.batch_mean is not None:
        builds += f" requests/batch={run.batch_mean:.1f}"
    log(
        f"  {run.path:<7} {run.arrangement:<16} round {run.rep}: {run.orders_per_s:6.0f} "
        f"orders/s p50={run.p50_ms:6.2f}ms p99={run.p99_ms:6.2f}ms traded={run.traded_frac:.0%}"
        f" errors={run.errors or 0}{builds}"
    )
    parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "other cores")
    commands = ", ".join(f"{k} {v:.1f}" for k, v in run.redis_commands.items())
    log(f"    Redis commands/order: {commands}")
    ok = run.in_db == run.acked and not run.invariants
    log(
        f"    CPU ms/order: {parts}; exchange {run.exchange_cpu_ms:.2f}; other load "
        f"{run.other_cores:.2f} cores; acked {run.acked} in db {run.in_db}, invariants "
        f"{run.invariants or 'hold'} -> {'OK' if ok else 'FAIL'}"
    )


def service_round(ctx: Ctx, arrangement: str, rep: int, warmup: float, duration: float) -> Round:
    from django.conf import settings

    from trading.matcher import order_cancel_submit, order_submit

    fx = ctx.fx
    reset(fx)
    remote = arrangement.startswith("matcher")
    cancels = arrangement in MIX
    realtime = "off" if arrangement == NO_REALTIME else "on"
    ctx.redis.set(f"{builds_key(ctx.mprefix)}:realtime", realtime)
    groups = {"matcher": [ctx.matcher.proc.pid]} if remote else {}
    prime(fx, remote)
    settings.MATCHER = "redis" if remote else "embedded"
    meter = Meter(ctx, groups)
    seed0 = 1000 * rep + 7
    start = time.perf_counter() + 0.2
    t_measure, t_end = start + warmup, start + warmup + duration
    slots: list[ClientResult | None] = [None] * CLIENTS

    def target(i: int) -> None:
        slots[i] = common.service_client(
            fx,
            fx.symbols[:1],
            seed0 + i,
            t_measure,
            t_end,
            order_submit if remote else None,
            cancel=order_cancel_submit if cancels else None,
            cancel_p=CANCEL_P,
        )

    threads = [threading.Thread(target=target, args=(i,)) for i in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        common._sleep_until(t_measure)
        a = meter.snap()
        common._sleep_until(t_end)
        b = meter.snap()
        for t in threads:
            t.join()
    finally:
        settings.MATCHER = "embedded"
    meter.close()
    results = [r for r in slots if r is not None]
    run = Round("mix" if cancels else "service", arrangement, 1, CLIENTS, rep, duration)
    count = "builds" if remote else "local builds"
    run.builds = b[count] - a[count]
    run.batch_mean = meter.batch_mean(a, b) if remote else None
    run.orders = sum(len(r.latencies) for r in results)
    run.cancels = sum(len(r.cancelled) + r.not_open for r in results)
    run.not_open = sum(r.not_open for r in results)
    cpu = meter.per_order(a, b, run.orders)
    run.redis_commands = meter.commands(a, b, run.orders)
    _finish(run, results, cpu, ["this process", "matcher", "postgres", "redis"])
    return run


def http_round(ctx: Ctx, arrangement: str, rep: int, warmup: float, duration: float) -> Round:
    fx = ctx.fx
    reset(fx)
    if arrangement == "embedded web":
        webs, groups = [ctx.embedded], {"web": [ctx.embedded.pid]}
    else:
        webs = ctx.webs[: 2 if arrangement.startswith("2") else 1]
        groups = {"web": [w.pid for w in webs], "matcher": [ctx.matcher.proc.pid]}
        prime(fx, remote=True)
    meter = Meter(ctx, groups)
    seed0 = 1000 * rep + 9
    start = time.perf_counter() + 0.1
    t_measure, t_end = start + warmup, start + warmup + duration
    snaps: list = []
    results = _run_async(
        common._http_clients(
            [w.port for w in webs],
            fx,
            fx.symbols[:1],
            CLIENTS,
            seed0,
            t_measure,
            t_end,
            meter,
            snaps,
        )
    )
    run = Round("http", arrangement, 1, CLIENTS, rep, duration)
    run.orders = sum(len(r.latencies) for r in results)
    cpu = meter.per_order(snaps[0], snaps[1], run.orders)
    run.redis_commands = meter.commands(snaps[0], snaps[1], run.orders)
    cpu["client"] = cpu.pop("this process")
    meter.close()
    if "matcher" in groups:
        run.builds = snaps[1]["builds"] - snaps[0]["builds"]
        run.batch_mean = meter.batch_mean(*snaps)
    _finish(run, results, cpu, ["web", "matcher", "postgres", "redis"])
    return run


def _run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


@dataclass
class Ctx:
    fx: Any
    db_url: str
    prefix: str
    mprefix: str
    redis: Any
    out_dir: Path
    env: dict[str, str]
    matcher: Any = None
    embedded: Any = None
    webs: list = field(default_factory=list)


def medians(runs: list[Round]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[Round]] = collections.defaultdict(list)
    for r in runs:
        groups[(r.path, r.arrangement)].append(r)
    rows = []
    for (path, arrangement), rs in groups.items():
        keys = sorted({k for r in rs for k in r.cpu})
        rows.append(
            dict(
                path=path,
                arrangement=arrangement,
                rounds=len(rs),
                orders_per_s=statistics.median(r.orders_per_s for r in rs),
                p50_ms=statistics.median(r.p50_ms for r in rs),
                p99_ms=statistics.median(r.p99_ms for r in rs),
                traded=statistics.median(r.traded_frac for r in rs),
                cpu={k: statistics.median(r.cpu.get(k, 0.0) for r in rs) for k in keys},
                exchange_cpu_ms=statistics.median(r.exchange_cpu_ms for r in rs),
                redis_commands=statistics.median(r.redis_commands.get("all", 0) for r in rs),
                publishes=statistics.median(r.redis_commands.get("publish", 0) for r in rs),
                # Cores the exchange kept busy: what it was given of the machine.
                exchange_cores=statistics.median(
                    r.exchange_cpu_ms * r.orders_per_s / 1000 for r in rs
                ),
                builds=None if rs[0].builds is None else sum(r.builds or 0 for r in rs),
                batch_mean=(
                    None
                    if rs[0].batch_mean is None
                    else statistics.median(r.batch_mean or 0 for r in rs)
                ),
                orders=sum(r.orders for r in rs),
                cancels=sum(r.cancels for r in rs),
                not_open=sum(r.not_open for r in rs),
                errors=sum(sum(r.errors.values()) for r in rs),
                verified=all(r.in_db == r.acked and not r.invariants for r in rs),
            )
        )
    return rows


def ratio(runs: list[Round], path: str, top: str, bottom: str) -> float | None:
    """Median over rounds of top's orders/s over bottom's in the same round."""
    by_rep: dict[int, dict[str, float]] = collections.defaultdict(dict)
    for r in runs:
        if r.path == path:
            by_rep[r.rep][r.arrangement] = r.orders_per_s
    pairs = [d[top] / d[bottom] for d in by_rep.values() if d.get(top) and d.get(bottom)]
    return statistics.median(pairs) if pairs else None


def table(rows: list[dict[str, Any]], path: str) -> str:
    parts = ["this process", "web", "matcher", "postgres", "redis"]
    out = [
        "| arrangement | orders/s | p50 ms | p99 ms | traded | CPU ms/order: "
        + " · ".join(parts)
        + " | exchange CPU ms/order | exchange cores | Redis commands/order (PUBLISH)"
        " | orders per matcher batch | engine builds after warm-up | other load (cores)"
        " | errors | verified |",
        "|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        if r["path"] != path:
            continue
        cpu = " · ".join(f"{r['cpu'][k]:.2f}" if k in r["cpu"] else "-" for k in parts)
        builds = "-" if r["builds"] is None else str(r["builds"])
        batch = "-" if r["batch_mean"] is None else f"{r['batch_mean']:.1f}"
        out.append(
            f"| {r['arrangement']} | {r['orders_per_s']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['traded']:.0%} | {cpu} | {r['exchange_cpu_ms']:.2f} | "
            f"{r['exchange_cores']:.2f} | {r['redis_commands']:.1f} ({r['publishes']:.1f}) | "
            f"{batch} | {builds} | {r['cpu'].get('other cores', 0):.2f} | {r['errors']} | "
            f"{'yes' if r['verified'] else 'NO'} |"
        )
    return "\n".join(out)


# -- profile --------------------------------------------------------------------------------

# Stages of the matcher's main thread, by the function that starts them ("name (file)",
# without its class); the deepest one on a sample's stack names its stage.
STAGES = {
    "turn_once (server.py)": "BLPOP/LPOP of requests",
    "requests_decode (requests.py)": "decoding requests",
    "leases_check (server.py)": "lease check, close_old_connections",
    "close_old_connections (__init__.py)": "lease check, close_old_connections",
    "batch_run (server.py)": "claims and answers (Redis pipelines)",
    "answer_encode (requests.py)": "encoding answers",
    "request_run (requests.py)": "request_run, orders_place_each (other)",
    "orders_place_each (place.py)": "request_run, orders_place_each (other)",
    "order_by_client_id (place.py)": "clientOrderId look-ups",
    "_place_together (place.py)": "_place_together (other)",
    "batch_open (persist.py)": "batch_open (locks, reads)",
    "admit (admit.py)": "admit",
    "match (match.py)": "match (the engine)",
    "record (record.py)": "record",
    "batch_write (persist.py)": "batch_write (writes)",
    "_batch_finish (place.py)": "order payloads, events gathered",
    "__exit__ (transaction.py)": "COMMIT",
    "run_and_clear_commit_hooks (base.py)": "on commit: the receivers build the events",
    "ticker_body (broadcast.py)": "on commit: the ticker's market read (4 a second a book)",
}


def py_spy() -> str | None:
    for candidate in (
        shutil.which("py-spy"),
        str(Path(sys.executable).parent / "py-spy"),
        os.environ.get("PY_SPY"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def threads_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of `pid` (the main thread's id is `pid`)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        cpu = _pid_cpu_path(task / "stat")
        if cpu is not None:
            out[int(task.name)] = cpu
    return out


def _pid_cpu_path(path: Path) -> float | None:
    try:
        f = path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(f[11]) + int(f[12])) / common.CLK_TCK


def profile_matcher(ctx: Ctx, duration: float, warmup: float) -> dict[str, Any] | None:
    """py-spy on the matcher during a service round of the matcher arrangement: samples
    of the thread holding the GIL (`--gil`; BENCH_PY_SPY_ARGS to change), and the CPU
    of the matcher's main thread and of its other threads from /proc."""
    spy = py_spy()
    if spy is None:
        log("  py-spy not found (pip install py-spy): no profile")
        return None
    raw = ctx.out_dir / "matcher-profile.txt"
    pid = ctx.matcher.proc.pid
    held: dict[str, Any] = {}

    def record() -> None:
        time.sleep(warmup + 0.2)
        held["a"], held["t0"] = threads_cpu(pid), time.perf_counter()
        held["rc"] = subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(duration))),
                "--rate",
                "250",
                "--format",
                "raw",
                "--threads",
                *os.environ.get("BENCH_PY_SPY_ARGS", "--gil").split(),
                "--output",
                str(raw),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        held["b"], held["t1"] = threads_cpu(pid), time.perf_counter()

    spying = threading.Thread(target=record)
    spying.start()
    run = service_round(ctx, "matcher", -1, warmup, duration + 1)
    spying.join()
    if not raw.exists():
        log(f"  py-spy failed: {held['rc'].stderr[-500:]}")
        return None
    orders = run.orders_per_s * (held["t1"] - held["t0"])
    cpu = {tid: end - held["a"].get(tid, 0.0) for tid, end in held["b"].items() if end is not None}
    text = raw.read_text()
    # py-spy names each thread "thread (<OS thread id>): <Python name>".
    names = {int(t): n for t, n in re.findall(r"^thread \((\d+)\): ([^;]+);", text, re.M)}
    by_name: Counter = Counter()
    for tid, seconds in cpu.items():
        by_name[names.get(tid, "MainThread" if tid == pid else "other")] += seconds
    thread_ms = {k: v / orders * 1000 for k, v in by_name.most_common()}
    return profile_summary(text, run, thread_ms)


def _frame(f: str) -> str:
    """'name (path/file.py:12)' -> 'name (file.py)'."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", f)
    return f"{m.group(1)} ({Path(m.group(2)).name})" if m else f


def profile_summary(text: str, run: Round, thread_ms: dict[str, float]) -> dict[str, Any]:
    own: Counter = Counter()
    stage: Counter = Counter()
    threads: Counter = Counter()
    main = other = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        thread, *frames = stack.split(";")
        frames = [_frame(f) for f in frames]
        if not frames:
            continue
        own[frames[-1]] += n
        # "thread (<id>): <its Python name>"
        threads[thread.split(": ", 1)[-1]] += n
        if thread.endswith("MainThread"):
            main += n
            where = "other"
            for f in reversed(frames):
                bare = f.split(" (", 1)[0].rsplit(".", 1)[-1] + " (" + f.split(" (", 1)[-1]
                if bare in STAGES:
                    where = STAGES[bare]
                    break
            stage[where] += n
        else:
            other += n
    total = main + other
    summary = {
        "samples": total,
        "matcher_cpu_ms_per_order": run.cpu.get("matcher", 0.0),
        "thread_cpu_ms_per_order": thread_ms,
        "orders_per_s": run.orders_per_s,
        "batch_mean": run.batch_mean,
        "threads": {k: v / max(total, 1) for k, v in threads.most_common()},
        "main_thread_stages": {k: v / max(main, 1) for k, v in stage.most_common()},
        "own": {k: v / max(total, 1) for k, v in own.most_common(20)},
    }
    main_ms = thread_ms.get("MainThread", 0.0)
    log(
        f"  {total} samples ({main} of the main thread); {run.orders_per_s:.0f} orders/s; "
        "matcher CPU ms/order by thread (/proc): "
        + ", ".join(f"{k} {v:.2f}" for k, v in thread_ms.items())
    )
    log("  samples by thread: " + ", ".join(f"{k} {v:.0%}" for k, v in summary["threads"].items()))
    log("  main thread by stage (share of its samples, x its CPU ms/order):")
    for k, v in summary["main_thread_stages"].items():
        log(f"    {v:5.1%}  {v * main_ms:5.2f}  {k}")
    log("  own time, top functions (all threads):")
    for k, v in summary["own"].items():
        log(f"    {v:5.1%}  {k}")
    return summary


# -- restart --------------------------------------------------------------------------------

_RESTING = """
WITH g AS (
    SELECT i,
           CASE WHEN i %% 2 = 0 THEN %(buy)s ELSE %(sell)s END AS template,
           %(mid)s + (CASE WHEN i %% 2 = 0 THEN -1 ELSE 1 END) * %(tick)s
               * (1 + (i / 2) %% %(levels)s) AS px,
           %(lot)s * (1 + i %% 40) AS q,
           (%(traders)s::bigint[])[1 + (i / 2) %% %(n_traders)s] AS trader
    FROM generate_series(0, %(n)s - 1) AS i
)
INSERT INTO trading_order ({columns})
SELECT {values} FROM g JOIN trading_order t ON t.id = g.template ORDER BY g.i
"""

_LOCKED = """
UPDATE accounts_balance b SET locked = s.reserved + b.withdrawing
FROM (
    SELECT trader_id, reserve_asset, mode, SUM(reserved) AS reserved FROM trading_order
    WHERE status = ANY(%s) GROUP BY trader_id, reserve_asset, mode
) s
WHERE b.trader_id = s.trader_id AND b.asset = s.reserve_asset AND b.mode = s.mode
"""

LEVELS = 2000


def resting_book(fx: Any, n: int) -> dict[str, Any]:
    """`n` resting orders on the first book (see the module docstring)."""
    from django.db import connection, transaction
    from django.db.models import F

    from trading.invariants import check_invariants
    from trading.models import OPEN_STATUSES, Book, Order
    from trading.orders.place import order_place
    from trading.services.books import engine_cache_clear

    reset(fx)
    symbol = fx.symbols[0]
    templates = [
        order_place(
            trader=fx.traders[0],
            market=symbol,
            mode=MODE,
            side=side,
            type="LIMIT",
            qty=LOT,
            price=MID + sign * TICK * (LEVELS + 5),
        )[0]["id"]
        for side, sign in (("BUY", -1), ("SELL", 1))
    ]
    varied = {
        "trader_id": "g.trader",
        "price": "g.px",
        "qty": "g.q",
        "reserved": "round(t.reserved * (g.px * g.q) / (t.price * t.qty), 12)",
    }
    columns = [f.column for f in Order._meta.concrete_fields if f.column != "id"]
    query = _RESTING.format(
        columns=", ".join(f'"{c}"' for c in columns),
        values=", ".join(varied.get(c, f't."{c}"') for c in columns),
    )
    t0 = time.perf_counter()
    with transaction.atomic(), connection.cursor() as c:
        c.execute(
            query,
            dict(
                buy=templates[0],
                sell=templates[1],
                mid=MID,
                tick=TICK,
                levels=LEVELS,
                lot=LOT,
                traders=[u.pk for u in fx.traders],
                n_traders=len(fx.traders),
                n=n,
            ),
        )
        c.execute(_LOCKED, [list(OPEN_STATUSES)])
        Book.objects.filter(market__symbol=symbol, mode=MODE).update(seq=F("seq") + 1)
    with connection.cursor() as c:
        c.execute("VACUUM ANALYZE trading_order")
    engine_cache_clear()
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    problems = check_invariants()
    checked = time.perf_counter() - t0
    resting = Order.objects.filter(
        market__symbol=symbol, mode=MODE, status__in=OPEN_STATUSES
    ).count()
    log(
        f"  {resting:,} resting orders on {symbol} {MODE}: written in {written:.1f}s; "
        f"check_invariants() {problems or 'holds'} ({checked:.1f}s)"
    )
    return dict(resting=resting, write_s=written, invariants=problems)


def restart_times(ctx: Ctx, restarts: int) -> list[dict[str, Any]]:
    """Start the Procfile's matcher role `restarts` times on the resting book."""
    from django.conf import settings

    from trading.matcher import redis_queue
    from trust import procs

    symbol = ctx.fx.symbols[0]
    line = re.compile(rf"matcher: took {re.escape(symbol)} {MODE} \(built in (\d+) ms\)")
    out = []
    for i in range(restarts):
        m = procs.MatcherProcess(ctx.env, ctx.out_dir / f"matcher-restart{i}.log")
        m.log_path.write_text("")
        answered: dict[str, Any] = {}

        def probe(i: int = i, answered: dict[str, Any] = answered) -> None:
            from trading.matcher import order_submit

            try:
                placed, _ = order_submit(
                    trader=ctx.fx.traders[1 + i],
                    market=symbol,
                    mode=MODE,
                    side="BUY",
                    type="LIMIT",
                    qty=LOT,
                    price=MID - TICK * (LEVELS + 10 + i),
                )
                answered["status"] = placed["status"]
            except Exception as e:
                answered["status"] = repr(e)
            answered["t"] = time.perf_counter()

        settings.MATCHER, timeout = "redis", settings.MATCHER_TIMEOUT
        settings.MATCHER_TIMEOUT = 300
        redis_queue._client = None  # one whose socket outwaits that
        try:
            t0 = time.perf_counter()
            m.start()
            asking = threading.Thread(target=probe)
            asking.start()
            ready, built_ms = None, None
            while ready is None and time.perf_counter() - t0 < 300:
                if m.proc.poll() is not None:
                    raise RuntimeError(f"matcher exited; see {m.log_path}")
                found = line.search(m.log_path.read_text(errors="replace"))
                if found:
                    ready, built_ms = time.perf_counter() - t0, int(found.group(1))
                time.sleep(0.01)
            asking.join(300)
        finally:
            settings.MATCHER, settings.MATCHER_TIMEOUT = "embedded", timeout
            redis_queue._client = None
            m.stop()
        row = dict(
            ready_s=ready,
            build_ms=built_ms,
            first_answer_s=answered.get("t", float("nan")) - t0,
            first_answer=answered.get("status"),
        )
        log(
            f"  start {i + 1}: lease held, book built {ready:.2f}s after the start (the build "
            f"{built_ms} ms); first order answered after {row['first_answer_s']:.2f}s "
            f"({row['first_answer']})"
        )
        out.append(row)
    return out


# -- main -----------------------------------------------------------------------------------


def servers_start(ctx: Ctx, http: bool) -> None:
    from trust import procs

    env = procs.server_env(ctx.db_url, ctx.prefix, MATCHER_PREFIX=ctx.mprefix)
    ctx.env = dict(env, LOG_LEVEL="INFO")
    ctx.matcher = matcher_class()(ctx.env, ctx.out_dir / "matcher.log")
    started = [ctx.matcher]
    if http:
        ctx.embedded = procs.WebServer(dict(env, MATCHER="embedded"), ctx.out_dir / "web-e.log")
        ctx.webs = [
            procs.WebServer(dict(env, MATCHER="redis"), ctx.out_dir / f"web-{i}.log")
            for i in range(2)
        ]
        started += [ctx.embedded, *ctx.webs]
    for s in started:
        s.log_path.write_text("")
        s.start()
    for s in started:
        s.wait_ready(120)


def servers_stop(ctx: Ctx) -> None:
    for s in [ctx.matcher, ctx.embedded, *ctx.webs]:
        if s is not None:
            s.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve-matcher", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="one short round of each; < 1 min")
    ap.add_argument("--rounds", type=int, help="rounds of each arrangement (3)")
    ap.add_argument("--duration", type=float, help="measured seconds per round (8)")
    ap.add_argument("--warmup", type=float, help="unmeasured seconds before each (2)")
    ap.add_argument("--only", help="comma list of service, mix, http, profile, restart")
    ap.add_argument("--resting", type=int, help="resting orders of the restart (100,000)")
    ap.add_argument("--restarts", type=int, help="matcher starts timed (3)")
    ap.add_argument("--db-url", default=os.environ.get("BENCH_MATCHER_DATABASE_URL", DEFAULT_DB))
    ap.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    ap.add_argument("--json", type=Path, help="results file (bench/results/matcher-*.json)")
    args = ap.parse_args(argv)
    if args.serve_matcher:
        serve_matcher()
        return 0

    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    duration = args.duration or (1.5 if quick else 8.0)
    # Each round's reset book is rebuilt before its clock starts (`prime`).
    warmup = args.warmup if args.warmup is not None else (0.5 if quick else 2.0)
    resting = args.resting if args.resting is not None else (2000 if quick else 100_000)
    restarts = args.restarts or (1 if quick else 3)
    only = set((args.only or "service,mix,http,profile,restart").split(","))
    out_dir = Path(tempfile.gettempdir()) / f"dexsite-benchm{os.getpid()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.json or results_dir / time.strftime("matcher-%Y%m%d-%H%M%S.json")

    t_start = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    prefix = f"benchm{os.getpid()}"
    os.environ.update(
        REDIS_URL=args.redis_url,
        MATCHER_PREFIX=f"{prefix}m",
        CHANNEL_LAYER_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
    )
    common.setup_django(args.db_url)
    import redis

    from trust import procs

    fx = common.make_fixture(64, with_tokens="http" in only)
    procs.market_create()  # the market the web processes' readiness check reads
    ctx = Ctx(
        fx, args.db_url, prefix, f"{prefix}m", redis.Redis.from_url(args.redis_url), out_dir, {}
    )
    info = common.machine()
    info.update(git=common.git_state(), redis=args.redis_url, load1=os.getloadavg()[0])
    log(f"machine: {json.dumps(info)}")
    log(f"rounds: {rounds} x ({warmup}s warm-up + {duration}s measured), {CLIENTS} clients")
    runs: list[Round] = []
    report: dict[str, Any] = dict(machine=info, argv=sys.argv, rounds=rounds, duration=duration)

    def save() -> None:
        report.update(medians=medians(runs), runs=[asdict(r) for r in runs])
        out_path.write_text(json.dumps(report, indent=1, default=str))

    common.install_service_counters()
    common.warm_process(fx)
    try:
        if only & {"service", "mix", "http", "profile"}:
            t0 = time.perf_counter()
            servers_start(ctx, "http" in only)
            log(f"servers ready in {time.perf_counter() - t0:.1f}s; logs in {out_dir}")
        parts = [
            (
                "service",
                service_round,
                SERVICE + ([] if quick else [NO_REALTIME]),
                "1. service: one book, 8 threads: order_submit over Redis vs order_place",
            ),
            (
                "mix",
                service_round,
                MIX,
                f"1b. mix: the service with {CANCEL_P:.0%} of the requests cancels",
            ),
            ("http", http_round, HTTP, "2-3. http: POST /api/v1/trade, 8 clients"),
        ]
        for part, round_run, arrangements, title in parts:
            if part not in only:
                continue
            log(f"\n== {title} ==")
            for rep in range(rounds):
                k = rep % len(arrangements)  # each round in another order
                for arrangement in arrangements[k:] + arrangements[:k]:
                    runs.append(round_run(ctx, arrangement, rep, warmup, duration))
                    save()
        if "profile" in only:
            log("\n== 5. where the matcher's CPU goes (py-spy, service round) ==")
            report["profile"] = profile_matcher(ctx, duration if quick else 10.0, warmup)
            save()
        servers_stop(ctx)
        if "restart" in only:
            log(f"\n== 4. restart: the matcher role on a book of {resting:,} resting orders ==")
            if not ctx.env:
                env = procs.server_env(ctx.db_url, ctx.prefix, MATCHER_PREFIX=ctx.mprefix)
                ctx.env = dict(env, LOG_LEVEL="INFO")
            report["restart"] = dict(book=resting_book(fx, resting))
            report["restart"]["starts"] = restart_times(ctx, restarts)
            save()
    finally:
        servers_stop(ctx)
        for key in ctx.redis.scan_iter(f"{prefix}*"):
            ctx.redis.delete(key)

    rows = medians(runs)
    ratios = dict(
        service_matcher_over_embedded=ratio(runs, "service", "matcher", "embedded"),
        service_realtime_off_over_on=ratio(runs, "service", NO_REALTIME, "matcher"),
        mix_matcher_over_embedded=ratio(runs, "mix", *reversed(MIX)),
        http_matcher_over_embedded=ratio(runs, "http", "1 web + matcher", "embedded web"),
        http_two_webs_over_one=ratio(runs, "http", "2 web + matcher", "1 web + matcher"),
    )
    report["ratios"] = ratios
    save()
    if rows:
        log(f"\n== medians over {rounds} round(s) ==")
        for path in ("service", "mix", "http"):
            if any(r["path"] == path for r in rows):
                log(table(rows, path))
        log("ratios (median of the rounds' own): " + json.dumps(ratios))
    ok = all(r["verified"] and r["errors"] == 0 for r in rows)
    log(f"\nresults: {out_path}  ({time.perf_counter() - t_start:.0f}s)")
    log("verification: " + ("every acknowledged order found, invariants hold" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
