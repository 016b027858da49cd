"""Soak: a web process under a constant arrival rate for ten minutes.

The load generator is an open model: request i is due at t0 + i / rate whatever
happened to the ones before it, each is sent from its own task when due, and its
latency runs from that scheduled time, not from when it actually left. A server that
stalls therefore shows the stall in the latency of every request that was due during
it, instead of the generator quietly sending fewer (coordinated omission). Locust's
`constant_throughput` is a closed model per user (a user waits for its answer before
its next request), so it would not do; this is plain asyncio + aiohttp.

First the peak is measured with closed-loop clients (16 clients, each sending its next
request when the last one is answered), then the soak runs at 70 % of it (or at
`--rate`). The peak is taken after a warm-up (30 s), as the median of 5 s windows over
30 s: on a young book the same clients got 1.5-1.8 times what they got once each trader
had orders resting (fewer cancels, so more of the cheap reads; a shallower book), and
70 % of such a peak was more than the site sustains (docs/reliability.md, the soak). The mix: 50 % order placements (GTC limits around a fixed mid, half of them
crossing), 20 % cancels of a trader's oldest open order, 30 % reads (depth, open
orders, balances), from 16 funded traders. About a quarter of the requests leave an
order resting, more than the cancels take away, so a trader that already has
`--open-per-trader` (20) orders resting cancels its oldest instead of placing one: the
book stays at most 16 x 20 orders, and a long run measures the server, not an ever
larger book (0: no bound). Errors are transport failures, timeouts,
5xx and any 4xx other than ORDER_NOT_OPEN (a cancel that lost the race with a fill).
The web process is the site as the Procfile serves it (the `http` and `ws` roles behind
the router); the resident memory of all three (with children) is sampled every 10 s. The invariant checker runs at the end.

Usage::

    python trust/soak.py [--quick] [--duration S] [--rate R] [--peak-warmup S]
        [--peak-seconds S] [--sample-every S] [--open-per-trader N] [--db-url URL]
        [--json PATH] [--keep-db]

`--quick` runs 20 s (after a 3 s warm-up and a 5 s peak measurement). The database is `--db-url`, else
`$TRUST_DATABASE_URL`, else postgres://postgres@127.0.0.1:5432/dexsite_soak: dropped,
created and migrated by the script, dropped at the end. Redis is `$REDIS_URL` (default
redis://127.0.0.1:6379/0), with a channel-layer prefix of the run's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trust import procs  # noqa: E402
from trust.chaos import order_body, random_order, session_for  # noqa: E402
from trust.procs import SYMBOL, log, percentile  # noqa: E402

MODE = "REAL"
TRADERS = 16
# Orders a trader keeps resting at most: a placement beyond it becomes a cancel.
OPEN_PER_TRADER = 20
EXPECTED_REJECTIONS = {"ORDER_NOT_OPEN"}
# The peak: closed-loop clients for PEAK_WARMUP seconds, not counted (the book reaches
# the mix's steady state), then PEAK_SECONDS in windows of PEAK_WINDOW seconds each.
PEAK_WARMUP = 30.0
PEAK_SECONDS = 30.0
PEAK_WINDOW = 5.0


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"place": [], "cancel": [], "read": []}
    )
    errors: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    acked: list[int] = field(default_factory=list)
    window: deque = field(default_factory=lambda: deque(maxlen=20000))  # (done, latency)
    sent: int = 0
    done: int = 0

    def all_latencies(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]


class Mix:
    """Chooses the next request and keeps each trader's open orders, oldest first."""

    def __init__(
        self, base: str, tokens: list[str], seed: int, open_per_trader: int = OPEN_PER_TRADER
    ) -> None:
        self.base = base
        self.tokens = tokens
        self.rng = random.Random(seed)
        self.open_per_trader = open_per_trader
        self.open: list[deque[int]] = [deque() for _ in tokens]
        self.reads = [
            f"{base}/api/v1/markets/{SYMBOL}/depth?mode={MODE}&levels=50",
            f"{base}/api/v1/orders?mode={MODE}&status=open",
            f"{base}/api/v1/balances?mode={MODE}",
        ]

    def next(self) -> tuple[str, str, str, int, dict[str, Any] | None]:
        """(kind, method, url, trader index, body)."""
        rng = self.rng
        t = rng.randrange(len(self.tokens))
        r = rng.random()
        full = 0 < self.open_per_trader <= len(self.open[t])
        if r < 0.5 and not full:
            side, price, lots = random_order(rng)
            return "place", "POST", f"{self.base}/api/v1/trade", t, order_body(side, price, lots)
        if r < 0.7 and self.open[t]:
            oid = self.open[t].popleft()
            return "cancel", "DELETE", f"{self.base}/api/v1/orders/{oid}", t, None
        return "read", "GET", rng.choice(self.reads), t, None

    def answered(self, kind: str, t: int, status: int, payload: Any, res: Results) -> None:
        if status == 0 or status >= 500:
            res.errors[f"{kind} {status or 'no answer'}"] += 1
            return
        if status >= 400:
            code = ""
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                code = payload["error"].get("code", "")
            bucket = res.rejected if code in EXPECTED_REJECTIONS else res.errors
            bucket[f"{kind} {code or status}"] += 1
            return
        if kind == "place":
            res.acked.append(payload["id"])
            if payload["status"] in ("NEW", "PARTIALLY_FILLED"):
                self.open[t].append(payload["id"])


