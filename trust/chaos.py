"""Concurrency and crash recovery, against real web processes, PostgreSQL and Redis.

A "web process" here is the site as the Procfile serves it: the `http` and `ws` roles
behind a router (nginx on deploy/nginx.conf) on a port of its own; killing it kills the
`http` and `ws` processes, and the router stays.

Scenario 3, concurrency: two web processes (each on its own port) on one database and one Redis. Sixteen client coroutines share ONE account (one
API key) and place, cancel and withdraw at once on ONE book, with a counterparty account
trading against it so that orders cross; requests alternate between the two processes.
Then a withdrawal race: the account's orders are cancelled, its withdrawable amount W
read under the balance lock, and sixteen withdrawals of W/5 sent at once: exactly five
may pass. Afterwards: no double fill (each order's fills add up to its filled quantity,
never past its quantity; every trade has one buyer and one seller; bought = sold), no
double spend (no balance negative at any sampled moment nor at the end, balances =
ledger sums, locks = reservations + pending withdrawals), no 5xx (PostgreSQL's deadlock
and serialization failures are retried inside the services), then the invariant checker.

Scenario 4, crash recovery: clients place and cancel orders against one web process
while it is killed with SIGKILL at random moments and restarted on the same port (and,
in the full run, once PostgreSQL is stopped in immediate mode and started again under
load). A request whose answer was lost is sent again with the same clientOrderId until
it has one. Every order acknowledged with a 2xx is recorded; afterwards every one of
them must be in the database, once. After each restart, with the clients held: the
depth the new process serves equals the database's book at the moment of the kill,
the book's seq never went back (no seq a WebSocket client saw before the crash is
reused), a fresh WebSocket subscription's snapshot carries the Book row's seq, and
the deltas after it are contiguous. (The orders the killed process had already handed
to the matcher are still placed: the book is compared once they are.)

Scenario 5, matcher crashes: the same clients against one web process while its matcher
(the Procfile's `matcher` role) is killed with SIGKILL at random moments and a new one
started. Every acknowledged order must be in the database, once; the only 5xx answers
are 503s (MATCHER_UNAVAILABLE: nothing was done; ORDER_STATUS_UNKNOWN: the order is
looked up by its clientOrderId on the retry); the invariants hold.

Usage::

    python trust/chaos.py [--quick] [--only concurrency|crash|matcher] [--duration S]
        [--workers N] [--kills N] [--clients N] [--no-pg-crash] [--db-url URL]
        [--json PATH] [--keep-db]

The PostgreSQL crash runs `pg_ctlcluster --skip-systemctl-redirect <version> main stop
-m immediate` and `start` (root or the postgres user); PostgreSQL is started again
whatever happens to the script. `--quick` (seconds: 4 s of concurrency, 3 kills, no
PostgreSQL crash) is what trust/tests/test_chaos_quick.py runs.

The database is `--db-url`, else `$TRUST_DATABASE_URL`, else
postgres://postgres@127.0.0.1:5432/dexsite_chaos: dropped, created and migrated by the
script, dropped at the end. Redis is `$REDIS_URL` (default redis://127.0.0.1:6379/0),
with a channel-layer prefix of the run's own. Server logs go to the temporary
directory's dexsite-trust/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trust import procs  # noqa: E402
from trust.procs import LOT, MID, SYMBOL, TICK, log  # noqa: E402

MODE = "REAL"
APP_NAME = "trust-web"
WALLET = "0x" + "5A" * 20


# -- HTTP -------------------------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    server_errors: Counter = field(default_factory=Counter)
    transport_errors: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "5xx": dict(self.server_errors),
            "transport_errors": dict(self.transport_errors),
        }


async def call(
    session: Any,
    tally: Tally,
    method: str,
    url: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
    what: str = "",
) -> tuple[int, Any]:
    """One request. Returns (status, JSON body); status 0 when no answer came back."""
    import aiohttp

    headers = {"Authorization": f"Token {token}"} if token else {}
    tally.requests += 1
    try:
        async with session.request(method, url, json=body, headers=headers) as resp:
            status = resp.status
            text = await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        tally.transport_errors[type(e).__name__] += 1
        return 0, None
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = None
    if 200 <= status < 300:
        tally.accepted += 1
    elif status >= 500:
        tally.server_errors[f"{what} {status}".strip()] += 1
    else:
        code = ""
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            code = payload["error"].get("code", "")
        tally.rejected[f"{what} {code or status}".strip()] += 1
    return status, payload


def order_body(side: str, price: Decimal, lots: int, cid: str | None = None) -> dict[str, Any]:
    body = {
        "market": SYMBOL,
        "mode": MODE,
        "side": side,
        "type": "LIMIT",
        "price": str(price),
        "qty": str(lots * LOT),
        "timeInForce": "GTC",
    }
    if cid:
        body["clientOrderId"] = cid
    return body


def random_order(rng: random.Random, cross_p: float = 0.5) -> tuple[str, Decimal, int]:
    side = rng.choice(("BUY", "SELL"))
    sign = 1 if side == "BUY" else -1
    k = rng.randint(1, 10)
    through = rng.random() < cross_p
    price = MID + (sign * k if through else -sign * k) * TICK
    return side, price, rng.randint(1, 20)


def session_for(limit: int) -> Any:
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=30),
    )


# -- scenario 3: concurrency ------------------------------------------------------------


async def _concurrency_load(
    urls: list[str], main_token: str, counter_token: str, duration: float, workers: int
) -> dict[str, Any]:
    tally = Tally()
    open_ids: list[int] = []
    acked: list[int] = []
    negative: list[str] = []
    withdrawals_accepted: list[Decimal] = []
    perf = time.perf_counter
    t_end = perf() + duration
    rr = itertools.count()

    async with session_for(workers * 2) as session:

        async def worker(i: int) -> None:
            rng = random.Random(3000 + i)
            while perf() < t_end:
                base = urls[next(rr) % len(urls)]
                r = rng.random()
                if r < 0.40:
                    side, price, lots = random_order(rng)
                    status, body = await call(
                        session,
                        tally,
                        "POST",
                        f"{base}/api/v1/trade",
                        main_token,
                        order_body(side, price, lots),
                        "place",
                    )
                    if 200 <= status < 300:
                        acked.append(body["id"])
                        if body["status"] in ("NEW", "PARTIALLY_FILLED"):
                            open_ids.append(body["id"])
                elif r < 0.65:
                    side, price, lots = random_order(rng, cross_p=0.8)
                    status, body = await call(
                        session,
                        tally,
                        "POST",
                        f"{base}/api/v1/trade",
                        counter_token,
                        order_body(side, price, lots),
                        "counterparty place",
                    )
                    if 200 <= status < 300:
                        acked.append(body["id"])
                elif r < 0.80:
                    if not open_ids:
                        continue
                    oid = open_ids.pop(rng.randrange(len(open_ids)))
                    await call(
                        session,
                        tally,
                        "DELETE",
                        f"{base}/api/v1/orders/{oid}",
                        main_token,
                        None,
                        "cancel",
                    )
                elif r < 0.92:
                    huge = rng.random() < 0.3
                    amount = Decimal(10**12) if huge else Decimal(rng.randint(10, 500))
                    status, _ = await call(
                        session,
                        tally,
                        "POST",
                        f"{base}/api/v1/vault/withdraw",
                        main_token,
                        {"asset": "USDC", "amount": str(amount), "address": WALLET},
                        "withdraw",
                    )
                    if 200 <= status < 300:
                        withdrawals_accepted.append(amount)
                else:
                    status, body = await call(
                        session,
                        tally,
                        "GET",
                        f"{base}/api/v1/balances?mode={MODE}",
                        main_token,
                        None,
                        "balances",
                    )
                    for b in body if status == 200 else []:
                        if any(Decimal(b[k]) < 0 for k in ("total", "available", "locked")):
                            negative.append(json.dumps(b))

        async def progress() -> None:
            t0 = perf()
            while perf() < t_end:
                await asyncio.sleep(min(5.0, max(0.1, t_end - perf())))
                log(
                    f"  {perf() - t0:5.1f}s: {tally.requests} requests, {tally.accepted} "
                    f"accepted, {sum(tally.server_errors.values())} 5xx"
                )

        t0 = perf()
        await asyncio.gather(progress(), *(worker(i) for i in range(workers)))
        elapsed = perf() - t0
    return {
        "tally": tally,
        "acked": acked,
        "negative": negative,
        "withdrawals": withdrawals_accepted,
        "elapsed": elapsed,
    }


async def _withdrawal_race(urls: list[str], token: str, amount: Decimal, n: int) -> Tally:
    tally = Tally()
    async with session_for(n) as session:
        await asyncio.gather(
            *(
                call(
                    session,
                    tally,
                    "POST",
                    f"{urls[i % len(urls)]}/api/v1/vault/withdraw",
                    token,
                    {"asset": "USDC", "amount": str(amount), "address": WALLET},
                    "race withdraw",
                )
                for i in range(n)
            )
        )
    return tally


def _withdrawable(trader_id: int) -> Decimal:
    from django.db import transaction

    from ledger.services import balances_lock
    from trading.margin import withdrawable

    key = (trader_id, "USDC", MODE)
    with transaction.atomic():
        return withdrawable(balances_lock([key])[key], trader_id)


def _approve_pending() -> int:
    from accounts.models import Transfer, TransferKind, TransferStatus
    from accounts.services.vault import withdrawal_approve

    pending = Transfer.objects.filter(kind=TransferKind.WITHDRAWAL, status=TransferStatus.PENDING)
    n = 0
    for t in pending.order_by("pk"):
        withdrawal_approve(withdrawal_id=t.pk, tx_hash="0x" + f"{t.pk:064x}", by=None)
        n += 1
    return n


def run_concurrency(
    db_url: str, prefix: str, duration: float, workers: int, out_dir: Path
) -> dict[str, Any]:
    from accounts.models import LinkedWallet
    from accounts.services.wallets import address_parse

    log(f"\n== scenario 3: concurrency, 2 web processes, {workers} clients, one account ==")
    procs.market_create()
    main, main_token = procs.trader_create("trust-main", Decimal("2000000"), MODE)
    _, counter_token = procs.trader_create("trust-counter", Decimal("100000000"), MODE)
    LinkedWallet.objects.create(trader=main, address=address_parse(WALLET))
    env = procs.server_env(
        f"{db_url}?application_name={APP_NAME}",
        prefix,
        LOG_LEVEL="INFO",
        THROTTLE_RATE_WITHDRAW="1000000/hour",
    )
    with procs.servers(env, out_dir, 2, "concurrency") as webs:
        urls = [w.url for w in webs]
        log(f"  web processes: {', '.join(urls)} ({procs.procfile_web()})")
        load = asyncio.run(_concurrency_load(urls, main_token, counter_token, duration, workers))
        tally: Tally = load["tally"]

        # The race: nothing of the account's open, then W/5 asked for 16 times at once.
        cancel = Tally()

        async def cancel_all() -> None:
            async with session_for(1) as s:
                await call(s, cancel, "DELETE", f"{urls[0]}/api/v1/orders?mode={MODE}", main_token)

        asyncio.run(cancel_all())
        free = _withdrawable(main.pk)
        share = (free / 5).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
        race = asyncio.run(_withdrawal_race(urls, main_token, share, 16)) if share > 0 else Tally()
        free_after = _withdrawable(main.pk)
        retries = sum(w.log_count("retrying ") for w in webs)
        logged_500 = sum(w.log_count("Internal Server Error") for w in webs)
    approved = _approve_pending()

    fill_problems = procs.fills_consistent()
    negative = load["negative"] + procs.balances_nonnegative()
    problems = procs.invariants(acknowledged=load["acked"])
    cmd_rc, cmd_out = procs.invariants_command(db_url, prefix, load["acked"])
    race_ok = share > 0 and race.accepted == 5 and free_after >= 0
    five_xx = sum(tally.server_errors.values()) + sum(race.server_errors.values())
    five_xx += sum(cancel.server_errors.values())
    figures = {
        "duration_s": round(load["elapsed"], 1),
        "clients": workers,
        "web_processes": 2,
        "requests": tally.requests,
        "accepted": tally.accepted,
        "rejected": dict(tally.rejected),
        "5xx": five_xx,
        "5xx_detail": dict(tally.server_errors + race.server_errors),
        "transport_errors": sum(tally.transport_errors.values()),
        "requests_per_s": round(tally.requests / load["elapsed"], 1),
        "orders_acknowledged": len(load["acked"]),
        "withdrawals_accepted": len(load["withdrawals"]),
        "withdrawals_approved": approved,
        "retried_deadlocks_or_serialization_failures": retries,
        "server_logged_errors": logged_500,
        "race_withdrawable": str(free),
        "race_amount_each": str(share),
        "race_requests": race.requests,
        "race_accepted": race.accepted,
        "race_rejected": dict(race.rejected),
        "race_withdrawable_after": str(free_after),
        "negative_balances_seen": len(negative),
        "fill_problems": fill_problems,
        "invariant_violations": problems,
        "check_invariants_command": {"exit": cmd_rc, "output": cmd_out[-2000:]},
    }
    figures["passed"] = bool(
        five_xx == 0
        and figures["transport_errors"] == 0
        and logged_500 == 0
        and race_ok
        and not negative
        and not fill_problems
        and not problems
        and cmd_rc == 0
    )
    log(
        f"  race: withdrawable {free}, 16 x {share} sent, {race.accepted} accepted "
        f"(5 expected), {free_after} withdrawable after"
    )
    for p in fill_problems + problems + negative[:10]:
        log(f"  PROBLEM: {p}")
    if cmd_rc:
        log(f"  check_invariants command failed: {cmd_out[-1000:]}")
    return figures


# -- scenario 4: crash recovery ---------------------------------------------------------


@dataclass
class Ack:
    order_id: int
    status: str
    filled: Decimal


@dataclass
class CrashState:
    go: asyncio.Event
    stop: bool = False
    acked: dict[str, Ack] = field(default_factory=dict)  # clientOrderId -> first ack
    duplicates: list[str] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    unanswered: int = 0  # requests sent again after a lost answer or a 5xx
    last_ack: float = 0.0


class DepthObserver:
    """A WebSocket client on the market's depth channel that reconnects after every
    crash: it keeps the book from snapshot + deltas and checks the seq."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.max_seq = -1  # highest seq seen on any connection
        self.seq: int | None = None  # seq of `book` on the current connection
        self.book: dict[str, dict[str, str]] = {"bids": {}, "asks": {}}
        self.snapshots: list[int] = []  # snapshot seqs, in order
        self.first_delta: dict[int, int] = {}  # snapshot seq -> first delta seq after it
        self.gaps: list[tuple[int, int]] = []
        self.reused: list[tuple[int, int]] = []  # (snapshot seq, highest seen before)
        self.connections = 0
        self.live = False  # connected, and past the snapshot
        self.disconnects: Counter = Counter()
        self.stop = False

    async def run(self) -> None:
        import websockets

        url = f"ws://{procs.HOST}:{self.port}/ws/?market={SYMBOL}&mode={MODE}"
        while not self.stop:
            try:
                async with websockets.connect(url, open_timeout=5) as ws:
                    self.connections += 1
                    while not self.stop:
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 0.5)
                        except TimeoutError:
                            continue
                        self._on(json.loads(raw))
            except Exception as e:
                # The process was killed: keep the book as it last was, for comparison.
                self.disconnects[type(e).__name__] += 1
                self.live = False
                await asyncio.sleep(0.1)

    def _on(self, msg: dict[str, Any]) -> None:
        if msg.get("type") != "depth":
            return
        seq = msg["seq"]
        if msg.get("snapshot"):
            if seq < self.max_seq:
                self.reused.append((seq, self.max_seq))
            self.book = {side: {px: qty for px, qty in msg[side]} for side in ("bids", "asks")}
            self.snapshots.append(seq)
            self.live = True
        else:
            if not self.live or self.seq is None:
                return
            if seq != self.seq + 1:
                self.gaps.append((self.seq, seq))
            if self.snapshots and self.snapshots[-1] not in self.first_delta:
                self.first_delta[self.snapshots[-1]] = seq
            for side in ("bids", "asks"):
                for px, qty in msg[side]:
                    if Decimal(qty) == 0:
                        self.book[side].pop(px, None)
                    else:
                        self.book[side][px] = qty
        self.seq = seq
        self.max_seq = max(self.max_seq, seq)

    def levels(self) -> dict[str, list[list[str]]]:
        bids = sorted(self.book["bids"].items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.book["asks"].items(), key=lambda kv: Decimal(kv[0]))
        return {"bids": [list(x) for x in bids], "asks": [list(x) for x in asks]}


