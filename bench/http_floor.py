"""How many requests a second the HTTP stack itself allows, below the order service:
the floor under `POST /api/v1/trade`.

One run serves the exchange as the Procfile's web role does (bench/orders.py's `web`:
daphne on uvloop, HTTP in worker threads) and drives it with the closed-loop client of
bench/orders.py (aiohttp, `--clients` connections, each sending its next request when
the last is answered), with four kinds of request, alternately in every repetition:

- ``order``: `POST /api/v1/trade`, a valid GTC limit (persisted, half of them crossing);
- ``refused``: the same request with an unknown ``timeInForce``: the token is checked,
  the body parsed and validated, and a 400 answered; the order service is never called;
- ``not-found``: `GET /api/v1/floor`, answered 404 by Django's URL resolver: the server,
  the thread hand-over and Django's middleware only, no REST framework, no database;
- ``bare``: the same server serving `bench/asgi_constant.py`, a constant answer of
  about an order's size: the server alone.

For each: requests/s, p50/p99 latency, and CPU per request of the server, PostgreSQL
and the client (which shares the machine). Medians over the repetitions, and each as a
ratio to ``order`` of the same repetition.

Usage::

    python bench/http_floor.py [--clients 8] [--repeat 3] [--duration 6] [--warmup 2]

The database is ``$BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/dexsite_bench), created and migrated if missing;
its data is overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import orders as ob  # noqa: E402

KINDS = ["order", "refused", "not-found", "bare"]
ob.SERVERS["bare"] = [*ob._WEB[:-1], "bench.asgi_constant:application"]


def _request(kind: str, fx: ob.Fixture, rng: random.Random) -> tuple[str, str, bytes, dict]:
    """(method, path, body, headers) of the next request of `kind`."""
    ti, symbol, side, price, qty = ob.next_order(rng, len(fx.traders), fx.symbols[:1])
    headers = {"Authorization": f"Token {fx.tokens[ti]}", "Content-Type": "application/json"}
    if kind == "not-found":
        return "GET", "/api/v1/floor", b"", headers
    order = {
        "market": symbol,
        "mode": ob.MODE,
        "side": side,
        "type": "LIMIT",
        "price": str(price),
        "qty": str(qty),
        "timeInForce": "GTC" if kind in ("order", "bare") else "NEVER",
    }
    return "POST", "/api/v1/trade", json.dumps(order).encode(), headers


async def _clients(
    port: int,
    kind: str,
    fx: ob.Fixture,
    clients: int,
    seed: int,
    t_measure: float,
    t_end: float,
    meter: ob.CpuMeter,
    snaps: list,
) -> list[ob.ClientResult]:
    import aiohttp

    expected = {"order": 201, "refused": 400, "not-found": 404, "bare": 200}[kind]
    perf = time.perf_counter
    conn = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:

        async def client(i: int) -> ob.ClientResult:
            rng = random.Random(seed + i)
            out = ob.ClientResult()
            while perf() < t_end:
                method, path, body, headers = _request(kind, fx, rng)
                t0 = perf()
                url = f"http://{ob.HOST}:{port}{path}"
                async with session.request(method, url, data=body, headers=headers) as resp:
                    status = resp.status
                    payload = await resp.read()
                t1 = perf()
                if status != expected:
                    out.errors[f"{status} {payload[:80]!r}"] += 1
                    continue
                if kind == "order":
                    out.acked.append(json.loads(payload)["id"])
                if t_measure <= t1 <= t_end:
                    out.latencies.append(t1 - t0)
            return out

        clients_run = [client(i) for i in range(clients)]
        return await ob.gathered(clients_run, meter, snaps, t_measure, t_end)


def run(
    server: ob.Server,
    kind: str,
    fx: ob.Fixture,
    clients: int,
    rep: int,
    warmup: float,
    duration: float,
) -> ob.Run:
    import uvloop

    ob.reset_data(fx)
    start = time.perf_counter() + 0.1
    t_measure, t_end = start + warmup, start + warmup + duration
    meter = ob.CpuMeter(server.db_url, server.proc.pid)
    snaps: list = []
    results = uvloop.run(
        _clients(server.port, kind, fx, clients, 1000 * rep, t_measure, t_end, meter, snaps)
    )
    result = ob.Run("http", kind, 1, clients, rep, duration)
    ob.summarize(result, results)
    meter.apply(result, *snaps)
    meter.close()
    if kind == "order":
        ob.verify(result, results)
    ob.log(
        f"  {kind:<10} rep={rep}: {result.orders_per_s:6.0f}/s p50={result.p50_ms:6.2f}ms "
        f"p99={result.p99_ms:6.2f}ms errors={result.errors or 0}; cpu/request: server "
        f"{result.app_cpu_ms:.2f}ms db {result.db_cpu_ms:.2f}ms client "
        f"{result.client_cpu_ms:.2f}ms; other load {result.other_cores:.2f} cores"
        + (f"; acked={result.acked} in_db={result.in_db}" if kind == "order" else "")
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma list of {KINDS}")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    db_url = os.environ.get("BENCH_DATABASE_URL", ob.DEFAULT_DB)
    ob.setup_django(db_url)
    fx = ob.make_fixture(64)
    info = ob.machine()
    info["git"] = ob.git_state()
    ob.log(f"machine: {json.dumps(info)}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    from django.db import connections

    connections.close_all()
    servers = {"web": ob.Server("web", db_url, out_dir)}
    if "bare" in kinds:
        servers["bare"] = ob.Server("bare", db_url, out_dir)
    runs: list[ob.Run] = []
    try:
        for s in servers.values():
            s.wait_ready()
        for rep in range(args.repeat):
            for kind in kinds:
                server = servers["bare" if kind == "bare" else "web"]
                runs.append(run(server, kind, fx, args.clients, rep, args.warmup, args.duration))
    finally:
        for s in servers.values():
            s.stop()

    def med(kind: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs if r.arrangement == kind)

    ob.log(f"\n== medians over {args.repeat} repetition(s), {args.clients} clients ==")
    ob.log("| request | requests/s | of order | p50 ms | p99 ms | server ms | db ms | client ms |")
    ob.log("|---|--:|--:|--:|--:|--:|--:|--:|")
    rows = []
    for kind in kinds:
        ratios = [
            r.orders_per_s / o.orders_per_s
            for r in runs
            for o in runs
            if r.arrangement == kind and o.arrangement == "order" and o.rep == r.rep
        ]
        row = {
            "request": kind,
            "per_s": med(kind, "orders_per_s"),
            "ratio_to_order": statistics.median(ratios) if ratios else None,
            "p50_ms": med(kind, "p50_ms"),
            "p99_ms": med(kind, "p99_ms"),
            "server_cpu_ms": med(kind, "app_cpu_ms"),
            "db_cpu_ms": med(kind, "db_cpu_ms"),
            "client_cpu_ms": med(kind, "client_cpu_ms"),
        }
        rows.append(row)
        ratio = f"{row['ratio_to_order']:.2f}" if ratios else "-"
        ob.log(
            f"| {kind} | {row['per_s']:.0f} | {ratio} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['server_cpu_ms']:.2f} | {row['db_cpu_ms']:.2f} | "
            f"{row['client_cpu_ms']:.2f} |"
        )
    ok = all(r.in_db == r.acked and not r.invariants and not r.errors for r in runs)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": info, "medians": rows, "runs": [vars(r) for r in runs]},
                indent=1,
                default=str,
            )
        )
    ob.log("verification: " + ("every request answered as expected" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
