"""What is read after a commit rather than in it: `accountUpdate`, the account of `GET
/account` (trading.selectors.accounts_shown), pushed on the trader channel when it
changes, at most once per COALESCE_SECONDS per account (trader and mode), at the next
tick of a COALESCE_SECONDS clock; and a market's `ticker` after its trades, at most once
a tick per book.

Every change to a trader's cash, locks or positions is announced by `position_updated`
or `balances_changed`, whatever caused it (their orders, a counterparty's, funding,
liquidation, expiry, the vault, the faucet). The receivers here run in the thread that
committed, after its COMMIT: they only note the account and return, so the request
that committed waits for no read. One thread per process (`_Sender`) waits until a noted
account is due, at the first tick of the clock after it was noted (changes noted
meanwhile join it), reads every due account of a mode at once and publishes one
`accountUpdate` each,
in the server on the server's event loop as every event. An account is read after the
commit of every change it was noted for, so the last update sent shows the account as
it stands; a change committed while it is read is noted again and sent once more.

A trade notes its book's ticker the same way (`TICKER`, symbol, mode): its read (the
market list's 4 statements, 4-9 ms) was made by the thread that committed, which in a
matcher is the one writer of every book it owns: 16-36 ms of each second per active
book.

Left out: the mark moving on its own (unrealized PnL, margins and the ratio move with
it). No trader event marks it, and following it would read every account holding a
position at each mark tick, as the liquidation sweep does; between updates a client
reprices from the ticker's marks, or reads `GET /account`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection, connections, transaction
from django.dispatch import receiver

from ledger.signals import balances_changed
from realtime import broadcast, names
from trading import signals

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.25
ACCOUNT_ASSET = "USDC"

# (trader pk, mode) for an account; (TICKER, symbol, mode) for a book's ticker.
Key = tuple[int, str] | tuple[str, str, str]
TICKER = "ticker"


@dataclass(slots=True)
class Noted:
    due: float
    # The server's event loop where the change was committed from one of its threads:
    # the update leaves from there, as that change's own events did.
    loop: asyncio.AbstractEventLoop | None


class Waiting:
    """The accounts noted and not yet sent: each once, due at the first multiple of
    `delay` after it was first noted. On one clock, every account noted within a tick is
    read in one go (a matcher busy with many traders reads at most 1/delay times a
    second, not once per account: measured, an account noted `delay` after its own
    first change made a read of one or two accounts per commit, 0.40 ms of the
    matcher's CPU an order); an account is still sent at most once a tick. Not
    thread-safe (`_Sender` holds its lock around it)."""

    def __init__(self) -> None:
        self.noted: dict[Key, Noted] = {}

    def note(self, key: Key, now: float, delay: float, loop=None) -> bool:
        """Note `key` (True if it was not waiting already)."""
        if key in self.noted:
            return False
        self.noted[key] = Noted((math.floor(now / delay) + 1) * delay, loop)
        return True

    def next_due(self) -> float | None:
        return min((n.due for n in self.noted.values()), default=None)

    def take_due(self, now: float) -> dict[Key, Noted]:
        due = {k: n for k, n in self.noted.items() if n.due <= now}
        for k in due:
            del self.noted[k]
        return due

    def take_all(self) -> dict[Key, Noted]:
        taken, self.noted = self.noted, {}
        return taken


class _Sender:
    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.waiting = Waiting()
        self.thread: threading.Thread | None = None
        self.sending = 0  # batches taken and not yet sent

    def note(self, keys: Iterable[Key]) -> None:
        loop = broadcast._server_loop()
        now = time.monotonic()
        with self.changed:
            added = [self.waiting.note(k, now, COALESCE_SECONDS, loop) for k in keys]
            if not any(added):
                return
            if self.thread is None or not self.thread.is_alive():
                if self.thread is None:
                    # Registered after broadcast's flush of the publishing loop, so run
                    # before it at exit: what is still waiting goes out with the rest.
                    atexit.register(self.flush)
                self.thread = threading.Thread(
                    target=self.run, name="realtime-account-updates", daemon=True
                )
                self.thread.start()
            self.changed.notify()

    def run(self) -> None:
        while True:
            with self.changed:
                while not (due := self.waiting.take_due(time.monotonic())):
                    next_due = self.waiting.next_due()
                    self.changed.wait(None if next_due is None else next_due - time.monotonic())
                self.sending += 1
            try:
                send(due)
            finally:
                with self.changed:
                    self.sending -= 1
                    self.changed.notify_all()

    def settle(self, timeout: float = 10) -> None:
        """Drop what is waiting and wait until nothing is being read or sent: the end of
        a test, whose database is about to be emptied (a read of it racing the TRUNCATE
        can deadlock with it)."""
        with self.changed:
            self.waiting.take_all()
            self.changed.wait_for(lambda: not self.sending, timeout)

    def flush(self) -> None:
        """Send what is waiting now (at exit: a command's last changes)."""
        with self.changed:
            due = self.waiting.take_all()
        if due:
            send(due)


_sender = _Sender()
settle = _sender.settle


def send(due: dict[Key, Noted]) -> None:
    """Read the `due` accounts, a mode at a time, and the due books' tickers, and publish
    them."""
    try:
        with _snapshot():
            by_loop = _read(due)
        for loop, events in by_loop.items():
            broadcast.publish_later(events, loop)
    except Exception:
        log.exception("account updates or tickers failed")
    finally:
        # This thread's connection is not kept between batches, which may be far
        # apart (nor left open on a test database that is about to be dropped).
        connections.close_all()


def _snapshot() -> contextlib.AbstractContextManager:
    """A transaction for `_read` on PostgreSQL. Not on SQLite (the embedded run): its
    transactions begin IMMEDIATE (settings), a writer's lock, which this thread would hold
    against every order while it reads (and which an in-memory test database refuses
    outright, "database table is locked"); there the accounts are read statement by
    statement, by the one process that writes them."""
    return transaction.atomic() if connection.vendor == "postgresql" else contextlib.nullcontext()


def _read(due: dict[Key, Noted]) -> dict[Any, list[dict[str, Any]]]:
    """The events of `due`, by the loop each leaves from, read in one snapshot: an
    account's balances and positions as one commit left them (read one statement after
    another at READ COMMITTED, a fill committed in between showed its position without
    its fee). A change committed after the snapshot is noted again and sent next tick."""
    from ledger.selectors import public_trader_ids
    from trading.selectors import accounts_shown

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    by_loop: dict[Any, list[dict[str, Any]]] = {}
    for key, noted in due.items():
        if key[0] == TICKER:
            _, symbol, mode = key
            body = broadcast.ticker_body(symbol, mode)
            if body:
                channel = names.market_channel(symbol, mode)
                by_loop.setdefault(noted.loop, []).append(
                    broadcast.message("ticker", channel, body)
                )
    accounts = [key for key in due if key[0] != TICKER]
    uuids = public_trader_ids({t for t, _ in accounts})
    for mode in sorted({m for _, m in accounts}):
        ids = [t for t, m in accounts if m == mode and t in uuids]
        for t, body in accounts_shown(trader_ids=ids, mode=mode).items():
            event = broadcast.message("accountUpdate", names.trader_channel(uuids[t]), body)
            by_loop.setdefault(due[t, mode].loop, []).append(event)
    return by_loop


@receiver(signals.position_updated)
def on_positions(sender, *, mode: str, position_ids, **kw) -> None:
    _sender.note((t, mode) for t, _ in position_ids)


@receiver(balances_changed)
def on_balances(sender, *, balances, **kw) -> None:
    # Other assets (spot holdings) are outside the USDC margin account: an order that
    # locks them locks no USDC.
    _sender.note((b.trader_id, b.mode) for b in balances if b.asset == ACCOUNT_ASSET)


@receiver(signals.trade_executed)
def on_trade(sender, *, market: str, mode: str, **kw) -> None:
    _sender.note([(TICKER, market, mode)])
