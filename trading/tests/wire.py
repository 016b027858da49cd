"""What goes over the wire to PostgreSQL, seen through libpq's trace of a connection."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from itertools import pairwise

from django.db import connection


def round_trips(fn: Callable[[], object]) -> int:
    """How many times the client waited for the server while `fn` ran: in libpq's trace
    of the connection's messages, each turn from what the client sent to what the
    server answered."""
    sides = [line.split("\t", 1)[0] for line in _trace(fn)]
    return sum(1 for a, b in pairwise(sides) if (a, b) == ("F", "B"))


def commits(fn: Callable[[], object]) -> int:
    """How many transactions the connection committed while `fn` ran."""
    return sum(1 for line in _trace(fn) if line.startswith("F") and '"COMMIT"' in line)


def _trace(fn: Callable[[], object]) -> list[str]:
    """libpq's trace of the connection's messages while `fn` ran, a line each."""
    from psycopg import pq

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            fn()
        finally:
            pgconn.untrace()
        trace.seek(0)
        return [line for line in trace if line.strip()]
