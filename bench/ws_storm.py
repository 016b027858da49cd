"""A reconnect storm: N sockets opening at once, each subscribing to one market, against
the `ws` role and, as the floor, the bare ``websockets`` server of bench/ws_baseline.py,
alternately in the same run.

What a deploy or a network blip does to a venue: every client reconnects and
resubscribes within a second or two. A socket counts as open once it has its
`subscribed` (the exchange's also brings the book's snapshot behind it; the bare server
greets every socket so). Reported per arrangement, medians over the rounds: sockets
opened a second, each socket's time from its first byte to `subscribed` (p50, p99), the
server's CPU per socket (opening, subscribing and closing, from /proc), and errors.

    python bench/ws_storm.py [--sockets 1000] [--rounds 3] [--concurrency 500]
        [--also PATH_OF_ANOTHER_CHECKOUT]

PostgreSQL (a database of its own) and Redis (db 14 by default) as `bench/orders.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import orders as common  # noqa: E402

SYMBOL = "WSBENCH-PERP"  # the bare server's channel is market.WSBENCH-PERP


def ws_role(port: int, db_url: str, redis_url: str, root: Path = ROOT) -> subprocess.Popen:
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        REDIS_URL=redis_url,
        MATCHER="redis",
        # No per-address limit: every socket comes from this machine.
        WS_MAX_SOCKETS_PER_ADDRESS="0",
        CHANNEL_LAYER_PREFIX=f"storm{uuid.uuid4().hex[:8]}",
        **common.SERVER_ENV,
    )
    argv = [sys.executable, "-m", "dexsite.serve", "-b", common.HOST, "-p", str(port)]
    return subprocess.Popen(
        [*argv, "dexsite.asgi:application"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def bare_server(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "ws_baseline.py"), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def wait_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(common.HOST, port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}") from None
            await asyncio.sleep(0.2)


async def storm(url: str, sockets: int, concurrency: int) -> dict:
    """Open `sockets` at once (at most `concurrency` handshakes in flight), each
    subscribing; close them all once every one is open."""
    import websockets

    gate = asyncio.Semaphore(concurrency)
    took: list[float] = []
    opened: list = []
    errors = 0
    subscribe = json.dumps({"action": "subscribe", "channel": f"market.{SYMBOL}"})

    async def one() -> None:
        nonlocal errors
        async with gate:
            t0 = time.perf_counter()
            try:
                ws = await websockets.connect(url, open_timeout=120, max_size=2**22)
                await ws.send(subscribe)
                while json.loads(await asyncio.wait_for(ws.recv(), 120))["type"] != "subscribed":
                    pass
            except (TimeoutError, OSError, websockets.WebSocketException):
                errors += 1
                return
            took.append(time.perf_counter() - t0)
            opened.append(ws)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(sockets)))
    wall = time.perf_counter() - t0
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    took.sort()
    return {
        "per_second": len(took) / wall,
        "p50_ms": 1000 * took[len(took) // 2] if took else float("nan"),
        "p99_ms": 1000 * took[min(len(took) - 1, int(len(took) * 0.99))] if took else float("nan"),
        "errors": errors,
    }


async def run(args: argparse.Namespace) -> list[dict]:
    ports = {"ws role": common.free_port(), "bare websockets": common.free_port()}
    procs = {
        "ws role": ws_role(ports["ws role"], args.db_url, args.redis_url),
        "bare websockets": bare_server(ports["bare websockets"]),
    }
    for root in args.also:
        name = f"ws role at {_commit(root)}"
        ports[name] = common.free_port()
        procs[name] = ws_role(ports[name], args.db_url, args.redis_url, root)
    try:
        for port in ports.values():
            await wait_listening(port)
        rounds: dict[str, list[dict]] = {name: [] for name in procs}
        for n in range(args.rounds):
            for name, proc in procs.items():
                cpu0 = common._pid_cpu(proc.pid) or 0.0
                url = f"ws://{common.HOST}:{ports[name]}/ws/"
                result = await storm(url, args.sockets, args.concurrency)
                # The closes are the server's work too: let them finish.
                await asyncio.sleep(args.settle)
                cpu = (common._pid_cpu(proc.pid) or 0.0) - cpu0
                result["cpu_ms"] = 1000 * cpu / args.sockets
                rounds[name].append(result)
                common.log(
                    f"round {n + 1} {name}: {result['per_second']:.0f}/s, p50 "
                    f"{result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, "
                    f"{result['cpu_ms']:.2f} ms CPU a socket, {result['errors']} errors"
                )
    finally:
        for proc in procs.values():
            common.process_group_stop(proc)
    rows = []
    for name, results in rounds.items():
        row = {"arrangement": name}
        for key in ("per_second", "p50_ms", "p99_ms", "cpu_ms"):
            row[key] = statistics.median(r[key] for r in results)
        row["errors"] = sum(r["errors"] for r in results)
        rows.append(row)
    return rows


def _commit(root: Path) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    )
    return out.stdout.strip() or str(root)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sockets", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=500, help="handshakes in flight at most")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after the closes")
    p.add_argument("--db-url", default="postgres://postgres@127.0.0.1:5432/dexsite_bench_storm")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    p.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="the ws role of another checkout too (an earlier commit, say), same database",
    )
    args = p.parse_args(argv)
    common.setup_django(args.db_url)
    common.perp_create(SYMBOL)
    from django.db import connection

    connection.close()
    rows = asyncio.run(run(args))
    base = next(r for r in rows if r["arrangement"] == "bare websockets")
    print(f"\n{args.sockets} sockets at once, {args.concurrency} handshakes in flight at most,")
    print(f"medians of {args.rounds} rounds ({common.git_state()})\n")
    print("| arrangement | opened/s | ÷ bare | p50 ms | p99 ms | server CPU ms a socket | errors |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(
            f"| {r['arrangement']} | {r['per_second']:.0f} | "
            f"{r['per_second'] / base['per_second']:.2f}x | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['cpu_ms']:.2f} | {r['errors']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
