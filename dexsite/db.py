"""Database helpers shared by the apps' write paths."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from django.db import OperationalError, transaction

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


# PostgreSQL's deadlock_detected and serialization_failure: the transaction did nothing
# and may simply run again.
RETRYABLE_PGCODES = {"40P01", "40001"}
MAX_ATTEMPTS = 5


def retrying(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a service that owns its transaction again when PostgreSQL broke a deadlock or
    a serialization conflict by failing it (up to MAX_ATTEMPTS, with a short backoff)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return fn(*args, **kwargs)
            except OperationalError as e:
                code = getattr(getattr(e, "__cause__", None), "sqlstate", None)
                # Inside a caller's transaction the whole of it failed: only the caller
                # can run it again.
                in_outer = transaction.get_connection().in_atomic_block
                if code not in RETRYABLE_PGCODES or attempt == MAX_ATTEMPTS or in_outer:
                    raise
                log.info("retrying %s after %s (attempt %d)", fn.__name__, code, attempt)
                time.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    return wrapper