async def _crash_client(
    i: int, state: CrashState, url: str, token: str, session: Any, seed: int
) -> None:
    rng = random.Random(seed)
    mine: list[int] = []
    n = 0
    while not state.stop:
        await state.go.wait()
        if mine and rng.random() < 0.2:
            oid = mine.pop(rng.randrange(len(mine)))
            await call(
                session, state.tally, "DELETE", f"{url}/api/v1/orders/{oid}", token, None, "cancel"
            )
            continue
        n += 1
        cid = f"c{i}-{n}"
        side, price, lots = random_order(rng)
        body = order_body(side, price, lots, cid)
        while True:
            status, payload = await call(
                session, state.tally, "POST", f"{url}/api/v1/trade", token, body, "place"
            )
            if 200 <= status < 300:
                break
            if 400 <= status < 500:
                payload = None
                break
            # No answer, or a 5xx: the order may or may not exist. Same clientOrderId again.
            state.unanswered += 1
            await asyncio.sleep(0.05)
            await state.go.wait()
        if payload is None:
            continue
        ack = Ack(payload["id"], payload["status"], Decimal(payload["filledQty"]))
        first = state.acked.setdefault(cid, ack)
        if first.order_id != ack.order_id:
            state.duplicates.append(f"{cid}: {first.order_id} and {ack.order_id}")
        state.last_ack = time.monotonic()
        if ack.status in ("NEW", "PARTIALLY_FILLED"):
            mine.append(ack.order_id)


