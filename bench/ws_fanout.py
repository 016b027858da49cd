"""WebSocket fan-out latency and idle capacity of the `/ws/` endpoint.

Servers. ``web`` is the exchange's own web role, what the Procfile runs
(``python -m dexsite.serve -b HOST -p PORT dexsite.asgi:application``, whatever server
that is; from --server-root's tree, so an A/B against an older tree runs that tree's
web role); ``daphne`` (``daphne dexsite.asgi:application``) and its variants are
comparisons serving the same application; ``baseline`` is a bare ``websockets`` server.

Fan-out. N sockets (default 1,000 and 5,000) subscribe to one market channel on a
server (daphne for each --layers scenario, each --variants entry on its server, Redis
channel layer) and a separate publisher process sends 20 trades/s for a fixed duration
through the exchange's own path, ``realtime.broadcast.publish([message("trade",
channel, body)])`` (bench/ws_publisher.py). Per message and per socket: latency =
receive time - publish time (the message's ``ts``, to the microsecond), reported as
p50/p99/max, plus deliveries/s and missing messages. Both channel layers run in the
same invocation: the exchange's ``dexsite.channel_layer.PubSubChannelLayer``
(channels-redis's pub/sub layer and what the publishing thread of a process without a
server needs: the default) and ``channels_redis.core.RedisChannelLayer``
(CHANNEL_LAYER_BACKEND). The same clients
and N against a bare ``websockets`` broadcast server (bench/ws_baseline.py: same
payloads, same rate, ``websockets.broadcast``, no channel layer, no Django) give the
floor that the exchange's figures are divided by.

Clients (bench/ws_clients.py) are 2 separate processes (asyncio + websockets, uvloop),
never the server's. The server's, the clients', the publisher's and Redis's CPU time
over the measured window are read from /proc, as is the CPU time the rest of the
machine used meanwhile (other work on a shared machine shows there).

Idle capacity. 10,000 sockets authenticated with ``Authorization: Token ...`` (tokens
of a few bench users, shared by several sockets) held open on one server process
(--idle-server: the web role unless told; no subscription): the server's RSS before and
after, per socket; then 10 rounds of opening and closing 2,000 sockets, with the RSS
after each half-round, to show growth.

The profile (``--profile``) samples the server process with py-spy during the largest
pubsub fan-out and sums the samples by function (own and inclusive time).

Everything runs on 127.0.0.1. The database is ``$BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/dexsite_bench_ws; created if missing, migrated and
seeded by the script: a market WSBENCH-PERP, bench users and their tokens); Redis is
``$BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/7: the core layer's keys live in
that database; pub/sub channel names are global to the Redis server, so the market is
one nothing else uses). Servers run with DEBUG off. Results (JSON, samples, logs,
profile) go to bench/results/ws-<stamp>/; the latency CDF to docs/ws_fanout_latency.png.

Usage::

    python bench/ws_fanout.py [--quick] [--sockets 1000,5000] [--duration 20]
        [--rate 20] [--repeat 3] [--layers pubsub,core] [--no-baseline]
        [--idle 10000] [--idle-rounds 10] [--idle-round-sockets 2000] [--no-idle]
        [--idle-server web] [--no-fanout] [--profile] [--variants web,web-x2,uvloop,x2]
        [--server-root DIR] [--png PATH]

Scenarios: ``baseline``; a layer name (``pubsub``, ``core``): daphne on that layer;
``pubsub-<variant>``: ``web`` (the web role), ``web-x2`` (two web-role processes),
``web-router`` (the web role behind nginx on deploy/nginx.conf, as the Procfile's
``router`` and ``ws`` roles run: the clients connect to nginx's port), ``uvloop`` (daphne
on uvloop), ``x2`` (two daphne processes), each on the pub/sub layer. With two processes
each listens on its own port, the client processes take the ports in turn (2 client
processes: half the sockets each), and their CPU is summed; nginx's (its master and
workers) is counted with the server's and shown apart as the router's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from array import array
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PY = sys.executable
HOST = "127.0.0.1"
SYMBOL = "WSBENCH-PERP"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/dexsite_bench_ws"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"
LAYERS = {
    "pubsub": "dexsite.channel_layer.PubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
SERVER_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "bench-only-not-secret",
    "SECURE_SSL_REDIRECT": "false",
    "LOG_LEVEL": "WARNING",
    # Thousands of sockets from this one address, of a few accounts: no cap.
    "WS_MAX_SOCKETS_PER_ADDRESS": "0",
    "WS_MAX_SOCKETS_PER_ACCOUNT": "0",
}
# daphne on uvloop: the event loop daphne.server creates at import is then uvloop's.
UVLOOP_DAPHNE = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from daphne.cli import CommandLineInterface; sys.argv[0] = 'daphne'; "
    "CommandLineInterface.entrypoint()"
)
CLK = os.sysconf("SC_CLK_TCK")
# CpuWindow's names of the server's processes: the server's own, and nginx's in front.
SERVER_PARTS = ("server", "router")


def log(msg: str) -> None:
    print(msg, flush=True)


# -- /proc -----------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children: none here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    total = sum(vals[:8])
    return (total - idle) / CLK, total / CLK


def redis_pid(url: str) -> int | None:
    import redis

    try:
        return int(redis.Redis.from_url(url).info("server")["process_id"])
    except Exception:
        return None


class CpuWindow:
    """CPU seconds of named processes, and of everything else, between start() and stop()."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {k: v for k, v in pids.items() if v}

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.c0 = {k: proc_cpu(p) for k, p in self.pids.items()}
        self.m0 = machine_cpu()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        used = {k: proc_cpu(p) - self.c0[k] for k, p in self.pids.items()}
        m1 = machine_cpu()
        busy = m1[0] - self.m0[0]
        out = {f"{k}_cpu_pct": 100 * v / wall for k, v in used.items()}
        out["others_cpu_pct"] = 100 * max(0.0, busy - sum(used.values())) / wall
        out["machine_busy_pct"] = 100 * busy / (m1[1] - self.m0[1]) if m1[1] > self.m0[1] else 0
        out["wall_s"] = wall
        out["server_cpu_s"] = sum(v for k, v in used.items() if k.startswith(SERVER_PARTS))
        return out


