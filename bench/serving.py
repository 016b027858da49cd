"""Which server serves the order path's HTTP: `POST /api/v1/trade` through each
arrangement, the matcher role behind all of them, on PostgreSQL and Redis.

Arrangements, all started once and measured side by side, taking turns round by round
(each round in another order):

- **uvicorn (one port)**: the web role as it was, `python -m dexsite.serve`: uvicorn
  serving HTTP and WebSockets on one port, plain HTTP handed to Django's WSGI handler in
  8 threads through dexsite/asgi.py's bridge;
- **granian 1x8**, **granian 2x4**: granian serving `dexsite.wsgi:application` (WSGI),
  one worker process with 8 threads, two with 4 each;
- **nginx + granian 1x8**: the same granian behind nginx on deploy/nginx.conf (`/ws/`
  to the uvicorn process above, the rest to granian), as the Procfile's `router`, `http`
  and `ws` roles run;
- **nginx + uvicorn** (not in --quick): nginx on the same config in front of the
  uvicorn process for both: what the router costs either way.

Every arrangement hands its orders to one matcher (`manage.py runmatcher`, counted as
in bench/matcher.py: the engine books it builds after a round's warm-up are reported;
there should be none). The clients are
bench/orders.py's: 8 keep-alive aiohttp clients in this process, closed loop, GTC limits
of 1-40 lots around 64,000 from 64 funded PAPER traders on one book, half of them
crossing. Every round starts from the same state; after it every acknowledged order
must be in the database and `check_invariants()` empty.

Besides the order path (`order`), two of bench/http_floor.py's requests that never
reach the matcher, in rounds half as long (not in --quick): `refused` (the same
request with an unknown `timeInForce`: the token checked, the body parsed and
validated, 400) and `not-found` (`GET /api/v1/floor`, 404 from Django's URL resolver),
where the server's own cost is a larger share of the whole.

Figures: orders/s, p50/p99 latency, and CPU ms per order from /proc over the measured
window of the server's processes (`web`), nginx (`router`), the matcher, the PostgreSQL
backends of the bench database and the Redis server (its INFO cpu: the whole server,
whoever else uses it); their sum is the exchange's CPU per order. The clients' CPU and
the rest of the machine's load (in cores) are reported beside it.

Usage::

    python bench/serving.py [--quick] [--rounds R] [--duration S] [--warmup S]
        [--only NAME,NAME] [--kinds order,refused,not-found] [--db-url URL] [--redis-url URL] [--json PATH]

The database (default postgres://postgres@127.0.0.1:5432/dexsite_benchs) is created if
missing and migrated, its data overwritten; Redis (default redis://127.0.0.1:6379/7) is
used under prefixes of the run's own. nginx is Debian's (`apt-get install nginx`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import matcher as bm  # noqa: E402
from bench import orders as common  # noqa: E402
from bench.orders import HOST, log  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/dexsite_benchs"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"
CLIENTS = 8


def granian_argv(workers: int, threads: int) -> list[str]:
    """granian serving the WSGI application, as the Procfile's `http` role does (with
    `workers` processes of `threads` threads each); the port is `{port}`."""
    return [
        str(Path(sys.executable).parent / "granian"),
        "--interface",
        "wsgi",
        "--host",
        HOST,
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--no-ws",
        "--log-level",
        "warning",
        "dexsite.wsgi:application",
    ]


# Servers: argv templates ({port}); None: the Procfile's web role (trust.procs.WebServer).
SERVERS: dict[str, list[str] | None] = {
    "uvicorn": None,
    "granian 1x8": granian_argv(1, 8),
    "granian 2x4": granian_argv(2, 4),
}
# Arrangement: (server, behind nginx).
ARRANGEMENTS: dict[str, tuple[str, bool]] = {
    "uvicorn (one port)": ("uvicorn", False),
    "granian 1x8": ("granian 1x8", False),
    "granian 2x4": ("granian 2x4", False),
    "nginx + granian 1x8": ("granian 1x8", True),
    "nginx + uvicorn": ("uvicorn", True),
}
QUICK = ["uvicorn (one port)", "granian 1x8", "nginx + granian 1x8"]
# `order`: POST /api/v1/trade, the order path; `refused` and `not-found`: bench/http_floor.py's
# requests that never reach the matcher (a 400 from the API's validation, a 404 from
# Django's URL resolver), where the server's own cost is a larger share.
KINDS = ["order", "refused", "not-found"]
PARTS = ["web", "router", "matcher", "postgres", "redis"]


class Served:
    """One server process on a port of its own, in its own process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.port = common.free_port()
        self.argv = [a.format(port=self.port) for a in argv]
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("w") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 120) -> None:
        from trust.procs import SYMBOL

        url = f"http://{HOST}:{self.port}/api/v1/markets/{SYMBOL}/depth?mode=REAL&levels=1"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            common.process_group_stop(self.proc)


