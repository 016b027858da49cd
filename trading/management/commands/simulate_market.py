"""Demo bots that make a live market through the public API, like real clients: a
maker quotes a ladder of 25 levels a side around a drifting fair price (the mark, or the
index on spot), a taker crosses it most rounds, and both follow the book over the
WebSocket feed (snapshot, then deltas by seq)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from decimal import Decimal

import httpx
import websockets
from django.core.management.base import BaseCommand, CommandParser

log = logging.getLogger("simulate_market")
D = Decimal


class Book:
    """The bot's view of one book, rebuilt from the feed."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.seq = -1

    def apply(self, msg: dict) -> bool:
        """Apply a depth message; False when a delta does not follow on (resubscribe)."""
        if msg["snapshot"]:
            self.bids = {D(p): D(q) for p, q in msg["bids"]}
            self.asks = {D(p): D(q) for p, q in msg["asks"]}
        elif msg["seq"] != self.seq + 1:
            return False
        else:
            for side, levels in ((self.bids, msg["bids"]), (self.asks, msg["asks"])):
                for p, q in levels:
                    if D(q) == 0:
                        side.pop(D(p), None)
                    else:
                        side[D(p)] = D(q)
        self.seq = msg["seq"]
        return True

    def best(self) -> tuple[Decimal | None, Decimal | None]:
        return (max(self.bids) if self.bids else None, min(self.asks) if self.asks else None)


class Bot:
    def __init__(self, base: str, username: str, password: str) -> None:
        self.base = base.rstrip("/")
        self.username, self.password = username, password
        self.http = httpx.AsyncClient(base_url=self.base, timeout=10)
        self.token = ""
        self.trader_id = ""

    async def login(self) -> None:
        creds = {"username": self.username, "password": self.password}
        r = await self.http.post("/api/v1/auth/token", json=creds)
        if r.status_code != 200:
            r = await self.http.post("/api/v1/auth/signup", json=creds)
        r.raise_for_status()
        self.token, self.trader_id = r.json()["token"], r.json()["traderId"]
        self.http.headers["Authorization"] = f"Token {self.token}"
        await self.http.post("/api/v1/paper/faucet")  # 429 within the cooldown is fine

    async def call(self, method: str, path: str, **kw) -> httpx.Response:
        r = await self.http.request(method, path, **kw)
        if r.status_code >= 500:
            log.warning("%s %s -> %s", method, path, r.status_code)
        return r


def fund_bots(usernames: list[str]) -> None:
    """Funds for the demo bots in both modes, once: enough to quote deep ladders on every
    book. Real money enters through vault deposits; a demo install has no chain to
    deposit from, so the bots get a ledger credit."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from ledger.models import Balance, LedgerEntry, LedgerReason
    from ledger.services import Posting, balances_ensure, balances_lock, ledger_apply

    grants = {"USDC": D("5000000"), "CXPT": D("500000")}
    with transaction.atomic():
        for name in usernames:
            user = get_user_model().objects.filter(username=name).first()
            if user is None:
                continue
            for mode in ("REAL", "PAPER"):
                if LedgerEntry.objects.filter(
                    trader=user, mode=mode, reason=LedgerReason.DEPOSIT
                ).exists():
                    continue
                keys = [(user.pk, a, mode) for a in grants]
                balances_ensure(keys)
                rows = balances_lock(keys)
                ledger_apply(
                    [
                        Posting(user.pk, a, mode, v, LedgerReason.DEPOSIT, "demo")
                        for a, v in grants.items()
                    ],
                    rows,
                )
                Balance.objects.bulk_update(rows.values(), ["total"])


def on_grid(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value() * step


async def follow_book(
    ws_base: str, market: str, mode: str, book: Book, stop: asyncio.Event
) -> None:
    """Keep `book` current from the feed; resubscribe (from the last seq) on a gap."""
    channel = f"market.{market}" + (".paper" if mode == "PAPER" else "")
    while not stop.is_set():
        try:
            async with websockets.connect(f"{ws_base}/ws/") as ws:
                await ws.send(json.dumps({"action": "subscribe", "channel": channel}))
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg.get("type") == "depth" and not book.apply(msg):
                        await ws.send(json.dumps({"action": "unsubscribe", "channel": channel}))
                        await ws.send(
                            json.dumps(
                                {"action": "subscribe", "channel": channel, "sinceSeq": book.seq}
                            )
                        )
                    if stop.is_set():
                        return
        except (OSError, websockets.WebSocketException) as e:
            log.info("feed %s %s reconnecting: %s", market, mode, e)
            await asyncio.sleep(1)


# Per level, the notional a maker quotes is this many times a kind's unit (grows with
# the distance from the touch, as in real books), and a taker's order a share of it.
LEVELS = 25
LEVEL_SPACING = D("0.0002")  # 2 bp between levels, at least one tick
QUOTE_UNIT = {"PERP": D("4000"), "FUTURE": D("3000"), "OPTION": D("1500"), "SPOT": D("400")}


def level_step(market: dict, price: Decimal) -> Decimal:
    """The distance between two of the maker's levels near `price`: on the tick grid."""
    tick = D(market["tickSize"])
    return max(tick, on_grid(price * LEVEL_SPACING, tick))