def _db_book() -> tuple[int, dict[str, list[list[str]]]]:
    from trading.selectors import depth_get

    d = depth_get(symbol=SYMBOL, mode=MODE, levels=100000)
    return d["seq"], {"bids": d["bids"], "asks": d["asks"]}


def _old_backends(db_name: str) -> int:
    from django.db import connection

    with connection.cursor() as c:
        c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            [db_name, APP_NAME],
        )
        return c.fetchone()[0]


class DbThread:
    """The ORM from async code, on one thread (one connection) of its own."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1)

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def reconnect(self) -> None:
        from django.db import connections

        await self.run(connections.close_all)

    def close(self) -> None:
        from django.db import connections

        self.pool.submit(connections.close_all).result()
        self.pool.shutdown()


async def _wait_backends_gone(db: DbThread, db_name: str, timeout: float = 15) -> None:
    """Until the killed process's PostgreSQL sessions ended: a COMMIT it sent before
    dying still completes, and the state read afterwards includes it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await db.run(_old_backends, db_name) == 0:
            return
        await asyncio.sleep(0.05)


async def _book_settled(db: DbThread, quiet: float = 0.3, timeout: float = 15) -> None:
    """Until the book's seq has not moved for `quiet` seconds."""
    from trading.models import Book

    def seq() -> int:
        return Book.objects.get(market__symbol=SYMBOL, mode=MODE).seq

    deadline = time.monotonic() + timeout
    last, since = await db.run(seq), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        await asyncio.sleep(0.05)
        now = await db.run(seq)
        if now != last:
            last, since = now, time.monotonic()