def servers_start(ctx: bm.Ctx, names: list[str]) -> dict[str, Any]:
    """The matcher, each server the arrangements `names` use, and nginx in front of
    granian 1x8 (`/ws/` to uvicorn) and of uvicorn alone, as needed; started together."""
    from trust import procs

    env = procs.server_env(ctx.db_url, ctx.prefix, MATCHER_PREFIX=ctx.mprefix, MATCHER="redis")
    ctx.env = dict(env, LOG_LEVEL="INFO")
    ctx.matcher = bm.matcher_class()(ctx.env, ctx.out_dir / "matcher.log")
    ctx.matcher.log_path.write_text("")
    ctx.matcher.start()
    wanted = {ARRANGEMENTS[n][0] for n in names}
    if any(ARRANGEMENTS[n][1] for n in names):
        wanted.add("uvicorn")  # the router's /ws/ upstream
    served: dict[str, Any] = {}
    for name in wanted:
        log_path = ctx.out_dir / f"{name.replace(' ', '-')}.log"
        argv = SERVERS[name]
        if argv is None:
            log_path.write_text("")
            served[name] = procs.WebServer(env, log_path)
        else:
            served[name] = Served(name, argv, env, log_path)
        served[name].start()
    routers = {}
    for n in names:
        server, routed = ARRANGEMENTS[n]
        if routed:
            prefix = ctx.out_dir / f"nginx-{server.replace(' ', '-')}"
            routers[n] = procs.Router(prefix, [served[server].port], [served["uvicorn"].port])
    ctx.matcher.wait_ready(120)
    for s in served.values():
        s.wait_ready(120)
    for r in routers.values():
        r.start()
    for r in routers.values():
        r.wait_ready(30)
    return {"served": served, "routers": routers}


def servers_stop(ctx: bm.Ctx, running: dict[str, Any]) -> None:
    for r in running.get("routers", {}).values():
        r.stop()
    for s in running.get("served", {}).values():
        s.stop()
    if ctx.matcher is not None:
        ctx.matcher.stop()


def http_round(
    ctx: bm.Ctx,
    running: dict[str, Any],
    arrangement: str,
    rep: int,
    warmup: float,
    duration: float,
    kind: str = "order",
) -> bm.Round:
    """One round of `kind` requests against `arrangement`: `order` (the order path) or
    one of bench/http_floor.py's requests that never reach the matcher."""
    from bench import http_floor

    fx = ctx.fx
    bm.reset(fx)
    server_name, routed = ARRANGEMENTS[arrangement]
    server = running["served"][server_name]
    groups = {"web": [server.pid], "matcher": [ctx.matcher.proc.pid]}
    port = server.port
    if routed:
        router = running["routers"][arrangement]
        groups["router"] = [router.pid]
        port = router.port
    meter = bm.Meter(ctx, groups)
    start = time.perf_counter() + 0.1
    t_measure, t_end = start + warmup, start + warmup + duration
    snaps: list = []
    seed = 1000 * rep + 9
    if kind == "order":
        clients = common._http_clients(
            [port], fx, fx.symbols[:1], CLIENTS, seed, t_measure, t_end, meter, snaps
        )
    else:
        clients = http_floor._clients(port, kind, fx, CLIENTS, seed, t_measure, t_end, meter, snaps)
    results = bm._run_async(clients)
    run = bm.Round(kind, arrangement, 1, CLIENTS, rep, duration)
    run.orders = sum(len(r.latencies) for r in results)
    cpu = meter.per_order(snaps[0], snaps[1], run.orders)
    run.redis_commands = meter.commands(snaps[0], snaps[1], run.orders)
    cpu["client"] = cpu.pop("this process")
    meter.close()
    run.builds = snaps[1]["builds"] - snaps[0]["builds"]
    run.batch_mean = meter.batch_mean(*snaps)
    bm._finish(run, results, cpu, PARTS)
    return run