# -- database --------------------------------------------------------------------------


def setup_database(db_url: str, users: int, app_root: Path) -> list[str]:
    """Create, migrate and seed the bench database with the app at `app_root`; return
    the bench users' tokens."""
    import psycopg
    from psycopg import sql

    parts = urllib.parse.urlparse(db_url)
    name = parts.path.lstrip("/")
    admin = urllib.parse.urlunparse(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log(f"created database {name}")
    os.environ["DATABASE_URL"] = db_url
    os.environ.pop("REDIS_URL", None)  # the orchestrator itself publishes nothing
    os.environ["DJANGO_SETTINGS_MODULE"] = "dexsite.settings"
    for k, v in SERVER_ENV.items():
        os.environ[k] = v
    sys.path.insert(0, str(app_root))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import User
    from accounts.services import token_for
    from trading.tests.factories import MarketFactory

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    MarketFactory(symbol=SYMBOL)
    tokens = []
    for i in range(users):
        user, _ = User.objects.get_or_create(username=f"wsbench{i}")
        tokens.append(token_for(user))
    connection.close()
    log(f"database {db_url}: migrated and seeded in {time.perf_counter() - t0:.1f}s")
    return tokens


# -- processes -------------------------------------------------------------------------


NICE = 0
CHILDREN: list[subprocess.Popen] = []


def reap_children() -> None:
    """Stop whatever the bench started and is still running (they are in sessions of
    their own: a signal to the bench does not reach them)."""
    for p in CHILDREN:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.terminate()
    for p in CHILDREN:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def spawn(argv: list[str], **kw) -> subprocess.Popen:
    """Start a bench process in a session of its own. The kernel schedules sessions
    (autogroups) fairly against each other, whatever the niceness of the processes in
    them: a server sharing one session with its clients would get that session's share
    only. With --nice, each session's autogroup gets that niceness too."""
    return adopt(subprocess.Popen(argv, start_new_session=True, **kw))


def adopt(proc: subprocess.Popen) -> subprocess.Popen:
    """A process started in a session of its own (spawn, or elsewhere), stopped with the
    bench's and given its niceness."""
    CHILDREN.append(proc)
    if NICE:
        with contextlib.suppress(OSError):
            Path(f"/proc/{proc.pid}/autogroup").write_text(str(NICE))
    return proc


def child_pids(pid: int) -> list[int]:
    """A process's children (nginx's workers), from /proc."""
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    kind: str  # baseline | app (the exchange's application, on whichever server)
    procs: list[subprocess.Popen]
    ports: list[int]
    logs: list[Path]
    router: Any = None  # trust.procs.Router: nginx in front, the clients' port

    @property
    def pid(self) -> int:
        return self.procs[0].pid

    def url(self, i: int = 0) -> str:
        port = self.router.port if self.router else self.ports[i % len(self.ports)]
        return f"ws://{HOST}:{port}/ws/"

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def server_env(args, layer: str | None) -> dict[str, str]:
    env = dict(os.environ, **SERVER_ENV)
    env["DATABASE_URL"] = args.db
    env["DJANGO_SETTINGS_MODULE"] = "dexsite.settings"
    env["PYTHONPATH"] = str(args.server_root)
    if layer:
        env["REDIS_URL"] = args.redis
        env["CHANNEL_LAYER_BACKEND"] = LAYERS[layer]
    return env


def start_server(kind: str, layer: str | None, args, out: Path, tag: str) -> Server:
    """kind: baseline, baseline-uvloop, web (the Procfile's web role), web-x2 (two of
    them), web-router (one behind nginx), daphne, daphne-uvloop, daphne-x2 (two daphne
    processes)."""
    procs, ports, logs = [], [], []
    count = 2 if kind.endswith("-x2") else 1
    for i in range(count):
        port = free_port()
        logf = out / f"server-{tag}-{i}.log"
        if kind.startswith("baseline"):
            argv = [PY, str(BENCH / "ws_baseline.py"), "--port", str(port)]
            if kind == "baseline-uvloop":
                argv.append("--uvloop")
            env, cwd = dict(os.environ), ROOT
        else:
            head = {"web": [PY, "-m", "dexsite.serve"], "daphne-uvloop": [PY, "-c", UVLOOP_DAPHNE]}
            argv = [
                *head.get(kind.removesuffix("-x2").removesuffix("-router"), [PY, "-m", "daphne"]),
                *("-b", HOST, "-p", str(port), "dexsite.asgi:application"),
            ]
            env, cwd = server_env(args, layer), args.server_root
            if kind.endswith("-router"):
                env["NUM_PROXIES"] = "1"  # as production behind the router (README)
        with open(logf, "w") as lf:
            procs.append(spawn(argv, cwd=cwd, env=env, stdout=lf, stderr=lf))
        ports.append(port)
        logs.append(logf)
    server = Server("baseline" if kind.startswith("baseline") else "app", procs, ports, logs)
    deadline = time.time() + 60
    for p, port, logf in zip(procs, ports, logs, strict=True):
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"{kind} exited: {logf.read_text()[-2000:]}")
            try:
                if server.kind == "app":
                    urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2).read()
                else:
                    socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    server.stop()
                    raise RuntimeError(
                        f"{kind} did not start: {logf.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
    if kind.endswith("-router"):
        from trust.procs import Router

        # `/ws/` to the web role; the rest too (it answers /metrics, the readiness check).
        try:
            server.router = Router(out / f"nginx-{tag}", ports, ports)
            server.router.start()
            adopt(server.router.proc)
            server.router.wait_ready(30, "/metrics")
        except Exception:
            server.stop()
            raise
    return server


def open_sockets_metric(port: int) -> float | None:
    """dex_ws_open_sockets as the server process reports it."""
    try:
        text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10).read().decode()
    except OSError:
        return None
    m = re.search(r"^dex_ws_open_sockets (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


class Clients:
    """The client processes (bench/ws_clients.py), commanded in parallel."""

    def __init__(self, procs: int, concurrency: int) -> None:
        self.procs = [
            spawn(
                [PY, str(BENCH / "ws_clients.py"), "--concurrency", str(concurrency)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            for _ in range(procs)
        ]
        for p in self.procs:
            started = self._reply(p)
            assert started["event"] == "started", started

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _reply(self, p: subprocess.Popen, quiet: bool = False) -> dict:
        while True:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"client {p.pid} exited ({p.poll()})")
            msg = json.loads(line)
            if msg.get("event") != "progress":
                return msg
            if not quiet:
                log(f"    client {p.pid}: {msg['opened']}/{msg['of']} open, {msg['failed']} failed")

    def all(self, cmds: list[dict], quiet: bool = False) -> list[dict]:
        for p, cmd in zip(self.procs, cmds, strict=True):
            p.stdin.write(json.dumps(cmd) + "\n")
            p.stdin.flush()
        return [self._reply(p, quiet) for p in self.procs]

    def same(self, cmd: dict, quiet: bool = False) -> list[dict]:
        return self.all([cmd] * len(self.procs), quiet)

    def open(self, n: int, urls: list[str], tokens: list[str], greeting: int) -> dict:
        k = len(self.procs)
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        t0 = time.perf_counter()
        replies = self.all(
            [
                {
                    "cmd": "open",
                    "n": s,
                    "url": urls[i % len(urls)],
                    "tokens": tokens,
                    "greeting": greeting,
                }
                for i, s in enumerate(shares)
            ]
        )
        failures: Counter = Counter()
        for r in replies:
            failures.update(r["failures"])
        return {
            "ok": sum(r["ok"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "open": sum(r["open"] for r in replies),
            "seconds": time.perf_counter() - t0,
            "failures": dict(failures),
        }

    def close(self, n: int | None = None) -> dict:
        k = len(self.procs)
        if n is None:
            replies = self.same({"cmd": "close"})
        else:
            shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
            replies = self.all([{"cmd": "close", "n": s} for s in shares])
        return {
            "closed": sum(r["closed"] for r in replies),
            "open": sum(r["open"] for r in replies),
        }

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                p.stdin.flush()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# -- fan-out ---------------------------------------------------------------------------


@dataclass
class FanoutRun:
    scenario: str  # baseline | pubsub | core | pubsub-uvloop | ...
    sockets: int
    rep: int
    opened: int = 0
    open_seconds: float = 0.0
    published: int = 0
    publish: dict = field(default_factory=dict)
    samples: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    deliveries_per_s: float = 0.0
    offered_per_s: float = 0.0
    received: int = 0
    expected: int = 0
    missing: int = 0
    dups: int = 0
    reorders: int = 0
    drain_s: float = 0.0
    server_us_per_delivery: float = 0.0
    cpu: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    server_rss_mb: float = 0.0
    sample_files: list = field(default_factory=list)
    profile: dict | None = None


def percentile(sorted_vals, q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def load_samples(paths: list[Path]) -> tuple[array, array]:
    lat, ids = array("q"), array("i")
    for path in paths:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            a, b = array("q"), array("i")
            a.fromfile(f, n)
            b.fromfile(f, n)
        lat.extend(a)
        ids.extend(b)
    return lat, ids


def scenario_server(scenario: str) -> tuple[str, str | None]:
    """scenario name -> (server kind, channel layer): `pubsub` is daphne on the pub/sub
    layer, `pubsub-web` the web role on it, `pubsub-web-x2` two web-role processes,
    `pubsub-uvloop` daphne on uvloop."""
    if scenario.startswith("baseline"):
        return scenario, None
    layer, _, variant = scenario.partition("+")[0].partition("-")
    if variant == "web-x2" or variant.startswith("web-x2-"):
        return "web-x2", layer
    if variant == "web-router" or variant.startswith("web-router-"):
        return "web-router", layer
    if variant == "web" or variant.startswith("web-"):
        return "web", layer
    return ("daphne-" + variant if variant else "daphne"), layer


def run_fanout(scenario: str, n: int, rep: int, args, tokens, out: Path) -> FanoutRun:
    kind, layer = scenario_server(scenario)
    run = FanoutRun(scenario, n, rep)
    tag = f"{scenario}-{n}-r{rep}"
    run_id = f"{tag}-{uuid.uuid4().hex[:8]}"
    count = int(args.duration * args.rate)
    warmup = int(args.warmup * args.rate)
    log(f"--- fan-out {scenario}, {n} sockets, repetition {rep + 1}")
    server = start_server(kind, layer, args, out, tag)
    clients = Clients(args.client_procs, args.concurrency)
    pub = None
    profiler = None
    try:
        urls = [server.url(i) + f"?market={SYMBOL}" for i in range(len(server.ports))]
        if server.kind == "baseline":
            urls = [server.url(0)]
        greeting = 1 if server.kind == "baseline" else 2  # subscribed (+ depth snapshot)
        opened = clients.open(n, urls, [], greeting)
        run.opened, run.open_seconds, run.failures = (
            opened["open"],
            opened["seconds"],
            opened["failures"],
        )
        log(
            f"    {opened['open']}/{n} sockets open in {opened['seconds']:.1f}s"
            + (f", failures {opened['failures']}" if opened["failures"] else "")
        )
        if opened["open"] == 0:
            raise RuntimeError("no socket opened")
        time.sleep(args.settle)
        clients.same({"cmd": "arm", "run": run_id, "count": count, "warmup": warmup})

        if server.kind == "app":
            pub = spawn(
                [
                    PY,
                    str(BENCH / "ws_publisher.py"),
                    "--symbol",
                    SYMBOL,
                    "--run",
                    run_id,
                    "--count",
                    str(count),
                    "--rate",
                    str(args.rate),
                ],
                cwd=args.server_root,
                env=server_env(args, layer),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            ready = json.loads(pub.stdout.readline() or "{}")
            if ready.get("event") != "ready":
                raise RuntimeError(f"publisher failed: {ready}")
        pids = {"server": server.pid, "redis": args.redis_pid}
        if len(server.procs) > 1:
            pids["server2"] = server.procs[1].pid
        if server.router is not None:
            for i, p in enumerate([server.router.pid, *child_pids(server.router.pid)]):
                pids[f"router{i}"] = p
        for i, p in enumerate(clients.pids):
            pids[f"client{i}"] = p
        window = CpuWindow(pids)
        if args.profile and layer == "pubsub" and n == max(args.sockets) and rep == 0:
            profiler = start_profile(server.pid, args.duration, out / f"pyspy-{tag}")

        window.start()
        t_go = time.time()
        if pub is not None:
            pub.stdin.write("go\n")
            pub.stdin.flush()
            control = None
        else:
            control = BaselineControl(server.ports[0], run_id, count, args.rate)
        expected = count * run.opened
        last_print = time.perf_counter()
        while (pub.poll() is None) if pub is not None else control.is_alive():
            time.sleep(0.25)
            if time.perf_counter() - last_print >= args.progress:
                last_print = time.perf_counter()
                got = status(clients, run_id)
                log(
                    f"    t={time.time() - t_go:4.1f}s delivered {got:,}/{expected:,} "
                    f"({got / max(1e-9, time.time() - t_go):,.0f}/s)"
                )
        if pub is not None:
            run.publish = json.loads(pub.stdout.read().strip().splitlines()[-1])
        else:
            control.join()
            run.publish = control.result
        run.published = run.publish.get("count", run.publish.get("sent", 0))
        t_pub_end = time.time()
        # Drain: wait while deliveries still arrive, at most --drain seconds.
        got, last_got, t_last_change = 0, -1, time.time()
        while time.time() - t_pub_end < args.drain:
            got = status(clients, run_id)
            if got >= expected:
                break
            if got != last_got:
                last_got, t_last_change = got, time.time()
            elif time.time() - t_last_change > 3:
                break
            time.sleep(0.25)
        run.drain_s = time.time() - t_pub_end
        run.cpu = window.stop()
        if "cpu_s" in run.publish:  # the publisher has exited: it reports its own CPU time
            run.cpu["publisher_cpu_pct"] = 100 * run.publish["cpu_s"] / run.cpu["wall_s"]
            run.cpu["others_cpu_pct"] = max(
                0.0, run.cpu["others_cpu_pct"] - run.cpu["publisher_cpu_pct"]
            )
        if profiler is not None:
            run.profile = finish_profile(profiler)
        run.server_rss_mb = sum(proc_rss_kb(p.pid) for p in server.procs) / 1024

        paths = [out / f"samples-{tag}-c{i}.bin" for i in range(len(clients.procs))]
        replies = clients.all(
            [{"cmd": "collect", "out": str(p), "published": run.published} for p in paths],
            quiet=True,
        )
        run.sample_files = [str(p.relative_to(out)) for p in paths]
        run.received = sum(r["received"] for r in replies)
        run.expected = sum(r["expected"] for r in replies)
        run.missing = sum(r["missing"] for r in replies)
        run.dups = sum(r["dups"] for r in replies)
        run.reorders = sum(r["reorders"] for r in replies)
        last_rx = max(r["last_rx"] for r in replies)
        run.deliveries_per_s = run.received / max(1e-9, last_rx - t_go)
        run.offered_per_s = run.opened * args.rate
        run.server_us_per_delivery = 1e6 * run.cpu["server_cpu_s"] / max(1, run.received)
        lat, _ = load_samples(paths)
        vals = sorted(lat)
        run.samples = len(vals)
        # A message never delivered (within the drain) is later than any delivered one:
        # percentiles are over every expected delivery, the missing ones as infinite.
        vals = [v / 1000 for v in vals] + [float("inf")] * max(0, run.missing)
        run.p50_ms = percentile(vals, 0.50)
        run.p90_ms = percentile(vals, 0.90)
        run.p99_ms = percentile(vals, 0.99)
        run.max_ms = vals[-1] if vals else float("nan")
        cpu = run.cpu
        log(
            f"    p50 {fmt_ms(run.p50_ms)}  p99 {fmt_ms(run.p99_ms)}  max {fmt_ms(run.max_ms)}  "
            f"deliveries {run.deliveries_per_s:,.0f}/s (offered {run.offered_per_s:,.0f}/s)  "
            f"missing {run.missing}  drain {run.drain_s:.1f}s"
        )
        log(
            "    CPU % of one core: "
            + ", ".join(
                f"{k[:-8]} {v:.0f}"
                for k, v in cpu.items()
                if k.endswith("_cpu_pct") and not k.startswith("machine")
            )
            + f"; server {run.server_us_per_delivery:.1f} µs CPU per delivery"
        )
    finally:
        if profiler is not None and run.profile is None:
            with contextlib.suppress(Exception):
                profiler["proc"].kill()
        if pub is not None and pub.poll() is None:
            pub.kill()
            pub.wait()
        with contextlib.suppress(Exception):
            clients.close()
        clients.stop()
        server.stop()
    return run


def status(clients: Clients, run_id: str) -> int:
    """Bench messages received so far by all clients."""
    del run_id
    return sum(r["received"] for r in clients.same({"cmd": "count"}, quiet=True))


class BaselineControl(threading.Thread):
    """Tells the baseline server to broadcast, and waits for its report."""

    def __init__(self, port: int, run: str, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.port, self.run_id, self.count, self.rate = port, run, count, rate
        self.result: dict = {}
        self.start()

    def run(self) -> None:
        from websockets.sync.client import connect

        with connect(f"ws://{HOST}:{self.port}/control", open_timeout=30) as ws:
            ws.send(json.dumps({"run": self.run_id, "count": self.count, "rate": self.rate}))
            self.result = json.loads(ws.recv(timeout=self.count / self.rate + 120))


# -- profile ---------------------------------------------------------------------------


def start_profile(pid: int, duration: float, base: Path) -> dict | None:
    spy = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
    if not Path(spy).exists():
        log("    (py-spy not installed: no profile; pip install -r requirements-bench.txt)")
        return None
    raw = base.with_suffix(".txt")
    proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(duration))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
            "--threads",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log(f"    py-spy recording pid {pid} for {int(duration)}s -> {raw.name}")
    return {"proc": proc, "raw": raw, "pid": pid}


def finish_profile(profiler: dict) -> dict:
    proc = profiler["proc"]
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
    return summarize_profile(profiler["raw"])


def _frame_name(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    path = path.replace("\\", "/")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/lib/python3" in path:
        path = "stdlib/" + path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    else:
        for root in (str(ROOT) + "/", "/tmp/"):
            if path.startswith(root):
                path = path[len(root) :]
    return f"{func} ({path})"


# Where a sample's time goes: the first of these keys (in this order) found anywhere in
# its stack.
BUCKETS = (
    ("close_old_connections", "channels: close_old_connections() hop to the sync thread"),
    ("aclose_old_connections", "channels: close_old_connections() hop to the sync thread"),
    # The thread pool and its futures: during a fan-out, nothing but those hops uses it.
    ("SyncToAsync", "channels: close_old_connections() hop to the sync thread"),
    ("_chain_future", "channels: close_old_connections() hop to the sync thread"),
    ("ThreadPoolExecutor", "channels: close_old_connections() hop to the sync thread"),
    ("_worker (", "channels: close_old_connections() hop to the sync thread"),
    ("application_checker", "daphne: application_checker (every socket, once a second)"),
    ("prometheus_client/", "our consumer: prometheus metrics"),
    ("SentCounter.", "our consumer: prometheus metrics"),
    ("DelayHistogram.", "our consumer: prometheus metrics"),
    ("WebSocketProtocol.serverSend", "daphne + autobahn + twisted: frame, buffer, addWriter"),
    ("AsyncioSelectorReactor.addWriter", "daphne + autobahn + twisted: frame, buffer, addWriter"),
    ("AsyncioSelectorReactor._readOrWrite", "twisted: socket writes (send, removeWriter)"),
    ("ExchangeConsumer.", "our consumer: ws_forward (lock, seq, send call)"),
    ("GroupFanout.", "our fan-out: one layer read per event, one call per socket"),
    # (py-spy shows a resumed coroutine's frames without the task that runs it)
    ("_ContextManagerMixin", "our consumer: ws_forward (lock, seq, send call)"),
    ("RedisSingleShardConnection.", "channels_redis pubsub: fan-out to per-socket queues"),
    ("RedisChannelLayer.", "channels_redis core: receive, fan-out to buffers"),
    ("await_many_dispatch", "channels: per-socket loop (asyncio.wait, tasks, queue, msgpack)"),
    ("InstanceSessionWrapper", "channels: per-socket loop (asyncio.wait, tasks, queue, msgpack)"),
    ("wait (asyncio/tasks.py)", "channels: per-socket loop (asyncio.wait, tasks, queue, msgpack)"),
    ("_on_completion (asyncio", "channels: per-socket loop (asyncio.wait, tasks, queue, msgpack)"),
    (
        "_async_proxy (channels_redis",
        "channels: per-socket loop (asyncio.wait, tasks, queue, msgpack)",
    ),
    ("WebSocketsSansIOProtocol.", "uvicorn + websockets (sans-I/O): frame, write"),
    ("EpollSelector.select", "waiting in epoll"),
)


def _bucket(frames: list[str]) -> str:
    stack = ";".join(frames)
    for key, label in BUCKETS:
        if key in stack:
            return label
    return "other (event loop: Handle._run, _run_once, callbacks)"


def summarize_profile(raw: Path) -> dict:
    own: Counter = Counter()
    incl: Counter = Counter()
    threads: Counter = Counter()
    areas: Counter = Counter()
    total = 0
    idle = 0
    if not raw.exists():
        return {"error": "no profile written"}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        frames = [_frame_name(f) for f in stack.split(";")]
        name = frames.pop(0).split(": ", 1)[-1] if frames[0].startswith("thread (") else "?"
        if not frames:
            continue
        threads["main" if name == "MainThread" else "executor/other threads"] += n
        total += n
        leaf = frames[-1]
        if leaf.startswith(("select (", "poll (", "epoll")) or "selectors" in leaf:
            idle += n
        own[leaf] += n
        areas[_bucket(frames)] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return {"error": "no samples"}
    return {
        "samples": total,
        "idle_share": idle / total,
        "own_top": [(f, c / total) for f, c in own.most_common(25)],
        "inclusive_top": [(f, c / total) for f, c in incl.most_common(40)],
        "areas": [(a, c / total) for a, c in areas.most_common()],
        "threads": [(t, c / total) for t, c in threads.most_common()],
        "raw": raw.name,
    }


def print_profile(p: dict) -> None:
    if "error" in p:
        log(f"  profile: {p['error']}")
        return
    log(f"  py-spy: {p['samples']} samples, waiting in epoll {p['idle_share']:.0%}")
    log("  samples by thread: " + ", ".join(f"{t} {s:.0%}" for t, s in p.get("threads", [])))
    log("  samples by what they are doing:")
    for a, s in p["areas"]:
        log(f"    {s:6.1%}  {a}")
    log("  own time, top functions:")
    for f, s in p["own_top"][:15]:
        log(f"    {s:6.1%}  {f}")
    log("  inclusive time, top functions:")
    for f, s in p["inclusive_top"][:30]:
        log(f"    {s:6.1%}  {f}")


# -- idle capacity ---------------------------------------------------------------------


def run_idle(args, tokens: list[str], out: Path, layer: str) -> dict:
    kind = args.idle_server
    log(f"--- idle capacity: {args.idle} authenticated sockets on one {kind} ({layer} layer)")
    server = start_server(kind, layer, args, out, f"idle-{kind}-{layer}")
    clients = Clients(args.client_procs, args.concurrency)
    res: dict[str, Any] = {"server": kind, "layer": layer, "target": args.idle, "rounds": []}
    try:
        # Warm up: a first handful of sockets loads what the first connection loads.
        clients.open(50, [server.url()], tokens, 0)
        clients.close()
        time.sleep(1)
        res["rss_before_kb"] = before = proc_rss_kb(server.pid)
        cpu0 = proc_cpu(server.pid)
        opened = clients.open(args.idle, [server.url()], tokens, 0)
        time.sleep(2)
        res["open_seconds"] = opened["seconds"]
        res["server_cpu_s_to_open"] = proc_cpu(server.pid) - cpu0
        res["opened"] = opened["open"]
        res["failed"] = opened["failed"]
        res["failures"] = opened["failures"]
        res["server_sees"] = open_sockets_metric(server.ports[0])
        res["rss_after_kb"] = after = proc_rss_kb(server.pid)
        res["kb_per_socket"] = (after - before) / max(1, opened["open"])
        log(
            f"    {opened['open']}/{args.idle} open in {opened['seconds']:.1f}s "
            f"(server counts {res['server_sees']}); RSS {before / 1024:.1f} -> "
            f"{after / 1024:.1f} MB: {res['kb_per_socket']:.1f} KB per socket"
            + (f"; failures {opened['failures']}" if opened["failures"] else "")
        )
        clients.close()
        time.sleep(2)
        res["rss_after_close_kb"] = proc_rss_kb(server.pid)
        res["server_sees_after_close"] = open_sockets_metric(server.ports[0])
        log(
            f"    all closed: RSS {res['rss_after_close_kb'] / 1024:.1f} MB "
            f"(server counts {res['server_sees_after_close']})"
        )
        for r in range(args.idle_rounds):
            o = clients.open(args.idle_round_sockets, [server.url()], tokens, 0)
            rss_open = proc_rss_kb(server.pid)
            c = clients.close()
            time.sleep(1)
            rss_closed = proc_rss_kb(server.pid)
            res["rounds"].append(
                {
                    "opened": o["open"],
                    "failed": o["failed"],
                    "rss_open_kb": rss_open,
                    "rss_closed_kb": rss_closed,
                    "still_open": c["open"],
                }
            )
            log(
                f"    round {r + 1:2d}: {o['open']} open -> RSS {rss_open / 1024:.1f} MB; "
                f"closed -> RSS {rss_closed / 1024:.1f} MB"
            )
        res["server_sees_end"] = open_sockets_metric(server.ports[0])
        if res["rounds"]:
            first, last = res["rounds"][0], res["rounds"][-1]
            res["growth_kb"] = last["rss_closed_kb"] - first["rss_closed_kb"]
            log(
                f"    RSS after closing, round 1 -> round {len(res['rounds'])}: "
                f"{res['growth_kb'] / 1024:+.1f} MB"
            )
    finally:
        with contextlib.suppress(Exception):
            clients.close()
        clients.stop()
        server.stop()
    return res


# -- report ----------------------------------------------------------------------------


def server_cpu_pct(r: FanoutRun, parts: tuple[str, ...] = SERVER_PARTS) -> float:
    """All the server's processes (web-x2 and daphne-x2 have two; web-router's nginx
    counts too), % of one core."""
    return sum(v for k, v in r.cpu.items() if k.startswith(parts) and k.endswith("_cpu_pct"))


def medians(runs: list[FanoutRun]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[FanoutRun]] = defaultdict(list)
    for r in runs:
        if r.cpu and r.received:
            r.server_us_per_delivery = (
                1e6 * server_cpu_pct(r) / 100 * r.cpu["wall_s"] / max(1, r.received)
            )
        groups[(r.scenario, r.sockets)].append(r)
    rows = []
    for (scenario, n), rs in groups.items():

        def med(attr: str, rs=rs) -> float:
            return statistics.median(getattr(r, attr) for r in rs)

        rows.append(
            {
                "scenario": scenario,
                "sockets": n,
                "reps": len(rs),
                "p50_ms": med("p50_ms"),
                "p99_ms": med("p99_ms"),
                "max_ms": med("max_ms"),
                "deliveries_per_s": med("deliveries_per_s"),
                "offered_per_s": med("offered_per_s"),
                "missing": med("missing"),
                "server_us_per_delivery": med("server_us_per_delivery"),
                "server_cpu_pct": statistics.median(server_cpu_pct(r) for r in rs),
                "router_cpu_pct": statistics.median(server_cpu_pct(r, ("router",)) for r in rs),
                "router_us_per_delivery": statistics.median(
                    1e6
                    * server_cpu_pct(r, ("router",))
                    / 100
                    * r.cpu.get("wall_s", 0)
                    / max(1, r.received)
                    for r in rs
                ),
                "clients_cpu_pct": statistics.median(
                    sum(v for k, v in r.cpu.items() if k.startswith("client")) for r in rs
                ),
                "redis_cpu_pct": statistics.median(r.cpu.get("redis_cpu_pct", 0) for r in rs),
                "others_cpu_pct": statistics.median(r.cpu.get("others_cpu_pct", 0) for r in rs),
                "open_seconds": med("open_seconds"),
                "server_rss_mb": med("server_rss_mb"),
                "publisher_late_s": statistics.median(
                    r.publish.get("max_late_s", 0) or 0 for r in rs
                ),
                "publish_ms_p99": statistics.median(
                    r.publish.get("publish_ms_p99", 0) or 0 for r in rs
                ),
            }
        )
    order = {"baseline": 0, "baseline-uvloop": 0.5, "pubsub": 1, "core": 2}
    rows.sort(key=lambda r: (r["sockets"], order.get(r["scenario"], 9), r["scenario"]))
    base = {r["sockets"]: r for r in rows if r["scenario"] == "baseline"}
    for r in rows:
        b = base.get(r["sockets"])
        if b and not r["scenario"].startswith("baseline"):
            r["p50_x"] = r["p50_ms"] / b["p50_ms"] if b["p50_ms"] else None
            r["p99_x"] = r["p99_ms"] / b["p99_ms"] if b["p99_ms"] else None
            r["deliveries_x"] = (
                r["deliveries_per_s"] / b["deliveries_per_s"] if b["deliveries_per_s"] else None
            )
            r["cpu_x"] = (
                r["server_us_per_delivery"] / b["server_us_per_delivery"]
                if b["server_us_per_delivery"]
                else None
            )
    return rows


def fmt_ms(v: float, unit: bool = True) -> str:
    """Milliseconds; infinite = not delivered within the drain."""
    if v != v:
        return "n/a"
    if v == float("inf"):
        return "undelivered"
    text = f"{v:.1f}" if v < 100 else f"{v:,.0f}"
    return text + (" ms" if unit else "")


def _x(v: float | None) -> str:
    if v is None or v != v:
        return "n/a"
    return "∞" if v == float("inf") else f"{v:.1f}x" if v < 100 else f"{v:,.0f}x"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| server / layer | sockets | p50 ms | p99 ms | max ms | deliveries/s (offered) | "
        "missing | server CPU µs/delivery (router's) | p50 / p99 / deliveries / CPU vs baseline |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        ratio = ""
        if not r["scenario"].startswith("baseline") and r.get("p99_x") is not None:
            ratio = " / ".join(_x(r.get(k)) for k in ("p50_x", "p99_x", "deliveries_x", "cpu_x"))
        lines.append(
            f"| {r['scenario']} | {r['sockets']:,} | {fmt_ms(r['p50_ms'], False)} | "
            f"{fmt_ms(r['p99_ms'], False)} | {fmt_ms(r['max_ms'], False)} | "
            f"{r['deliveries_per_s']:,.0f} ({r['offered_per_s']:,.0f}) | "
            f"{r['missing']:,.0f} | {r['server_us_per_delivery']:.1f}"
            + (f" ({r['router_us_per_delivery']:.1f})" if r.get("router_us_per_delivery") else "")
            + f" | {ratio} |"
        )
    return head + "\n".join(lines)


def cpu_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| server / layer | sockets | server (router's) | clients (2 procs) | Redis | "
        "rest of machine | "
        "server RSS MB at end | open s | publish() p99 ms | publisher behind schedule s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    return head + "\n".join(
        f"| {r['scenario']} | {r['sockets']:,} | {r['server_cpu_pct']:.0f}%"
        + (f" ({r['router_cpu_pct']:.0f}%)" if r.get("router_cpu_pct") else "")
        + f" | {r['clients_cpu_pct']:.0f}% | {r['redis_cpu_pct']:.0f}% | {r['others_cpu_pct']:.0f}% | "
        f"{r.get('server_rss_mb', 0):.0f} | {r['open_seconds']:.1f} | "
        f"{r['publish_ms_p99']:.2f} | {r.get('publisher_late_s', 0):.2f} |"
        for r in rows
    )


def plot(runs: list[FanoutRun], out: Path, png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot (pip install -r requirements-bench.txt)")
        return
    groups: dict[tuple, list[FanoutRun]] = defaultdict(list)
    for r in runs:
        groups[(r.scenario, r.sockets)].append(r)
    sizes = sorted({r.sockets for r in runs})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 6.6), squeeze=False)
    colors = {
        "baseline": "tab:green",
        "baseline-uvloop": "tab:olive",
        "pubsub": "tab:blue",
        "core": "tab:red",
    }
    spare = iter(["tab:purple", "tab:orange", "tab:cyan", "tab:brown", "tab:pink", "tab:gray"])
    order = {"baseline": 0, "baseline-uvloop": 1, "pubsub": 2, "core": 3}
    for ax, n in zip(axes[0], sizes, strict=True):
        for (scenario, sockets), rs in sorted(
            groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][0])
        ):
            if sockets != n:
                continue
            # The repetition with the median p99 stands for the scenario.
            rep = sorted(rs, key=lambda r: r.p99_ms)[len(rs) // 2]
            lat, _ = load_samples([out / f for f in rep.sample_files])  # (absolute: out ignored)
            vals = sorted(v / 1000 for v in lat)
            if not vals:
                continue
            # Fractions of every expected delivery: a curve that ends below 1 lost some.
            total = max(len(vals), rep.expected)
            step = max(1, len(vals) // 4000)
            xs = [*vals[::step], vals[-1]]
            ys = [i * step / total for i in range(len(xs) - 1)] + [len(vals) / total]
            if scenario not in colors:
                colors[scenario] = next(spare, None)
            ax.plot(
                [max(x, 0.05) for x in xs],
                ys,
                "-" if "+" not in scenario else "--",
                color=colors[scenario],
                label=f"{scenario}: p50 {fmt_ms(rep.p50_ms)}, p99 {fmt_ms(rep.p99_ms)}"
                + (f" ({len(vals) / total:.0%} delivered)" if len(vals) < total else ""),
            )
        ax.axvline(100, color="grey", lw=0.8, ls="--")
        ax.text(100, 0.02, " 100 ms", color="grey", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("latency, publish -> client receive (ms, log scale)")
        ax.set_ylabel("fraction of deliveries")
        ax.set_title(f"{n:,} sockets, 20 trades/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
        ax.set_ylim(0, 1.02)
    fig.suptitle("WebSocket fan-out latency CDF (bench/ws_fanout.py)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    log(f"plot: {png}")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_avg_at_start": os.getloadavg(),
    }
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M):
            info["cpu_model"] = m.group(1).strip()
    with contextlib.suppress(OSError):
        meminfo = Path("/proc/meminfo").read_text()
        if m := re.search(r"^MemTotal:\s*(\d+)", meminfo, re.M):
            info["mem_gb"] = round(int(m.group(1)) / 1024 / 1024, 1)
    for pkg in (
        "uvicorn",
        "daphne",
        "twisted",
        "autobahn",
        "channels",
        "channels-redis",
        "websockets",
        "redis",
        "uvloop",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[pkg] = metadata.version(pkg)
    with contextlib.suppress(Exception):
        import redis

        info["redis_server"] = redis.Redis.from_url(DEFAULT_REDIS).info("server")["redis_version"]
    return info


def parse_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def report_only(dirs: list[Path], args) -> int:
    """Tables (per results directory) and one plot of all their runs."""
    everything: list[FanoutRun] = []
    for out in dirs:
        _report_dir(out, args, everything)
    if everything and not args.no_png:
        plot(everything, dirs[0], args.png)
    return 0


def _report_dir(out: Path, args, everything: list[FanoutRun]) -> None:
    results = json.loads((out / "results.json").read_text())
    runs = [FanoutRun(**r) for r in results.get("runs", [])]
    log(f"=== {out}")
    rows = medians(runs)
    if rows:
        table = (
            markdown_table(rows)
            + "\n\nCPU, % of one core, over the measured window:\n\n"
            + cpu_table(rows)
        )
        log(table)
        (out / "tables.md").write_text(table + "\n")
    for r in runs:
        if r.profile:
            if (out / r.profile.get("raw", "-")).exists():
                r.profile = summarize_profile(out / r.profile["raw"])
            log(f"=== profile of the server ({r.scenario}, {r.sockets} sockets)")
            print_profile(r.profile)
    for idle in results.get("idle", []):
        log(f"=== idle: {json.dumps(idle)}")
    for r in runs:
        r.sample_files = [str((out / f).resolve()) for f in r.sample_files]
    everything.extend(runs)


def _terminate(signum, frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        reap_children()


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="200 and 1000 sockets, 5 s, 1 repetition, 2,000 idle"
    )
    p.add_argument("--sockets", default="1000,5000")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of publishing")
    p.add_argument("--rate", type=float, default=20.0, help="trades per second")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds left out of latency")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--layers", default="pubsub,core")
    p.add_argument(
        "--variants",
        default="web",
        help="servers on pubsub besides daphne: web (the web role), web-x2 (two web-role "
        "processes), uvloop (daphne on uvloop), x2 (two daphne processes)",
    )
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--baseline-uvloop", action="store_true", help="also the baseline on uvloop")
    p.add_argument("--no-fanout", action="store_true")
    p.add_argument("--idle", type=int, default=10000)
    p.add_argument("--idle-rounds", type=int, default=10)
    p.add_argument("--idle-round-sockets", type=int, default=2000)
    p.add_argument("--idle-users", type=int, default=20)
    p.add_argument("--idle-layers", default="pubsub")
    p.add_argument(
        "--idle-server",
        default="web",
        choices=["web", "daphne", "daphne-uvloop"],
        help="the server holding the idle sockets",
    )
    p.add_argument("--no-idle", action="store_true")
    p.add_argument("--profile", action="store_true", help="py-spy the largest pubsub run")
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument(
        "--concurrency", type=int, default=24, help="handshakes in flight per client process"
    )
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for stragglers")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--server-root", type=Path, default=ROOT, help="the app to serve (a copy)")
    p.add_argument("--label", default="", help="suffix of the servers' scenario names")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the bench's processes (server, clients, publisher), e.g. -10 on a "
        "machine shared with other work; Redis and PostgreSQL keep theirs",
    )
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "ws_fanout_latency.png")
    p.add_argument("--no-png", action="store_true")
    p.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="only rebuild the tables (per DIR) and one plot (all DIRs) from DIR/results.json",
    )
    args = p.parse_args(argv)
    if args.report:
        return report_only(args.report, args)
    if args.quick:
        args.sockets, args.duration, args.repeat = "200,1000", 5.0, 1
        args.idle, args.idle_rounds, args.idle_round_sockets = 2000, 3, 500
        args.drain = min(args.drain, 15.0)
    args.sockets = [int(x) for x in parse_list(args.sockets)]
    args.db = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    args.redis = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    args.redis_pid = redis_pid(args.redis)
    args.server_root = args.server_root.resolve()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.nice:
        global NICE
        NICE = args.nice
        os.nice(args.nice)  # inherited by every process the bench starts
    need = max([*args.sockets, args.idle]) // max(1, args.client_procs) + 1000
    if hard < need:
        log(f"warning: fd limit {hard} is below the {need} a process needs")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"ws-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    info["nice"] = os.nice(0)
    info["server_root"] = str(args.server_root)
    with contextlib.suppress(Exception):
        git = ["git", "-C", str(ROOT)]
        info["git_head"] = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        info["git_dirty_files"] = len(
            subprocess.run(
                [*git, "--no-optional-locks", "status", "--porcelain"],
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()
        )
    log(f"machine: {json.dumps(info)}")
    log(f"results: {out}")
    tokens = setup_database(args.db, args.idle_users, args.server_root)

    scenarios = [] if args.no_baseline else ["baseline"]
    scenarios += ["baseline-uvloop"] if args.baseline_uvloop else []
    scenarios += [layer + args.label for layer in parse_list(args.layers)]
    scenarios += [f"pubsub-{v}{args.label}" for v in parse_list(args.variants)]
    runs: list[FanoutRun] = []
    results: dict[str, Any] = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    t_start = time.perf_counter()
    if not args.no_fanout:
        for rep in range(args.repeat):
            for n in args.sockets:
                # Rotate the order each repetition: none always runs first or last.
                order = scenarios[rep % len(scenarios) :] + scenarios[: rep % len(scenarios)]
                for scenario in order:
                    try:
                        runs.append(run_fanout(scenario, n, rep, args, tokens, out))
                    except Exception as e:
                        log(f"    FAILED: {type(e).__name__}: {e}")
                        results.setdefault("failed", []).append(
                            {"scenario": scenario, "sockets": n, "rep": rep, "error": str(e)}
                        )
                    results["runs"] = [asdict(r) for r in runs]
                    (out / "results.json").write_text(json.dumps(results, indent=1))
    if not args.no_idle:
        results["idle"] = [
            run_idle(args, tokens, out, layer) for layer in parse_list(args.idle_layers)
        ]
    results["runs"] = [asdict(r) for r in runs]
    rows = medians(runs) if runs else []
    results["medians"] = rows
    results["elapsed_s"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=1))

    log("")
    if rows:
        log(
            f"=== fan-out: medians of {args.repeat} repetition(s), {args.duration:.0f} s at "
            f"{args.rate:.0f} trades/s"
        )
        table = (
            markdown_table(rows)
            + "\n\nCPU, % of one core, over the measured window:\n\n"
            + cpu_table(rows)
        )
        log(table)
        (out / "tables.md").write_text(table + "\n")
    for r in runs:
        if r.profile:
            log(f"=== profile of the server ({r.scenario}, {r.sockets} sockets)")
            print_profile(r.profile)
    for idle in results.get("idle", []):
        log(
            f"=== idle ({idle.get('server', 'daphne')}, {idle['layer']}): "
            f"{idle.get('opened')}/{idle['target']} sockets, "
            f"{idle.get('kb_per_socket', float('nan')):.1f} KB per socket, growth over rounds "
            f"{idle.get('growth_kb', 0) / 1024:+.1f} MB"
        )
    if runs and not args.no_png:
        plot(runs, out, args.png)
    log(f"done in {results['elapsed_s']:.0f}s; {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