def ladder(
    market: dict, fair: Decimal, step: Decimal, rng: random.Random, levels: int = LEVELS
) -> dict[tuple[str, Decimal], Decimal]:
    """The maker's wanted quotes around `fair`: {(side, price): qty}, `levels` a side
    `step` apart, sizes that grow away from the touch with some noise, each above the
    minimum order."""
    lot = D(market["lotSize"])
    min_notional = D(market["minNotional"])
    unit = QUOTE_UNIT.get(market["kind"], D("1000"))
    out: dict[tuple[str, Decimal], Decimal] = {}
    for i in range(1, levels + 1):
        for side, sign in (("BUY", -1), ("SELL", 1)):
            price = fair + sign * step * i
            if price <= 0:
                continue
            notional = unit * (1 + D(i) / 6) * D(rng.randint(2, 30)) / 10
            qty = max(lot, on_grid(notional / price, lot))
            while qty * price < min_notional:
                qty += lot
            out[(side, price)] = qty
    return out


async def run_market(
    maker: Bot,
    taker: Bot,
    market: dict,
    mode: str,
    ws_base: str,
    period: float,
    stop: asyncio.Event,
) -> None:
    """Requote and trade one book every `period` seconds until `stop`. A server that is
    down or restarting is waited for: the bots go on once it answers again."""
    symbol = market["symbol"]
    seed = market.get("markPrice") or market.get("lastPrice") or market.get("indexPrice") or "100"
    # The ladder's grid is fixed for the run: when the fair price moves a step, one
    # level leaves each side and one comes, the others rest where they are.
    step = level_step(market, D(seed))
    fair = on_grid(D(seed), step)
    rng = random.Random(f"{symbol}:{mode}")
    book = Book()
    feed = asyncio.create_task(follow_book(ws_base, symbol, mode, book, stop))
    try:
        # A clean slate: what a previous run left on this book goes.
        await maker.call("DELETE", f"/api/v1/orders?market={symbol}&mode={mode}")
        while not stop.is_set():
            try:
                fair = await _one_round(maker, taker, market, mode, book, rng, fair, step)
            except httpx.TransportError as e:
                log.info("%s %s: server unreachable (%s); trying again", symbol, mode, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period * rng.uniform(0.6, 1.4))
    finally:
        feed.cancel()