def ratios(runs: list[bm.Round], base: str, kind: str) -> dict[str, dict[str, float]]:
    """Per arrangement, the median over rounds of its requests/s and CPU per request
    over `base`'s in the same round, for `kind` requests."""
    by_rep: dict[int, dict[str, bm.Round]] = collections.defaultdict(dict)
    runs = [r for r in runs if r.path == kind]
    for r in runs:
        by_rep[r.rep][r.arrangement] = r
    out = {}
    for name in {r.arrangement for r in runs} - {base}:
        pairs = [(d[name], d[base]) for d in by_rep.values() if name in d and base in d]
        if pairs:
            out[name] = {
                "orders_per_s": statistics.median(
                    a.orders_per_s / b.orders_per_s for a, b in pairs
                ),
                "exchange_cpu_ms": statistics.median(
                    a.exchange_cpu_ms / b.exchange_cpu_ms for a, b in pairs
                ),
                "server_cpu_ms": statistics.median(_server(a) / _server(b) for a, b in pairs),
            }
    return out


def _server(run: bm.Round) -> float:
    """CPU ms per order of the server and the router in front of it."""
    return run.cpu.get("web", 0.0) + run.cpu.get("router", 0.0)


def table(rows: list[dict[str, Any]], rel: dict[str, dict[str, float]], kind: str) -> str:
    unit = "order" if kind == "order" else "request"
    out = [
        f"| {kind}: arrangement | {unit}s/s | p50 ms | p99 ms | CPU ms/{unit}: "
        + " · ".join(PARTS)
        + " | exchange CPU ms/order | vs the first: orders/s · exchange CPU · web+router CPU"
        f" | client CPU ms/{unit}"
        " | other load (cores) | engine builds after warm-up | verified |",
        "|---|--:|--:|--:|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        if r["path"] != kind:
            continue
        cpu = " · ".join(f"{r['cpu'][k]:.2f}" if k in r["cpu"] else "-" for k in PARTS)
        v = rel.get(r["arrangement"])
        vs = (
            f"{v['orders_per_s']:.2f} · {v['exchange_cpu_ms']:.2f} · {v['server_cpu_ms']:.2f}"
            if v
            else "1 · 1 · 1"
        )
        ok = r["verified"] and r["errors"] == 0
        out.append(
            f"| {r['arrangement']} | {r['orders_per_s']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {cpu} | {r['exchange_cpu_ms']:.2f} | {vs} | "
            f"{r['cpu'].get('client', 0):.2f} | {r['cpu'].get('other cores', 0):.2f} | "
            f"{r['builds']} | {'yes' if ok else 'NO'} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round of three; < 1 min")
    ap.add_argument("--rounds", type=int, help="rounds of each arrangement (3)")
    ap.add_argument("--duration", type=float, help="measured seconds per round (8)")
    ap.add_argument("--warmup", type=float, help="unmeasured seconds before each (2)")
    ap.add_argument("--only", help=f"comma list of {list(ARRANGEMENTS)}")
    ap.add_argument(
        "--kinds", help=f"comma list of {KINDS}: requests measured (all; --quick: order)"
    )
    ap.add_argument("--db-url", default=os.environ.get("BENCH_SERVING_DATABASE_URL", DEFAULT_DB))
    ap.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    ap.add_argument("--json", type=Path, help="results file (bench/results/serving-*.json)")
    args = ap.parse_args(argv)

    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    duration = args.duration or (1.5 if quick else 8.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    names = args.only.split(",") if args.only else (QUICK if quick else list(ARRANGEMENTS))
    kinds = args.kinds.split(",") if args.kinds else (["order"] if quick else KINDS)
    if set(kinds) - set(KINDS):
        ap.error(f"unknown kinds {sorted(set(kinds) - set(KINDS))}; known: {KINDS}")
    unknown = set(names) - set(ARRANGEMENTS)
    if unknown:
        ap.error(f"unknown arrangements {sorted(unknown)}; known: {list(ARRANGEMENTS)}")
    out_dir = Path(tempfile.gettempdir()) / f"dexsite-benchs{os.getpid()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.json or results_dir / time.strftime("serving-%Y%m%d-%H%M%S.json")

    t_start = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    prefix = f"benchs{os.getpid()}"
    os.environ.update(
        REDIS_URL=args.redis_url,
        MATCHER_PREFIX=f"{prefix}m",
        CHANNEL_LAYER_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
    )
    common.setup_django(args.db_url)
    import redis

    from trust import procs

    fx = common.make_fixture(64)
    procs.market_create()  # the market the servers' readiness check reads
    ctx = bm.Ctx(
        fx, args.db_url, prefix, f"{prefix}m", redis.Redis.from_url(args.redis_url), out_dir, {}
    )
    info = common.machine()
    info.update(git=common.git_state(), redis=args.redis_url, load1=os.getloadavg()[0])
    for pkg in ("granian", "uvicorn"):
        info[pkg] = _version(pkg)
    info["nginx"] = _nginx_version()
    log(f"machine: {json.dumps(info)}")
    log(f"rounds: {rounds} x ({warmup}s warm-up + {duration}s measured), {CLIENTS} clients")
    runs: list[bm.Round] = []
    report: dict[str, Any] = dict(machine=info, argv=sys.argv, rounds=rounds, duration=duration)

    def save() -> None:
        report.update(medians=bm.medians(runs), runs=[asdict(r) for r in runs])
        out_path.write_text(json.dumps(report, indent=1, default=str))

    common.install_service_counters()
    common.warm_process(fx)
    running: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        running = servers_start(ctx, names)
        log(f"servers ready in {time.perf_counter() - t0:.1f}s; logs in {out_dir}")
        for rep in range(rounds):
            log(f"\n== round {rep + 1} of {rounds}, {CLIENTS} clients ==")
            k = rep % len(names)
            for kind in kinds:
                # The requests that never reach the matcher: shorter rounds do.
                seconds = duration if kind == "order" else max(duration / 2, 1.0)
                for arrangement in names[k:] + names[:k]:
                    runs.append(http_round(ctx, running, arrangement, rep, warmup, seconds, kind))
                    save()
    finally:
        servers_stop(ctx, running)
        for key in ctx.redis.scan_iter(f"{prefix}*"):
            ctx.redis.delete(key)

    rows = sorted(bm.medians(runs), key=lambda r: names.index(r["arrangement"]))
    base = names[0]
    rel = {kind: ratios(runs, base, kind) for kind in kinds}
    report["ratios"] = {"base": base, **rel}
    save()
    log(f"\n== medians over {rounds} round(s) ==")
    for kind in kinds:
        log(table(rows, rel[kind], kind) + "\n")
    ok = all(r["verified"] and r["errors"] == 0 for r in rows)
    log(f"\nresults: {out_path}  ({time.perf_counter() - t_start:.0f}s)")
    log("verification: " + ("every acknowledged order found, invariants hold" if ok else "FAILED"))
    return 0 if ok else 1


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _nginx_version() -> str | None:
    try:
        from trust.procs import nginx_path

        r = subprocess.run(
            [nginx_path() or "nginx", "-v"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return (r.stderr or r.stdout).strip().rsplit("/", 1)[-1] or None


if __name__ == "__main__":
    sys.exit(main())
