"""The one error shape of the API: {"error": {"code", "message", "field"?}} with a 4xx.

Services raise `ExchangeError`; DRF's own exceptions (validation, auth, throttling,
404) are translated here so that a client only ever sees stable UPPER_SNAKE codes.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response


class ExchangeError(Exception):
    """A refused request. Raised inside a transaction it rolls everything back."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        status_code: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra or {}
        if status_code is not None:
            self.status_code = status_code

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        return {"error": body}

    def headers(self) -> dict[str, str] | None:
        """`Retry-After` for a refusal that says when to try again (`retryAfter`)."""
        retry = self.extra.get("retryAfter")
        return {"Retry-After": str(retry)} if retry is not None else None


class NotFound(ExchangeError):
    def __init__(self, what: str = "resource") -> None:
        super().__init__("NOT_FOUND", f"{what} not found", status_code=404)


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _upper_snake(name: str) -> str:
    return _CAMEL.sub("_", name).upper()


def _first_error(detail: Any, prefix: str = "") -> tuple[str | None, Any]:
    """Walk a DRF error structure to its first leaf: (dotted field path, ErrorDetail)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            # List items are reported under their index: `orders.3`.
            name = None if key == "non_field_errors" else str(key)
            path = ".".join(p for p in (prefix, name) if p) if name or prefix else ""
            return _first_error(value, path)
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], prefix)
    return prefix or None, detail


def validation_error_body(detail: Any) -> dict[str, Any]:
    field, leaf = _first_error(detail)
    drf_code = getattr(leaf, "code", "invalid")
    # The innermost named field: `orders.3` is a bad item of `orders`.
    named = [p for p in field.split(".") if not p.isdigit()] if field else []
    last = named[-1] if named else None
    if drf_code == "required":
        code = "MISSING_FIELD"
    elif drf_code == "unknown_field":
        code = "UNKNOWN_FIELD"
    elif last:
        code = f"INVALID_{_upper_snake(last)}"
    else:
        code = "BAD_REQUEST"
    body: dict[str, Any] = {"code": code, "message": str(leaf)}
    if field:
        body["field"] = field
    return {"error": body}


_STATUS_CODES = {
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ExchangeError):
        return Response(exc.as_dict(), status=exc.status_code, headers=exc.headers())
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        return Response(validation_error_body(exc.detail), status=400)
    if isinstance(exc, exceptions.ParseError):
        return Response({"error": {"code": "BAD_JSON", "message": str(exc.detail)}}, status=400)
    if isinstance(exc, exceptions.APIException):
        code = _STATUS_CODES.get(exc.status_code, "BAD_REQUEST")
        body: dict[str, Any] = {"code": code, "message": str(exc.detail)}
        headers = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            body["retryAfter"] = int(exc.wait + 0.999)
            headers["Retry-After"] = str(body["retryAfter"])
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            return Response({"error": {**body, "code": "UNAUTHENTICATED"}}, status=401)
        return Response({"error": body}, status=exc.status_code, headers=headers)
    return None
