"""The matcher process (`manage.py runmatcher`): the one writer of the orders of the books
it owns.

- **A lease per book.** A session advisory lock of PostgreSQL on the connection that
  runs the book's transactions (`pg_try_advisory_lock(LEASE_CLASS, book pk)`). Two
  matchers can never hold one book; a second one started by mistake stands by, saying
  so loudly, and takes the book over when the first one's connection ends. Should the
  connection be replaced under the matcher (a reconnect), the lease went with the old
  one: it is taken again, or the book given up, before the next transaction.
- **Books in memory.** Each owned book's engine book is built once, at the start, and
  kept between batches (`trading.services.books`: valid while its `seq` is the
  database's, which only this process changes).
- **Batches.** The requests waiting for a book are taken together (up to
  `ORDER_GROUP_MAX`), claimed in one round trip (`redis_queue`), carried out by
  `request_run` (their orders in one transaction), and answered in one pipeline once
  committed. The events leave on commit, through the one emitter.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from trading.matcher.redis_queue import (
    KEEP_SECONDS,
    REQUEST_MAX_AGE,
    answer_key,
    claim_key,
    queue_key,
    redis_client,
)
from trading.matcher.requests import answer_encode, request_run, requests_decode
from trading.models import Book
from trading.services.books import engine_book_build, engine_book_return

log = logging.getLogger("matcher")

# The advisory-lock space of matcher leases (the first key of the two-key form).
LEASE_CLASS = 0x4D41
# How often a matcher looks for books it does not hold (new markets, a lease freed).
LOOK_SECONDS = 2.0


class Matcher:
    def __init__(self, symbols: Iterable[str] | None = None) -> None:
        self.symbols = set(symbols) if symbols else None
        # book pk -> (symbol, mode) of the books this matcher holds the lease of.
        self.owned: dict[int, tuple[str, str]] = {}
        self.lease_connection: Any = None
        self.stopping = False
        self.users: dict[int, Any] = {}
        self.looked = 0.0
        self.turn = 0
        # The PostgreSQL backend of the lease connection: what a request is claimed with.
        self.pid = 0

    # -- leases --------------------------------------------------------------------------

    def leases_take(self) -> list[tuple[str, str]]:
        """Take the lease of every wanted book not held yet; build the engine books of
        those taken. Returns the books still held by another matcher."""
        connection.ensure_connection()
        if self.lease_connection is not connection.connection:
            if self.owned:
                log.error(
                    "the database connection changed: the leases of %s went with it",
                    sorted(self.owned.values()),
                )
            self.owned.clear()
            self.lease_connection = connection.connection
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                (self.pid,) = cursor.fetchone()
        books = Book.objects.select_related("market").order_by("pk")
        if self.symbols is not None:
            books = books.filter(market__symbol__in=self.symbols)
        held_elsewhere = []
        for book in books:
            if book.pk in self.owned:
                continue
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LEASE_CLASS, book.pk])
                (taken,) = cursor.fetchone()
            key = (book.market.symbol, book.mode)
            if not taken:
                held_elsewhere.append(key)
                continue
            started = time.perf_counter()
            fresh = Book.objects.get(pk=book.pk)
            engine_book_return(fresh, engine_book_build(book), fresh.seq)
            self.owned[book.pk] = key
            log.info(
                "matcher: took %s %s (built in %.0f ms)",
                *key,
                (time.perf_counter() - started) * 1000,
            )
        self.looked = time.monotonic()
        return held_elsewhere

    def leases_check(self) -> None:
        """Before a transaction: the leases still stand on the connection that will run
        it; new books are looked for now and then."""
        connection.ensure_connection()
        if (
            self.lease_connection is not connection.connection
            or time.monotonic() - self.looked > LOOK_SECONDS
        ):
            held = self.leases_take()
            if held and not self.owned:
                log.warning("matcher: every wanted book is held by another matcher; standing by")

    # -- the loop ------------------------------------------------------------------------

    def serve(self, *, duration: float = 0) -> None:
        r = redis_client()
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        held = self.leases_take()
        if held:
            log.warning("matcher: %d books are held by another matcher: %s", len(held), held)
        until = time.monotonic() + duration if duration else None
        while not self.stopping and (until is None or time.monotonic() < until):
            try:
                self.turn_once(r)
            except (OperationalError, InterfaceError):
                # The database went away (a restart, a dropped connection): the leases
                # went with the connection. Wait, reconnect, take them again.
                log.exception("matcher: database unavailable; retrying")
                connection.close()
                time.sleep(0.5)
            except Exception:
                # Not one request may stop the matcher of every book (each request's
                # own failure is its answer; this is anything else).
                log.exception("matcher: a turn failed")
                time.sleep(0.1)

    def turn_once(self, r: Any) -> None:
        """Wait (briefly) for requests to any owned book; carry out one book's batch."""
        self.leases_check()
        keys = [queue_key(*k) for k in self.owned.values()]
        if not keys:
            time.sleep(LOOK_SECONDS / 4)
            return
        # BLMPOP serves the first non-empty key it is given: the next turn starts with
        # the book after the one served, so that every waiting book is served in turn and
        # none waits behind a busy one (whose orders may be sent to hold it up). It takes
        # a batch of the book's requests in the same round trip (BLPOP and then LPOP
        # took two a batch).
        self.turn %= len(keys)
        popped = r.blmpop(
            0.5,
            len(keys),
            *(keys[self.turn :] + keys[: self.turn]),
            direction="LEFT",
            count=settings.ORDER_GROUP_MAX,
        )
        if popped is None:
            return
        key, raw = popped
        key = key.decode()
        self.turn = keys.index(key) + 1 if key in keys else 0
        self.batch_run(key, raw)

    def batch_run(self, key: str, raw: list[bytes]) -> None:
        """Claim, carry out and answer one book's waiting requests (taken off `key`)."""
        r = redis_client()
        # A connection that failed is replaced (its leases are then taken again); one is
        # never closed for its age (CONN_MAX_AGE): the leases and the books live on it.
        connection.close_at = None
        close_old_connections()
        self.leases_check()
        if key not in {queue_key(*k) for k in self.owned.values()}:
            # The lease went (the connection was replaced): the book's next owner takes
            # them, in the order they came.
            r.lpush(key, *reversed(raw))
            return
        requests = []
        oldest = time.time() - REQUEST_MAX_AGE
        for request in requests_decode(raw, self.users):
            if not request.id:
                continue  # unreadable, and with no address to answer
            if request.sent and request.sent < oldest:
                log.warning("matcher: request %s waited too long; not carried out", request.id)
                continue
            requests.append(request)
        pipe = r.pipeline(transaction=False)
        for request in requests:
            pipe.set(claim_key(request.id), self.pid, nx=True, ex=KEEP_SECONDS)
        claimed = [req for req, ok in zip(requests, pipe.execute(), strict=True) if ok]
        if not claimed:
            return
        answers = request_run(claimed)
        pipe = r.pipeline(transaction=False)
        for request, answer in zip(claimed, answers, strict=True):
            if isinstance(answer, BaseException) and not hasattr(answer, "code"):
                log.error("matcher: request %s failed", request.id, exc_info=answer)
            pipe.rpush(answer_key(request.id), answer_encode(answer))
            pipe.expire(answer_key(request.id), KEEP_SECONDS)
        pipe.execute()