async def _one_round(
    maker: Bot,
    taker: Bot,
    market: dict,
    mode: str,
    book: Book,
    rng: random.Random,
    fair: Decimal,
    step: Decimal,
) -> Decimal:
    """The maker's ladder moved to a fair price that wandered, and most times one taker
    order at the touch; returns the new fair price.

    Only the levels that changed are cancelled and placed (not the whole ladder), so
    that the book moves as a real one does instead of emptying and filling again."""
    symbol = market["symbol"]
    lot = D(market["lotSize"])
    # The fair price wanders, pulled a fifth of the way back to the mark (the index on
    # spot) each round: quotes stay inside the market's price band as the index moves.
    anchor = await _reference(maker, symbol)
    if anchor is not None:
        fair = on_grid(fair + (anchor - fair) / 5, step)
    fair = max(step * 10, fair + step * rng.randint(-2, 2))
    wanted = ladder(market, fair, step, rng)
    r = await maker.call("GET", f"/api/v1/orders?market={symbol}&mode={mode}&status=open")
    resting = r.json() if r.status_code == 200 else []
    have: set[tuple[str, Decimal]] = set()
    for o in resting:
        key = (o["side"], D(o["price"]))
        if key in wanted and key not in have:
            have.add(key)
        else:
            await maker.call("DELETE", f"/api/v1/orders/{o['id']}")
    orders = [
        {
            "market": symbol,
            "mode": mode,
            "side": side,
            "type": "LIMIT",
            "price": str(price),
            "qty": str(wanted[(side, price)]),
            "timeInForce": "POST_ONLY",
        }
        for side, price in sorted(wanted)
        if (side, price) not in have
    ]
    for at in range(0, len(orders), 20):  # the batch endpoint's limit
        await maker.call("POST", "/api/v1/trade/batch", json={"orders": orders[at : at + 20]})
    if rng.random() < 0.7:
        bid, ask = book.best()
        side = rng.choice(["BUY", "SELL"])
        edge = ask if side == "BUY" else bid
        if edge is not None:
            unit = QUOTE_UNIT.get(market["kind"], D("1000"))
            qty = max(lot, on_grid(unit * D(rng.randint(1, 12)) / 10 / edge, lot))
            # Now and then a larger order walks a few levels into the book.
            reach = step * rng.choice([0, 0, 0, 1, 3])
            limit = edge + reach if side == "BUY" else edge - reach
            await taker.call(
                "POST",
                "/api/v1/trade",
                json={
                    "market": symbol,
                    "mode": mode,
                    "side": side,
                    "type": "LIMIT",
                    "price": str(limit),
                    "qty": str(qty * (3 if reach else 1)),
                    "timeInForce": "IOC",
                },
            )
    return fair


async def _reference(bot: Bot, symbol: str) -> Decimal | None:
    """The price the market's bands are measured from: its mark, or its index."""
    r = await bot.call("GET", f"/api/v1/markets/{symbol}")
    if r.status_code != 200:
        return None
    body = r.json()
    found = body.get("markPrice") or body.get("indexPrice")
    return D(found) if found else None


class Command(BaseCommand):
    help = "Run demo market-making and taking bots against a running server's public API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--market", action="append", help="symbol (repeatable); default all")
        parser.add_argument("--mode", action="append", choices=["REAL", "PAPER"])
        parser.add_argument("--period", type=float, default=1.5, help="seconds between requotes")
        parser.add_argument("--duration", type=float, default=0, help="stop after N seconds")
        parser.add_argument("--password", default="sim-bot-password-1")

    def handle(self, *args, **opts) -> None:
        logging.basicConfig(level=logging.INFO)
        asyncio.run(self.main(opts))

    async def main(self, opts: dict) -> None:
        base = opts["url"]
        ws_base = base.replace("http", "ws", 1)
        maker = Bot(base, "sim-maker", opts["password"])
        taker = Bot(base, "sim-taker", opts["password"])
        for attempt in range(60):
            try:
                await maker.login()
                await taker.login()
                break
            except httpx.HTTPError:
                if attempt == 59:
                    raise
                await asyncio.sleep(1)
        from asgiref.sync import sync_to_async

        await sync_to_async(fund_bots)(["sim-maker", "sim-taker"])
        markets = (await maker.call("GET", "/api/v1/markets")).json()
        wanted = set(opts["market"] or [m["symbol"] for m in markets])
        modes = opts["mode"] or ["PAPER", "REAL"]
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(run_market(maker, taker, m, mode, ws_base, opts["period"], stop))
            for m in markets
            if m["symbol"] in wanted and m["status"] == "ACTIVE"
            for mode in modes
        ]
        self.stdout.write(f"simulating {len(tasks)} books against {base}")
        if opts["duration"]:
            await asyncio.sleep(opts["duration"])
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
