"""Processes and fixtures shared by the trust scenarios: a database of their own, web
servers started exactly as the Procfile's `web` role, PostgreSQL crashes, a market and
funded traders, the checks run after each scenario, and the figures table.

Everything runs against real PostgreSQL and Redis; each run uses a database and a
channel-layer prefix of its own, so that it shares nothing with other users of the
machine but the two servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.orders import (  # noqa: E402
    LOT,
    MID,
    SERVER_ENV,
    TICK,
    free_port,
    percentile,
    perp_create,
    process_group_stop,
)

__all__ = ["LOT", "MID", "TICK", "free_port", "percentile"]

HOST = "127.0.0.1"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
SYMBOL = "TRUST-PERP"


def log(msg: str) -> None:
    print(msg, flush=True)


def database_url(name: str) -> str:
    """`$TRUST_DATABASE_URL`, else a database called `name` on the local server."""
    return os.environ.get("TRUST_DATABASE_URL") or DEFAULT_PG + name


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS


def _admin(db_url: str) -> tuple[str, str]:
    parts = urllib.parse.urlparse(db_url)
    return parts.path.lstrip("/"), urllib.parse.urlunparse(parts._replace(path="/postgres"))


def database_create(db_url: str) -> None:
    """A fresh, empty database (an earlier one of that name is dropped)."""
    import psycopg
    from psycopg import sql

    name, admin = _admin(db_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(db_url: str) -> None:
    import psycopg
    from psycopg import sql

    name, admin = _admin(db_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def server_env(db_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a production web process for this run."""
    env = dict(os.environ)
    env.pop("DB_POOL_MAX", None)  # the Procfile's default applies unless asked for
    env.update(SERVER_ENV)
    env.update(
        DATABASE_URL=db_url,
        REDIS_URL=redis_url(),
        DJANGO_SETTINGS_MODULE="dexsite.settings",
        CHANNEL_LAYER_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
        # The matcher's queues too: two runs on one Redis must not take each other's
        # orders (a matcher runs a request on its own database).
        MATCHER_PREFIX=prefix,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def setup_django(db_url: str, prefix: str) -> None:
    """Django in this process, on the run's database (migrated here)."""
    for key, value in server_env(db_url, prefix).items():
        os.environ[key] = value
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def procfile_role(role: str, procfile: str = "Procfile") -> str:
    """A role's command line, as the Procfile (or `procfile`) gives it."""
    for line in (ROOT / procfile).read_text().splitlines():
        if line.startswith(f"{role}:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError(f"no {role} role in {procfile}")


def procfile_web() -> str:
    """The production roles that serve the site (the router in front of the others)."""
    return " | ".join(f"{r}: {procfile_role(r)}" for r in ("http", "ws"))


class RoleProcess:
    """One process of a Procfile role, started as the Procfile starts it; `kill9` and
    `start` crash and replace it."""

    role = ""
    procfile = "Procfile"

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start_env(self) -> dict[str, str]:
        return self.env

    def start(self) -> None:
        with self.log_path.open("a") as out:
            # `exec`: the pid is the process's own.
            self.proc = subprocess.Popen(  # noqa: S603
                [
                    shutil.which("bash") or "/bin/bash",
                    "-c",
                    "exec " + procfile_role(self.role, self.procfile),
                ],
                cwd=ROOT,
                env=self.start_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            process_group_stop(self.proc)


class MatcherProcess(RoleProcess):
    """The Procfile's `matcher` role."""

    role = "matcher"

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        # Its database sessions named apart from the web processes' (the scenarios wait
        # for a killed web process's sessions to end).
        url = env["DATABASE_URL"].replace("application_name=", "application_name=matcher-")
        super().__init__(dict(env, DATABASE_URL=url), log_path)

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until it holds the lease of every book."""
        import psycopg

        t0 = time.monotonic()
        url = self.env["DATABASE_URL"].split("?")[0]
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() - t0 < timeout:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"matcher exited; see {self.log_path}")
                held, books = conn.execute(
                    "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = %s AND granted AND pid IN (SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database())),"
                    " (SELECT count(*) FROM trading_book)",
                    [MATCHER_LEASE_CLASS],
                ).fetchone()
                if books and held >= books:
                    return time.monotonic() - t0
                time.sleep(0.05)
        raise RuntimeError(f"matcher not ready after {timeout}s; see {self.log_path}")


# trading.matcher.server.LEASE_CLASS (not imported: Django may not be set up here).
MATCHER_LEASE_CLASS = 0x4D41


class ServedRole(RoleProcess):
    """One process of a Procfile role that serves on a port of its own (`port_env`
    names it); `kill9` and `start` crash and replace it on the same port."""

    port_env = ""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        super().__init__(env, log_path)
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        return [self.pid]

    def start_env(self) -> dict[str, str]:
        return dict(self.env, **{self.port_env: str(self.port)})

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until the server answers a read that goes to the database."""
        return _wait_answering(self.url, self.proc, self.log_path, timeout)

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children."""
        return _rss(_tree(self.pid))

    def log_count(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except OSError:
            return 0


class HttpServer(ServedRole):
    """The Procfile's `http` role: plain HTTP (granian, WSGI)."""

    role = "http"
    port_env = "HTTP_PORT"


class WsServer(ServedRole):
    """The Procfile's `ws` role: WebSockets (uvicorn; it answers plain HTTP too)."""

    role = "ws"
    port_env = "WS_PORT"


class WebServer(ServedRole):
    """Procfile.dev's `web` role: one process serving HTTP and WebSockets on one port,
    as the embedded run does (MATCHER as its environment says)."""

    role = "web"
    procfile = "Procfile.dev"
    port_env = "WEB_PORT"


class Site:
    """The site as production serves it: the `http` and `ws` roles behind the router,
    on the router's port. `kill9` and `start` crash and replace the two serving
    processes (the router stays, as a load balancer would)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        stem = log_path.with_suffix("")
        self.http = HttpServer(env, stem.with_name(stem.name + "-http.log"))
        self.ws = WsServer(env, stem.with_name(stem.name + "-ws.log"))
        prefix = stem.with_name(stem.name + "-nginx")
        self.router = Router(prefix, [self.http.port], [self.ws.port])
        self.log_path = log_path
        self.port = self.router.port
        for role in (self.http, self.ws):
            role.log_path.write_text("")

    @property
    def url(self) -> str:
        return self.router.url

    @property
    def roles(self) -> list[Any]:
        return [self.http, self.ws, self.router]

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self.roles]

    def start(self) -> None:
        for role in (self.http, self.ws):
            role.start()
        if self.router.proc is None or self.router.proc.poll() is not None:
            self.router.start()

    def kill9(self) -> None:
        for role in (self.http, self.ws):
            role.kill9()

    def stop(self) -> None:
        for role in self.roles:
            role.stop()

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until each role answers, and the router answers from the `http` role."""
        t0 = time.monotonic()
        for role in self.roles:
            role.wait_ready(max(timeout - (time.monotonic() - t0), 1))
        return time.monotonic() - t0

    def rss_bytes(self) -> int:
        """Resident memory of every process of the site."""
        return _rss([p for root in self.pids for p in _tree(root)])

    def log_count(self, text: str) -> int:
        return self.http.log_count(text) + self.ws.log_count(text)


def _wait_answering(
    url: str, proc: subprocess.Popen | None, log_path: Path, timeout: float
) -> float:
    """Seconds until `url` answers a read that goes to the database."""
    t0 = time.monotonic()
    url = f"{url}/api/v1/markets/{SYMBOL}/depth?mode=REAL&levels=1"
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited; see {log_path}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310
            if r.status == 200:
                return time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout}s; see {log_path}")


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def _tree(root: int) -> list[int]:
    from bench.orders import _tree as tree

    return tree(root)


@contextlib.contextmanager
def servers(env: dict[str, str], out_dir: Path, n: int, tag: str) -> Iterator[list[Site]]:
    """`n` sites (each the `http` and `ws` roles behind a router) and the matcher they
    hand orders to, started together and stopped whatever happens."""
    started = [Site(env, out_dir / f"{tag}-web{i}.log") for i in range(n)]
    matcher = MatcherProcess(env, out_dir / f"{tag}-matcher.log")
    matcher.log_path.write_text("")
    try:
        matcher.start()
        for s in started:
            s.start()
        matcher.wait_ready()
        for s in started:
            s.wait_ready()
        yield started
    finally:
        for s in [*started, matcher]:
            s.stop()


@contextlib.contextmanager
def web_and_matcher(
    env: dict[str, str], out_dir: Path, tag: str
) -> Iterator[tuple[Site, MatcherProcess]]:
    """One site and its matcher, each of which a scenario may kill and restart."""
    web = Site(env, out_dir / f"{tag}-web.log")
    matcher = MatcherProcess(env, out_dir / f"{tag}-matcher.log")
    matcher.log_path.write_text("")
    for p in (web, matcher):
        p.start()
    try:
        matcher.wait_ready()
        web.wait_ready()
        yield web, matcher
    finally:
        web.stop()
        matcher.stop()


# -- the router -------------------------------------------------------------------------

NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def nginx_config(prefix: Path, port: int, http_ports: list[int], ws_ports: list[int]) -> Path:
    """deploy/nginx.conf with its ports replaced: listening on `port`, `/ws/` to the
    `ws` processes on `ws_ports`, the rest to the `http` processes on `http_ports`;
    written to `prefix`/nginx.conf (nginx's prefix: its pid and temporary files)."""
    text = NGINX_CONF.read_text()

    def servers(ports: list[int]) -> str:
        return "\n        ".join(f"server {HOST}:{p};" for p in ports)

    for old, new in (
        ("listen 8000;", f"listen {HOST}:{port};"),
        ("server 127.0.0.1:8001;", servers(http_ports)),
        ("server 127.0.0.1:8002;", servers(ws_ports)),
    ):
        if old not in text:
            raise RuntimeError(f"{NGINX_CONF}: no '{old}' to replace")
        text = text.replace(old, new)
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_path() -> str | None:
    """Debian's nginx: on PATH, or in /usr/sbin where a user's PATH may not look."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def nginx_argv(conf: Path) -> list[str]:
    """nginx in the foreground on `conf`, its prefix the folder `conf` is in."""
    nginx = nginx_path()
    if nginx is None:
        raise RuntimeError("nginx not found (make install-nginx)")
    return [
        nginx,
        "-p",
        str(conf.parent),
        "-c",
        str(conf),
        "-e",
        "stderr",
        "-g",
        "daemon off;",
    ]


class Router:
    """nginx as the Procfile's `router` role runs it, on a port of its own in front of
    the given `http` and `ws` processes."""

    def __init__(self, prefix: Path, http_ports: list[int], ws_ports: list[int]) -> None:
        self.port = free_port()
        self.conf = nginx_config(prefix, self.port, http_ports, ws_ports)
        self.log_path = prefix / "nginx.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("a") as out:
            self.proc = subprocess.Popen(  # noqa: S603
                nginx_argv(self.conf),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30, path: str = "") -> float:
        """Seconds until it answers a read through to the HTTP role (a depth read, or
        `path`)."""
        t0 = time.monotonic()
        url = self.url + (path or f"/api/v1/markets/{SYMBOL}/depth?mode=REAL&levels=1")
        while time.monotonic() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited; see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return time.monotonic() - t0
            time.sleep(0.05)
        raise RuntimeError(f"nginx not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            process_group_stop(self.proc)


# -- PostgreSQL -------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found on PATH")
    return found


def _cluster() -> str:
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]


def pg_ctl(action: str, *extra: str) -> None:
    subprocess.run(  # noqa: S603
        [_tool("pg_ctlcluster"), "--skip-systemctl-redirect", _cluster(), "main", action, *extra],
        check=True,
        capture_output=True,
        timeout=120,
    )


def pg_is_up() -> bool:
    r = subprocess.run([_tool("pg_isready"), "-h", HOST, "-q"], check=False)  # noqa: S603
    return r.returncode == 0


@contextlib.contextmanager
def pg_restarted_after() -> Iterator[None]:
    """Whatever happens inside, PostgreSQL is running again on the way out."""
    try:
        yield
    finally:
        if not pg_is_up():
            with contextlib.suppress(subprocess.CalledProcessError):
                pg_ctl("start")
        for _ in range(300):
            if pg_is_up():
                break
            time.sleep(0.1)


# -- fixtures ---------------------------------------------------------------------------


def market_create(symbol: str = SYMBOL) -> Any:
    """A BTC-style perpetual (0.5 tick, 0.001 lot) under a name only these runs use."""
    return perp_create(symbol, index_price=MID)


def trader_create(username: str, funds: Decimal, mode: str = "REAL") -> tuple[Any, str]:
    """A trader credited `funds` USDC by a deposit ledger row; returns (user, API key)."""
    from django.db import transaction

    from accounts.models import User
    from accounts.services import token_for
    from ledger.models import Balance, LedgerReason
    from ledger.services import Posting, balances_ensure, balances_lock, ledger_apply

    user = User.objects.create(username=username)
    key = (user.pk, "USDC", mode)
    with transaction.atomic():
        balances_ensure([key])
        rows = balances_lock([key])
        ledger_apply([Posting(user.pk, "USDC", mode, funds, LedgerReason.DEPOSIT, "trust")], rows)
        Balance.objects.bulk_update(rows.values(), ["total"])
    return user, token_for(user)


# -- checks -----------------------------------------------------------------------------


def fills_consistent() -> list[str]:
    """No double fill: every order's fills add up to its filled quantity (never past its
    quantity), every trade has one buyer and one seller for the same quantity."""
    from django.db import connection

    problems: list[str] = []
    with connection.cursor() as c:
        c.execute(
            """
            SELECT o.id, o.qty, o.filled_qty, COALESCE(SUM(f.qty), 0)
            FROM trading_order o LEFT JOIN trading_fill f ON f.order_id = o.id
            GROUP BY o.id HAVING COALESCE(SUM(f.qty), 0) <> o.filled_qty
                OR o.filled_qty > o.qty
            LIMIT 10
            """
        )
        for oid, qty, filled, fills in c.fetchall():
            problems.append(f"order {oid}: qty {qty} filled {filled} fills sum {fills}")
        c.execute(
            """
            SELECT t.id, t.qty, COUNT(f.id),
                   SUM(CASE WHEN f.side = 'BUY' THEN f.qty ELSE 0 END),
                   SUM(CASE WHEN f.side = 'SELL' THEN f.qty ELSE 0 END)
            FROM trading_trade t LEFT JOIN trading_fill f ON f.trade_id = t.id
            GROUP BY t.id
            HAVING COUNT(f.id) <> 2
                OR SUM(CASE WHEN f.side = 'BUY' THEN f.qty ELSE 0 END) <> t.qty
                OR SUM(CASE WHEN f.side = 'SELL' THEN f.qty ELSE 0 END) <> t.qty
            LIMIT 10
            """
        )
        for tid, qty, n, buys, sells in c.fetchall():
            problems.append(f"trade {tid}: qty {qty}, {n} fills, buys {buys} sells {sells}")
        c.execute(
            "SELECT COALESCE(SUM(qty) FILTER (WHERE side = 'BUY'), 0), "
            "COALESCE(SUM(qty) FILTER (WHERE side = 'SELL'), 0) FROM trading_fill"
        )
        buys, sells = c.fetchone()
        if buys != sells:
            problems.append(f"bought {buys} != sold {sells}")
    return problems


def balances_nonnegative() -> list[str]:
    from django.db.models import F

    from ledger.models import Balance

    bad = Balance.objects.filter(total__lt=F("locked")) | Balance.objects.filter(locked__lt=0)
    return [f"balance {b.trader_id}/{b.asset}/{b.mode}: {b.total} {b.locked}" for b in bad]


def invariants(acknowledged: list[int] | None = None) -> list[str]:
    """trading.invariants.check_invariants, told the order ids clients were given."""
    from trading.invariants import check_invariants

    return check_invariants(acknowledged=acknowledged or ())


def invariants_command(
    db_url: str, prefix: str, acknowledged: list[int] | None = None
) -> tuple[int, str]:
    """`manage.py check_invariants` as an operator would run it: (exit status, output)."""
    with tempfile.NamedTemporaryFile("w", suffix=".ids") as ids:
        ids.write("\n".join(str(i) for i in acknowledged or ()))
        ids.flush()
        r = subprocess.run(  # noqa: S603
            [sys.executable, "manage.py", "check_invariants", "--acknowledged", ids.name],
            cwd=ROOT,
            env=server_env(db_url, prefix),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    return r.returncode, (r.stdout + r.stderr).strip()


# -- figures ----------------------------------------------------------------------------


def figures_table(title: str, rows: list[tuple[str, Any]]) -> str:
    out = [f"| {title} | |", "|---|--:|"]
    for name, value in rows:
        if isinstance(value, float):
            value = f"{value:,.2f}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in sorted(value.items())) or "none"
        out.append(f"| {name} | {value} |")
    return "\n".join(out)


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, default=str))


def results_dir() -> Path:
    """Where the servers' logs go: outside the source tree."""
    out = Path(tempfile.gettempdir()) / "dexsite-trust"
    out.mkdir(parents=True, exist_ok=True)
    return out
