"""Requests refused before any view runs, with the API's error shape.

- A body over `DATA_UPLOAD_MAX_MEMORY_SIZE` bytes: 413 `PAYLOAD_TOO_LARGE`.
- A NUL character in the path or the query string: 400 `BAD_REQUEST`. PostgreSQL text
  cannot hold one, so a lookup with it fails in the database instead of finding nothing.
- A JSON body nested deeper than `MAX_JSON_DEPTH`: 400 `BAD_JSON`. The JSON decoder
  recurses once per level, and a library of the wallet checks raises the interpreter's
  recursion limit far past what a thread's stack holds, so a body of a few hundred
  kilobytes of `[` would otherwise crash the process.

`RequestQueueLimitMiddleware` refuses, before any other work, a request that waited
longer than `REQUEST_QUEUE_TIMEOUT` for a thread of this process: 503 `OVERLOADED`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

from dexsite.errors import ExchangeError

MAX_JSON_DEPTH = 32

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the brackets of `raw` (outside strings) nest deeper than `limit`."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub(b"", raw)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def error(code: str, message: str, status: int, **extra: object) -> JsonResponse:
    """The API's error shape (`ExchangeError`'s, rendered before any view): with
    `retryAfter` in `extra`, a `Retry-After` too."""
    refused = ExchangeError(code, message, status_code=status, extra=extra)
    return JsonResponse(refused.as_dict(), status=status, headers=refused.headers())


def _too_large() -> JsonResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error("PAYLOAD_TOO_LARGE", f"request bodies are limited to {limit} bytes", 413)


class RequestGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refused = self.refuse(request)
        return refused if refused is not None else self.get_response(request)

    def refuse(self, request: HttpRequest) -> HttpResponse | None:
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "%00" in query or "\x00" in query:
            return error("BAD_REQUEST", "NUL characters are not allowed in URLs", 400)
        raw_length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            return error("BAD_REQUEST", "Content-Length is not a number", 400)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit:
            return _too_large()
        if length and "json" in request.META.get("CONTENT_TYPE", "").lower():
            try:
                body = request.body
            except RequestDataTooBig:
                return _too_large()
            if json_depth_exceeds(body):
                return error("BAD_JSON", f"JSON nested deeper than {MAX_JSON_DEPTH} levels", 400)
        return None


class RequestQueueLimitMiddleware:
    """A request that waited too long for a thread is refused unrun: 503 `OVERLOADED`,
    with `retryAfter`.

    The router stamps each request with the time it passed it on (`X-Request-Start:
    t=<epoch seconds>`, deploy/nginx.conf). The `http` role's threads are few and the
    server queues what they cannot take yet without a bound: offered more than it can
    serve, the queue grew until every request waited 30 s and its client had given up,
    and the threads went on serving requests no one waited for (docs/reliability.md,
    the soak). Refusing the ones that already waited past the bound costs a thread
    microseconds, so the queue drains to the bound and the rest are served in time.
    Without the stamp (no router in front) nothing is refused.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.REQUEST_QUEUE_TIMEOUT
        waited = queue_seconds(request.META.get("HTTP_X_REQUEST_START", ""))
        if limit and waited > limit:
            return error(
                "OVERLOADED",
                f"the server is overloaded: the request waited {waited:.1f} s for it and was "
                "not carried out; send it again",
                503,
                retryAfter=1,
            )
        return self.get_response(request)


def queue_seconds(stamp: str) -> float:
    """Seconds since the router's `t=<epoch seconds>` stamp; 0 without a readable one
    (or one from the future: clocks apart)."""
    if not stamp.startswith("t="):
        return 0.0
    try:
        started = float(stamp[2:])
    except ValueError:
        return 0.0
    return max(0.0, time.time() - started)