async def _fetch_json(url: str) -> Any:
    async with session_for(1) as s, s.get(url) as r:
        return await r.json()


async def _clients_started(
    state: CrashState, url: str, tokens: list[str], session: Any, seed: int
) -> list[asyncio.Task]:
    """One `_crash_client` per token, let go and given a second to get going."""
    clients = [
        asyncio.create_task(_crash_client(i, state, url, tok, session, seed + i))
        for i, tok in enumerate(tokens)
    ]
    state.go.set()
    await asyncio.sleep(1.0)
    return clients


async def _crash_main(
    web: procs.Site,
    tokens: list[str],
    db_name: str,
    kills: int,
    pg_crash: bool,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    state = CrashState(asyncio.Event())
    observer = DepthObserver(web.port)
    cycles: list[dict[str, Any]] = []
    problems: list[str] = []
    pg: dict[str, Any] = {}
    db = DbThread()
    async with session_for(len(tokens) * 2) as session:
        obs_task = asyncio.create_task(observer.run())
        clients = await _clients_started(state, web.url, tokens, session, seed)
        for k in range(kills):
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            web.kill9()
            t_kill = time.monotonic()
            state.go.clear()
            # What the WebSocket client held when its connection broke: read it before
            # the new process can send a snapshot.
            deadline = t_kill + 2
            while observer.live and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            held_seq, held_book = observer.seq, observer.levels()
            n_snap = len(observer.snapshots)
            web.start()
            await _wait_backends_gone(db, db_name)
            # The orders the dead process had handed to the matcher are still placed:
            # the book is as the kill left it once those are.
            await _book_settled(db)
            seq_db, book_db = await db.run(_db_book)
            seen = observer.max_seq
            compared = held_seq == seq_db
            if seen > seq_db:
                problems.append(f"kill {k + 1}: clients saw seq {seen}, database holds {seq_db}")
            if compared and held_book != book_db:
                problems.append(f"kill {k + 1}: book clients held at seq {seq_db} != database")
            await asyncio.to_thread(web.wait_ready)
            recovery = time.monotonic() - t_kill
            served = await _fetch_json(
                f"{web.url}/api/v1/markets/{SYMBOL}/depth?mode={MODE}&levels=1000"
            )
            if served["seq"] != seq_db or [served["bids"], served["asks"]] != [
                book_db["bids"],
                book_db["asks"],
            ]:
                problems.append(f"kill {k + 1}: restarted process serves another book")
            deadline = time.monotonic() + 15
            while len(observer.snapshots) == n_snap and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            snap = observer.snapshots[-1] if len(observer.snapshots) > n_snap else None
            if snap != seq_db:
                problems.append(f"kill {k + 1}: snapshot seq {snap} != Book.seq {seq_db}")
            cycles.append(
                {
                    "kill": k + 1,
                    "recovery_s": round(recovery, 3),
                    "seq_at_kill": seq_db,
                    "seq_seen_before": seen,
                    "snapshot_seq": snap,
                    "book_compared_with_clients": compared,
                }
            )
            log(
                f"  kill {k + 1}/{kills}: back in {recovery:.2f}s, seq {seq_db} (clients saw "
                f"{seen}), snapshot {snap}, {len(state.acked)} orders acknowledged so far"
            )
            state.go.set()
        if pg_crash:
            pg = await _pg_crash(state, web, db)
            if pg.get("error"):
                problems.append(pg["error"])
        await asyncio.sleep(1.0)
        state.stop = True
        state.go.set()
        await asyncio.wait_for(asyncio.gather(*clients), 120)
        await asyncio.sleep(0.5)
        observer.stop = True
        await obs_task
    db.close()
    # Every snapshot after a restart is followed by the next seq.
    for snap, first in observer.first_delta.items():
        if first != snap + 1:
            problems.append(f"after snapshot {snap} the first delta was {first}")
    problems += [f"seq gap {a} -> {b}" for a, b in observer.gaps]
    problems += [f"snapshot seq {a} below {b} seen before" for a, b in observer.reused]
    return {
        "state": state,
        "cycles": cycles,
        "problems": problems,
        "pg": pg,
        "ws_connections": observer.connections,
        "ws_disconnects": dict(observer.disconnects),
    }


async def _pg_crash(state: CrashState, web: procs.Site, db: DbThread) -> dict[str, Any]:
    """PostgreSQL stopped in immediate mode (a crash: no checkpoint, recovery from the
    WAL at start) under load, started again a second later."""
    await asyncio.sleep(1.5)
    await db.reconnect()
    acked_before = len(state.acked)
    out: dict[str, Any] = {}
    with procs.pg_restarted_after():
        log("  PostgreSQL: stop -m immediate")
        await asyncio.to_thread(procs.pg_ctl, "stop", "-m", "immediate")
        t0 = time.monotonic()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(procs.pg_ctl, "start")
        out["down_s"] = round(time.monotonic() - t0, 2)
    await db.reconnect()
    deadline = time.monotonic() + 60
    while state.last_ack < t0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if state.last_ack < t0:
        out["error"] = "the web process answered no order within 60 s of PostgreSQL's restart"
        web.kill9()
        web.start()
        await asyncio.to_thread(web.wait_ready)
    else:
        out["recovery_s"] = round(state.last_ack - t0, 2)
    out["acked_before"] = acked_before
    log(f"  PostgreSQL back: first order acknowledged {out.get('recovery_s')}s after the stop")
    return out


def _kill_figures(
    db_url: str,
    prefix: str,
    state: CrashState,
    problems: list[str],
    recoveries: list[float],
    kills: int,
) -> dict[str, Any]:
    """A kill scenario's figures once its processes stopped: every acknowledged order
    in the database, once, as told; fills consistent; the invariants (checked here and
    by `check_invariants`)."""
    from django.db import connections

    connections.close_all()
    lost, regressed = _acked_in_db(state.acked)
    fill_problems = procs.fills_consistent()
    ids = [a.order_id for a in state.acked.values()]
    violations = procs.invariants(acknowledged=ids)
    cmd_rc, cmd_out = procs.invariants_command(db_url, prefix, ids)
    found = problems + lost[:10] + state.duplicates[:10] + regressed[:10]
    for p in found + fill_problems + violations:
        log(f"  PROBLEM: {p}")
    return {
        "kills": len(recoveries),
        "orders_acknowledged": len(state.acked),
        "orders_lost": len(lost),
        "duplicates": len(state.duplicates) + len(fill_problems),
        "acknowledged_state_regressed": len(regressed),
        "recovery_median_s": round(statistics.median(recoveries), 2) if recoveries else None,
        "recovery_max_s": round(max(recoveries), 2) if recoveries else None,
        "requests": state.tally.requests,
        "requests_sent_again": state.unanswered,
        "5xx": dict(state.tally.server_errors),
        "rejected": dict(state.tally.rejected),
        "problems": found,
        "fill_problems": fill_problems,
        "invariant_violations": violations,
        "check_invariants_command": {"exit": cmd_rc, "output": cmd_out[-2000:]},
        "passed": bool(
            cmd_rc == 0
            and not found
            and not fill_problems
            and not violations
            and len(recoveries) == kills
        ),
    }


def _acked_in_db(acked: dict[str, Ack]) -> tuple[list[str], list[str]]:
    """(lost, regressed): acknowledged orders the database lacks, and ones whose stored
    state is behind what the client was told."""
    from trading.models import Order

    rows = {
        o["id"]: o
        for o in Order.objects.filter(pk__in=[a.order_id for a in acked.values()]).values(
            "id", "client_order_id", "filled_qty"
        )
    }
    lost, regressed = [], []
    for cid, a in acked.items():
        row = rows.get(a.order_id)
        if row is None or row["client_order_id"] != cid:
            lost.append(f"{cid} -> {a.order_id}")
        elif row["filled_qty"] < a.filled:
            regressed.append(f"{cid}: told filled {a.filled}, stored {row['filled_qty']}")
    return lost, regressed


def run_crash(
    db_url: str, prefix: str, kills: int, pg_crash: bool, clients: int, out_dir: Path
) -> dict[str, Any]:
    import urllib.parse

    log(
        f"\n== scenario 4: crash recovery, {kills} kill -9 of the web process"
        f"{' + a PostgreSQL crash' if pg_crash else ''}, {clients} clients =="
    )
    procs.market_create()
    tokens = [
        procs.trader_create(f"trust-crash{i}", Decimal("10000000"), MODE)[1] for i in range(clients)
    ]
    db_name = urllib.parse.urlparse(db_url).path.lstrip("/")
    env = procs.server_env(f"{db_url}?application_name={APP_NAME}", prefix)
    with procs.web_and_matcher(env, out_dir, "crash") as (web, _):
        out = asyncio.run(_crash_main(web, tokens, db_name, kills, pg_crash, 4000))
    recoveries = [c["recovery_s"] for c in out["cycles"]]
    figures = _kill_figures(db_url, prefix, out["state"], out["problems"], recoveries, kills)
    figures.update(
        postgresql_crashes=1 if out["pg"] else 0,
        postgresql_recovery_s=out["pg"].get("recovery_s"),
        ws_connections=out["ws_connections"],
        ws_disconnects=out["ws_disconnects"],
        books_compared_with_clients=sum(c["book_compared_with_clients"] for c in out["cycles"]),
        cycles=out["cycles"],
    )
    figures["5xx_during_crashes"] = figures.pop("5xx")
    return figures


def run_matcher_kills(
    db_url: str, prefix: str, kills: int, clients: int, out_dir: Path
) -> dict[str, Any]:
    """Scenario 5: kill -9 of the matcher under load, `kills` times, a new one started
    each time. Clients send every order with a clientOrderId and send it again, the same,
    after any 5xx or lost answer, as docs/api.md tells bot authors to."""
    log(f"\n== scenario 5: matcher crashes, {kills} kill -9 of the matcher, {clients} clients ==")
    procs.market_create()
    tokens = [
        procs.trader_create(f"trust-mkill{i}", Decimal("10000000"), MODE)[1] for i in range(clients)
    ]
    # A short wait for a matcher, so that a dead one is noticed quickly.
    env = procs.server_env(f"{db_url}?application_name={APP_NAME}", prefix, MATCHER_TIMEOUT="1")
    with procs.web_and_matcher(env, out_dir, "mkill") as (web, matcher):
        out = asyncio.run(_matcher_kills_main(web, matcher, tokens, kills, 5000))
    figures = _kill_figures(db_url, prefix, out["state"], out["problems"], out["recoveries"], kills)
    unexpected_5xx = {k: v for k, v in figures["5xx"].items() if not k.endswith(" 503")}
    figures["503_during_crashes"] = figures.pop("5xx")
    if unexpected_5xx:
        log(f"  PROBLEM: 5xx other than 503: {unexpected_5xx}")
        figures["passed"] = False
    return figures


async def _matcher_kills_main(
    web: procs.Site,
    matcher: procs.MatcherProcess,
    tokens: list[str],
    kills: int,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    state = CrashState(asyncio.Event())
    recoveries: list[float] = []
    problems: list[str] = []
    async with session_for(len(tokens) * 2) as session:
        clients = await _clients_started(state, web.url, tokens, session, seed)
        for k in range(kills):
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            matcher.kill9()
            t_kill = time.monotonic()
            await asyncio.sleep(rng.uniform(0, 0.5))
            matcher.start()
            await asyncio.to_thread(matcher.wait_ready)
            # Back: the first order acknowledged after the new matcher took the book.
            t_ready = time.monotonic()
            deadline = t_ready + 30
            while state.last_ack <= t_ready and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if state.last_ack <= t_ready:
                problems.append(f"kill {k + 1}: no order acknowledged within 30 s")
            recoveries.append(state.last_ack - t_kill)
            log(
                f"  kill {k + 1}/{kills}: the new matcher held the book after "
                f"{t_ready - t_kill:.2f}s, orders acknowledged again after "
                f"{recoveries[-1]:.2f}s; {len(state.acked)} acknowledged so far"
            )
        await asyncio.sleep(1.0)
        state.stop = True
        await asyncio.wait_for(asyncio.gather(*clients), 120)
    return {"state": state, "recoveries": recoveries, "problems": problems}


# -- main -------------------------------------------------------------------------------


def _kill_rows(f: dict[str, Any], victim: str, back: str) -> list[tuple[str, Any]]:
    """The rows a kill scenario's table shares with the other's."""
    return [
        (f"kill -9 of {victim}", f["kills"]),
        ("orders acknowledged", f["orders_acknowledged"]),
        ("orders lost", f["orders_lost"]),
        ("duplicates", f["duplicates"]),
        (f"{back}, median (s)", f["recovery_median_s"]),
        (f"{back}, max (s)", f["recovery_max_s"]),
        ("requests sent again (answer lost or 5xx)", f["requests_sent_again"]),
        ("invariant violations", len(f["invariant_violations"])),
        ("passed", f["passed"]),
    ]


def _table(
    conc: dict[str, Any] | None, crash: dict[str, Any] | None, mkill: dict[str, Any] | None
) -> str:
    parts = []
    if conc:
        parts.append(
            procs.figures_table(
                "scenario 3: concurrency",
                [
                    ("duration (s)", conc["duration_s"]),
                    ("web processes / clients", f"{conc['web_processes']} / {conc['clients']}"),
                    ("requests", conc["requests"]),
                    ("accepted (2xx)", conc["accepted"]),
                    ("rejected, by reason", conc["rejected"]),
                    ("5xx", conc["5xx"]),
                    ("transport errors", conc["transport_errors"]),
                    (
                        "deadlock / serialization retries",
                        conc["retried_deadlocks_or_serialization_failures"],
                    ),
                    (
                        "withdrawal race: accepted of 16 x W/5",
                        f"{conc['race_accepted']} (5 expected)",
                    ),
                    ("negative balances seen", conc["negative_balances_seen"]),
                    ("double fills", len(conc["fill_problems"])),
                    ("invariant violations", len(conc["invariant_violations"])),
                    ("passed", conc["passed"]),
                ],
            )
        )
    if crash:
        rows = _kill_rows(crash, "the web process", "recovery after kill")
        rows[1:1] = [("PostgreSQL immediate stops", crash["postgresql_crashes"])]
        rows[-2:-2] = [("PostgreSQL recovery (s)", crash["postgresql_recovery_s"] or "-")]
        parts.append(procs.figures_table("scenario 4: crash recovery", rows))
    if mkill:
        rows = _kill_rows(mkill, "the matcher", "orders acknowledged again")
        rows[-2:-2] = [
            ("503 answers (sent again, same clientOrderId)", mkill["503_during_crashes"])
        ]
        parts.append(procs.figures_table("scenario 5: matcher crashes", rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="seconds, 3 kills, no PostgreSQL crash")
    ap.add_argument("--only", choices=["concurrency", "crash", "matcher"], action="append")
    ap.add_argument("--duration", type=float, help="concurrency load seconds (30; quick 4)")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--kills", type=int, help="kill -9 count (20; quick 3)")
    ap.add_argument("--clients", type=int, help="crash scenario clients (8; quick 4)")
    ap.add_argument("--no-pg-crash", action="store_true")
    ap.add_argument("--db-url", help="the run's own database (dropped and created)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-db", action="store_true")
    args = ap.parse_args(argv)
    quick = args.quick
    only = set(args.only or ["concurrency", "crash", "matcher"])
    duration = args.duration or (4.0 if quick else 30.0)
    kills = args.kills if args.kills is not None else (3 if quick else 20)
    clients = args.clients or (4 if quick else 8)
    pg_crash = not quick and not args.no_pg_crash
    if pg_crash and "crash" in only and not shutil.which("pg_ctlcluster"):
        ap.error("pg_ctlcluster not found (the PostgreSQL crash needs it): add --no-pg-crash")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    db_url = args.db_url or procs.database_url("dexsite_chaos")
    prefix = f"trustchaos{os.getpid()}"
    out_dir = procs.results_dir()
    procs.database_create(db_url)
    conc = crash = mkill = None
    try:
        procs.setup_django(db_url, prefix)
        log(f"database {db_url}, channel prefix {prefix}, logs in {out_dir}")
        if "concurrency" in only:
            conc = run_concurrency(db_url, prefix, duration, args.workers, out_dir)
        if "crash" in only:
            crash = run_crash(db_url, prefix, kills, pg_crash, clients, out_dir)
        if "matcher" in only:
            mkill = run_matcher_kills(db_url, prefix, kills, clients, out_dir)
    finally:
        from django.db import connections

        with contextlib.suppress(Exception):
            connections.close_all()
        if not args.keep_db:
            with procs.pg_restarted_after():
                procs.database_drop(db_url)
    log("\n" + _table(conc, crash, mkill))
    passed = all(f["passed"] for f in (conc, crash, mkill) if f)
    procs.write_json(
        args.json,
        {
            "concurrency": conc,
            "crash": crash,
            "matcher": mkill,
            "passed": passed,
            "seconds": round(time.monotonic() - t_start, 1),
            "argv": sys.argv,
        },
    )
    log(f"\n{'PASSED' if passed else 'FAILED'} in {time.monotonic() - t_start:.0f}s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
