"""The matcher's requests and answers over Redis: a list per book that web processes
push requests onto and the book's matcher pops from; a list per request for its answer;
and a claim per request that decides, once, who has it.

Why lists and claims rather than a stream with acknowledgements: a request must be
carried out at most once, and its sender must learn whether it was. A stream's
acknowledgement says a consumer has finished with an entry; it cannot say "this entry
will never run". The claim can: before a matcher carries out a request it claims it
(`SET NX`, with the PostgreSQL backend pid of the connection that will commit it); a
sender that waited too long claims it itself. Whoever claims first decides:

- the sender's claim: the request will never run; the sender answers 503
  `MATCHER_UNAVAILABLE`, and a retry is safe;
- the matcher's claim: the request runs in a transaction on that backend. If its answer
  does not come, the sender waits until that backend has gone (its transaction then
  committed or rolled back, and nothing more can happen), and looks the order up by
  its clientOrderId; without one it answers 503 `ORDER_STATUS_UNKNOWN`.
"""

from __future__ import annotations

import threading
import time
import uuid

import redis
from django.conf import settings
from django.db import connection

from dexsite.errors import ExchangeError
from trading.matcher.requests import MatcherRequest, Outcomes, answer_decode, request_encode

# How long claims and unread answers live (seconds): past any sender's wait.
KEEP_SECONDS = 600
# A request that waited longer than this (a queue with no matcher for minutes) is never
# carried out: its sender gave up long ago and may have sent it again, and the claim
# that says so lives KEEP_SECONDS only.
REQUEST_MAX_AGE = KEEP_SECONDS / 2

# Seconds a Redis reply may take past the longest BLPOP this module sends.
SOCKET_SLACK = 10

_client: redis.Redis | None = None
_client_lock = threading.Lock()


def redis_client() -> redis.Redis:
    global _client
    with _client_lock:
        if _client is None:
            # A read waits for a BLPOP's whole timeout (MATCHER_TIMEOUT): the socket's
            # must be longer (redis-py's default, 5 s, would cut the wait short and leave
            # the request unclaimed in the queue, to run later).
            _client = redis.Redis.from_url(
                settings.REDIS_URL,
                health_check_interval=30,
                socket_timeout=settings.MATCHER_TIMEOUT + SOCKET_SLACK,
            )
        return _client


def queue_key(symbol: str, mode: str) -> str:
    return f"{settings.MATCHER_PREFIX}:q:{symbol}:{mode}"


def answer_key(request_id: str) -> str:
    return f"{settings.MATCHER_PREFIX}:a:{request_id}"


def claim_key(request_id: str) -> str:
    return f"{settings.MATCHER_PREFIX}:c:{request_id}"


ABANDONED = b"sender"


def request_send(
    symbol: str, mode: str, request: MatcherRequest, *, first: bool = False
) -> Outcomes:
    """Hand `request` to the matcher of (symbol, mode) and wait for its outcomes. `first`
    puts it ahead of the requests waiting (a liquidation must not wait behind a flood
    of orders, some perhaps sent to hold it off)."""
    r = redis_client()
    request.id = uuid.uuid4().hex
    request.sent = time.time()
    # The request and the wait for its answer in one round trip (BLPOP blocks on the
    # server; a pipeline that is not a transaction lets it).
    pipe = r.pipeline(transaction=False)
    push = pipe.lpush if first else pipe.rpush
    push(queue_key(symbol, mode), request_encode(request))
    pipe.blpop([answer_key(request.id)], timeout=settings.MATCHER_TIMEOUT)
    try:
        _, answer = pipe.execute()
    except redis.RedisError as e:
        # The connection went on the way: the request may be in its queue.
        return _answer_of_lost(symbol, request, e)
    if answer is not None:
        return answer_decode(answer[1])
    if r.set(claim_key(request.id), ABANDONED, nx=True, ex=KEEP_SECONDS):
        raise _not_taken(symbol)
    return _answer_of_claimed(request)


def _not_taken(symbol: str) -> ExchangeError:
    return ExchangeError(
        "MATCHER_UNAVAILABLE",
        f"the matcher of {symbol} did not take the request in time; nothing was done, "
        "send it again",
        status_code=503,
        extra={"retryAfter": 1},
    )


def _answer_of_lost(symbol: str, request: MatcherRequest, lost: redis.RedisError) -> Outcomes:
    """The answer of a request whose wait was cut (Redis, or the connection to it, went):
    claimed for the sender now, it never runs; claimed by a matcher, its answer is waited
    for as ever; with Redis still away, no one can tell (503 ORDER_STATUS_UNKNOWN)."""
    try:
        mine = redis_client().set(claim_key(request.id), ABANDONED, nx=True, ex=KEEP_SECONDS)
    except redis.RedisError:
        raise ExchangeError(
            "ORDER_STATUS_UNKNOWN",
            "the connection to the matcher was lost while the request was sent; it may or "
            "may not be carried out. Send a clientOrderId with every order so that a retry "
            "is always safe",
            status_code=503,
            extra={"retryAfter": 1},
        ) from lost
    if mine:
        raise _not_taken(symbol) from lost
    return _answer_of_claimed(request)


def _answer_of_claimed(request: MatcherRequest) -> Outcomes:
    """The answer of a request a matcher claimed and has not answered in time: waited
    for as long as the backend that carries it lives."""
    r = redis_client()
    pid = int(r.get(claim_key(request.id)) or 0)
    deadline = time.monotonic() + 6 * settings.MATCHER_TIMEOUT
    while time.monotonic() < deadline:
        answer = r.blpop([answer_key(request.id)], timeout=1)
        if answer is not None:
            return answer_decode(answer[1])
        if not _backend_alive(pid):
            # Its transaction is over: an answer sent just before it went is here now.
            answer = r.lpop(answer_key(request.id))
            if answer is not None:
                return answer_decode(answer)
            return _answer_from_database(request)
    raise _unknown()


def _backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is not None


def _answer_from_database(request: MatcherRequest) -> Outcomes:
    """A claimed request whose matcher went without answering: each order found by its
    clientOrderId is placed (the transaction committed); one without is unknown."""
    from trading.orders.place import order_by_client_id

    outcomes: Outcomes = []
    for order in request.orders:
        cid = order.get("client_order_id")
        found = order_by_client_id(request.trader, cid) if cid else None
        outcomes.append((found, False) if found is not None else _unknown(bool(cid)))
    if not request.orders:
        # A cancel: cancelling again is safe, and says what the order is now.
        raise ExchangeError(
            "MATCHER_UNAVAILABLE",
            "the matcher stopped while cancelling; send the cancel again",
            status_code=503,
            extra={"retryAfter": 1},
        )
    return outcomes


def _unknown(had_client_id: bool = False) -> ExchangeError:
    if had_client_id:
        # Its matcher's transaction is over and the order is not there: it rolled back.
        return ExchangeError(
            "MATCHER_UNAVAILABLE",
            "the matcher stopped before placing the order; nothing was done, send it again",
            status_code=503,
            extra={"retryAfter": 1},
        )
    return ExchangeError(
        "ORDER_STATUS_UNKNOWN",
        "the matcher stopped while placing the order; it may or may not be placed. "
        "Send a clientOrderId with every order so that a retry is always safe",
        status_code=503,
        extra={"retryAfter": 1},
    )