async def _send(
    session: Any, method: str, url: str, token: str, body: dict[str, Any] | None
) -> tuple[int, Any]:
    import aiohttp

    try:
        async with session.request(
            method, url, json=body, headers={"Authorization": f"Token {token}"}
        ) as resp:
            text = await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError):
        return 0, None
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, None


async def measure_peak(
    base: str,
    tokens: list[str],
    warmup: float,
    seconds: float,
    clients: int,
    open_per_trader: int,
    window: float = PEAK_WINDOW,
) -> tuple[float, list[float]]:
    """Requests per second that closed-loop clients get through the same mix: (the
    median of the windows, each `window` seconds' rate). The first `warmup` seconds
    are not counted: they bring the book to the mix's steady state."""
    mix = Mix(base, tokens, 1, open_per_trader)
    res = Results()
    perf = time.perf_counter
    t_start = perf()
    t_measure = t_start + warmup
    t_end = t_measure + seconds
    windows: list[float] = []
    async with session_for(clients) as session:

        async def client() -> None:
            while perf() < t_end:
                kind, method, url, t, body = mix.next()
                status, payload = await _send(session, method, url, tokens[t], body)
                mix.answered(kind, t, status, payload, res)
                res.done += 1

        async def windows_count() -> None:
            n = max(1, round(seconds / window))
            await asyncio.sleep(max(0.0, t_measure - perf()))
            done, at = res.done, perf()
            for k in range(1, n + 1):
                await asyncio.sleep(max(0.0, t_measure + k * seconds / n - perf()))
                now = perf()
                windows.append((res.done - done) / (now - at))
                done, at = res.done, now

        await asyncio.gather(windows_count(), *(client() for _ in range(clients)))
    if res.errors:
        log(f"  errors while measuring the peak: {dict(res.errors)}")
    log(f"  {window:.0f}s windows (requests/s): {' '.join(f'{w:.0f}' for w in windows)}")
    return peak_of(windows), windows


def peak_of(windows: list[float]) -> float:
    """The median window: one stall (or one lucky window) does not move it."""
    return statistics.median(windows)


async def open_model(
    web: procs.Site,
    tokens: list[str],
    rate: float,
    duration: float,
    sample_every: float,
    open_per_trader: int,
) -> tuple[Results, list[tuple[float, int]], list[float], float]:
    """Requests scheduled at fixed intervals; latency from the scheduled send time."""
    mix = Mix(web.url, tokens, 2, open_per_trader)
    res = Results()
    rss: list[tuple[float, int]] = []
    load: list[float] = []
    perf = time.perf_counter
    interval = 1.0 / rate
    total = int(duration * rate)
    inflight: set[asyncio.Task] = set()
    async with session_for(1024) as session:

        async def one(kind: str, method: str, url: str, t: int, body: Any, due: float) -> None:
            status, payload = await _send(session, method, url, tokens[t], body)
            now = perf()
            res.latencies[kind].append(now - due)
            res.window.append((now, now - due))
            res.done += 1
            mix.answered(kind, t, status, payload, res)

        async def sampler(t0: float) -> None:
            while True:
                rss.append((perf() - t0, web.rss_bytes()))
                load.append(os.getloadavg()[0])
                lat = [x for done, x in res.window if done >= perf() - sample_every]
                recent = (
                    f"p50 {percentile(lat, 50) * 1000:.1f} ms p99 "
                    f"{percentile(lat, 99) * 1000:.1f} ms"
                    if lat
                    else "-"
                )
                log(
                    f"  {perf() - t0:6.0f}s: sent {res.sent}, answered {res.done}, errors "
                    f"{sum(res.errors.values())}; last {sample_every:.0f}s {recent}; "
                    f"RSS {rss[-1][1] / 2**20:.1f} MiB"
                )
                await asyncio.sleep(sample_every)

        t0 = perf()
        sampling = asyncio.create_task(sampler(t0))
        for i in range(total):
            due = t0 + i * interval
            delay = due - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            kind, method, url, t, body = mix.next()
            task = asyncio.create_task(one(kind, method, url, t, body, due))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            res.sent += 1
        if inflight:
            await asyncio.wait(inflight, timeout=60)
        elapsed = perf() - t0
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        rss.append((elapsed, web.rss_bytes()))
    return res, rss, load, elapsed


