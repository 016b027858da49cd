"""`Idempotency-Key`: a client that lost a response (timeout, dropped connection) sends
the request again with the same key and gets the first response instead of a second
deposit, withdrawal or order.

- Same key, same request (method, path, body) → the stored status and body, with
  `Idempotent-Replayed: true`.
- Same key, another request → 422 IDEMPOTENCY_KEY_REUSED.
- Only successful (2xx) responses are stored: a refusal changed nothing, so the key
  stays free and the client may retry once the cause is gone.
- Keys are per trader and forgotten after settings.IDEMPOTENCY_KEY_TTL seconds.

The key is claimed by inserting its record at the start of one transaction that also
holds the request's effects, and the response is written into it before commit. So a
record exists exactly when the request took effect; a twin sent concurrently blocks on
the unique index until the first commits, then replays its response (or, if the first
rolled back, runs itself). Services called inside keep their own `atomic` blocks, which
become savepoints of this one; a deadlock inside aborts the whole transaction, so it is
retried here, whole, as the order service retries its own.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from dexsite.db import retrying
from dexsite.errors import ExchangeError
from trading.models import IdempotencyRecord

HEADER = "Idempotency-Key"
# Printable ASCII without spaces, as a header value can carry it unquoted.
KEY_FORMAT = re.compile(r"^[\x21-\x7e]{1,255}$")


class _Discard(Exception):
    """Leave the transaction rolled back but answer with `response`."""

    def __init__(self, response: Response) -> None:
        self.response = response


def fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _replay(record, wanted: str) -> Response:
    if record.fingerprint != wanted:
        raise ExchangeError(
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used for a different request",
            status_code=422,
        )
    return Response(record.body, status=record.status_code, headers={"Idempotent-Replayed": "true"})


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Decorate an authenticated APIView method to honour an optional Idempotency-Key."""

    @functools.wraps(handler)
    def wrapper(view, request: Request, *args, **kwargs) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not KEY_FORMAT.match(key):
            raise ExchangeError(
                "INVALID_IDEMPOTENCY_KEY",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
                field=HEADER,
            )
        return _run(lambda: handler(view, request, *args, **kwargs), request, key)

    return wrapper


def _run(call: Callable[[], Response], request: Request, key: str) -> Response:
    trader = request.user
    wanted = fingerprint(request)

    @retrying
    def once() -> Response:
        expired = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL)
        try:
            with transaction.atomic():
                IdempotencyRecord.objects.filter(trader=trader, created_at__lt=expired).delete()
                try:
                    # Savepoint: losing the race to a committed twin leaves ours usable.
                    with transaction.atomic():
                        record = IdempotencyRecord.objects.create(
                            trader=trader, key=key, fingerprint=wanted, status_code=0, body={}
                        )
                except IntegrityError:
                    stored = IdempotencyRecord.objects.get(trader=trader, key=key)
                    raise _Discard(_replay(stored, wanted)) from None
                response = call()
                if not 200 <= response.status_code < 300:
                    raise _Discard(response)
                record.status_code = response.status_code
                record.body = response.data
                record.save(update_fields=["status_code", "body"])
                return response
        except _Discard as d:
            return d.response

    return once()