def slope_mib_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    xs = [t / 60 for t, _ in samples]
    ys = [b / 2**20 for _, b in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def run_soak(
    db_url: str,
    prefix: str,
    duration: float,
    rate: float | None,
    peak_seconds: float,
    sample_every: float,
    out_dir: Path,
    open_per_trader: int = OPEN_PER_TRADER,
    peak_warmup: float = PEAK_WARMUP,
) -> dict[str, Any]:
    procs.market_create()
    tokens = [
        procs.trader_create(f"trust-soak{i}", Decimal("100000000"), MODE)[1] for i in range(TRADERS)
    ]
    env = procs.server_env(db_url, prefix)
    with procs.servers(env, out_dir, 1, "soak") as (web,):
        log(f"  web process {web.url} ({procs.procfile_web()})")
        peak, peak_windows = None, []
        if rate is None:
            log(
                f"\n== peak: 16 closed-loop clients, {peak_warmup:.0f}s warm-up, "
                f"then {peak_seconds:.0f}s =="
            )
            peak, peak_windows = asyncio.run(
                measure_peak(web.url, tokens, peak_warmup, peak_seconds, 16, open_per_trader)
            )
            rate = round(0.7 * peak, 1)
            log(f"  peak {peak:.1f} requests/s; soak rate 70% = {rate}/s")
        log(f"\n== soak: {rate}/s for {duration:.0f}s, open model ==")
        res, rss, load, elapsed = asyncio.run(
            open_model(web, tokens, rate, duration, sample_every, open_per_trader)
        )
        logged_500 = web.log_count("Internal Server Error")
    from trading.models import OPEN_STATUSES, Order

    open_orders = Order.objects.filter(status__in=OPEN_STATUSES).count()
    fill_problems = procs.fills_consistent()
    problems = procs.invariants(acknowledged=res.acked)
    cmd_rc, cmd_out = procs.invariants_command(db_url, prefix, res.acked)
    lat = res.all_latencies()

    def ms(values: list[float], q: float) -> float:
        return round(percentile(values, q) * 1000, 2)

    mib = [b / 2**20 for _, b in rss]
    figures = {
        "duration_s": round(elapsed, 1),
        "peak_requests_per_s": round(peak, 1) if peak else None,
        "peak_windows_per_s": [round(w, 1) for w in peak_windows],
        "rate_per_s": rate,
        "open_per_trader": open_per_trader,
        "requests": res.sent,
        "answered": res.done,
        "achieved_per_s": round(res.done / elapsed, 1),
        "p50_ms": ms(lat, 50),
        "p99_ms": ms(lat, 99),
        "p99_9_ms": ms(lat, 99.9),
        "max_ms": round(max(lat) * 1000, 2) if lat else None,
        "by_kind": {
            k: {"n": len(v), "p50_ms": ms(v, 50), "p99_ms": ms(v, 99), "p99_9_ms": ms(v, 99.9)}
            for k, v in res.latencies.items()
        },
        "errors": sum(res.errors.values()),
        "errors_detail": dict(res.errors),
        "expected_rejections": dict(res.rejected),
        "server_logged_errors": logged_500,
        "orders_acknowledged": len(res.acked),
        "open_orders_end": open_orders,
        "rss_first_mib": round(mib[0], 1),
        "rss_last_mib": round(mib[-1], 1),
        "rss_max_mib": round(max(mib), 1),
        "rss_slope_mib_per_min": round(slope_mib_per_min(rss), 3),
        "machine_load1_mean": round(sum(load) / len(load), 2) if load else None,
        "cpus": os.cpu_count(),
        "rss_samples": [[round(t, 1), round(b / 2**20, 1)] for t, b in rss],
        "fill_problems": fill_problems,
        "invariant_violations": problems,
        "check_invariants_command": {"exit": cmd_rc, "output": cmd_out[-2000:]},
    }
    figures["passed"] = bool(
        figures["errors"] == 0
        and logged_500 == 0
        and res.done == res.sent
        and not fill_problems
        and not problems
        and cmd_rc == 0
    )
    for p in fill_problems + problems:
        log(f"  PROBLEM: {p}")
    return figures


def _table(f: dict[str, Any]) -> str:
    return procs.figures_table(
        "scenario 8: soak",
        [
            ("duration (s)", f["duration_s"]),
            ("peak, closed loop (requests/s)", f["peak_requests_per_s"] or "-"),
            ("arrival rate (requests/s)", f["rate_per_s"]),
            ("requests", f["requests"]),
            ("latency p50 (ms)", f["p50_ms"]),
            ("latency p99 (ms)", f["p99_ms"]),
            ("latency p99.9 (ms)", f["p99_9_ms"]),
            ("latency max (ms)", f["max_ms"]),
            ("errors", f["errors"]),
            ("machine load (1 min mean, cores)", f"{f['machine_load1_mean']} ({f['cpus']})"),
            ("expected rejections", f["expected_rejections"]),
            (
                "RSS first / last / max (MiB)",
                "{} / {} / {}".format(f["rss_first_mib"], f["rss_last_mib"], f["rss_max_mib"]),
            ),
            ("RSS slope (MiB/min)", f["rss_slope_mib_per_min"]),
            ("invariant violations", len(f["invariant_violations"])),
            ("passed", f["passed"]),
        ],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 s soak after a 5 s peak")
    ap.add_argument("--duration", type=float, help="soak seconds (600; quick 20)")
    ap.add_argument("--rate", type=float, help="requests/s (default: 70%% of the peak)")
    ap.add_argument(
        "--peak-warmup", type=float, help=f"seconds before the peak ({PEAK_WARMUP:.0f}; quick 3)"
    )
    ap.add_argument(
        "--peak-seconds", type=float, help=f"peak measurement ({PEAK_SECONDS:.0f}; quick 5)"
    )
    ap.add_argument("--sample-every", type=float, help="RSS sample period (10; quick 2)")
    ap.add_argument(
        "--open-per-trader",
        type=int,
        default=OPEN_PER_TRADER,
        help=f"orders a trader keeps resting at most ({OPEN_PER_TRADER}; 0: no bound)",
    )
    ap.add_argument("--db-url", help="the run's own database (dropped and created)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-db", action="store_true")
    args = ap.parse_args(argv)
    quick = args.quick
    duration = args.duration or (20.0 if quick else 600.0)
    peak_warmup = (
        args.peak_warmup if args.peak_warmup is not None else (3.0 if quick else PEAK_WARMUP)
    )
    peak_seconds = args.peak_seconds or (5.0 if quick else PEAK_SECONDS)
    sample_every = args.sample_every or (2.0 if quick else 10.0)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    db_url = args.db_url or procs.database_url("dexsite_soak")
    prefix = f"trustsoak{os.getpid()}"
    out_dir = procs.results_dir()
    procs.database_create(db_url)
    try:
        procs.setup_django(db_url, prefix)
        log(f"database {db_url}, channel prefix {prefix}, logs in {out_dir}")
        figures = run_soak(
            db_url,
            prefix,
            duration,
            args.rate,
            peak_seconds,
            sample_every,
            out_dir,
            args.open_per_trader,
            peak_warmup,
        )
    finally:
        from django.db import connections

        with contextlib.suppress(Exception):
            connections.close_all()
        if not args.keep_db:
            procs.database_drop(db_url)
    log("\n" + _table(figures))
    procs.write_json(
        args.json,
        {"soak": figures, "seconds": round(time.monotonic() - t_start, 1), "argv": sys.argv},
    )
    log(f"\n{'PASSED' if figures['passed'] else 'FAILED'} in {time.monotonic() - t_start:.0f}s")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
