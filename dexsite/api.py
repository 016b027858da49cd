"""Shared pieces of the REST API."""

from __future__ import annotations

import base64
import copy
import json
import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class DecimalJSONParser(JSONParser):
    """JSON numbers become Decimal, never float: `0.1` stays exactly 0.1.
    NaN and Infinity are refused outright."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            raw = stream.read().decode(encoding)
        except UnicodeDecodeError as e:
            raise ParseError("request body is not valid text") from e
        if not raw.strip():
            return {}

        def refuse(name: str) -> None:
            raise ParseError(f"{name} is not a number")

        try:
            return json.loads(raw, parse_float=Decimal, parse_constant=refuse)
        except ValueError as e:
            raise ParseError(f"malformed JSON: {e}") from e


class StrictSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not know, so that a typo such as
    `"prcie"` is an error rather than an order without a price. Text and boolean fields
    take their JSON type only: `"clientOrderId": 0` and `"reduceOnly": 0` are refused,
    not read as "0" and false."""

    def get_fields(self) -> dict[str, serializers.Field]:
        """The declared fields, copied for this instance. DRF deep-copies each one, which
        builds it again (its choices, validators, ...): on the order endpoint that was
        the most expensive part of validating a request. A field without sub-fields is
        copied shallowly: the copy is what gets bound to this instance, and what it
        shares with the declaration (choices, validators, messages) is only read."""
        return {
            name: copy.copy(f) if _flat(f) else copy.deepcopy(f)
            for name, f in self._declared_fields.items()
        }

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {unknown[0]: [serializers.ErrorDetail("unknown field", code="unknown_field")]}
                )
            for name, field in self.fields.items():
                value = data.get(name)
                if value is None:
                    continue
                if isinstance(field, serializers.CharField) and not isinstance(value, str):
                    wrong = "must be a string"
                elif isinstance(field, serializers.BooleanField) and not isinstance(value, bool):
                    wrong = "must be true or false"
                else:
                    continue
                raise serializers.ValidationError(
                    {name: [serializers.ErrorDetail(wrong, code="invalid")]}
                )
        return super().to_internal_value(data)


def _flat(field: serializers.Field) -> bool:
    """A field with no sub-fields: no nested serializer, no `child` (lists, dicts)."""
    return not isinstance(field, serializers.BaseSerializer) and not hasattr(field, "child")


# The largest price, quantity, order value or transfer amount taken: margin and balance
# arithmetic keep 28 significant digits with 12 after the point, so values stay below
# 10**16.
MONEY_LIMIT = Decimal(10) ** 15


def Money(**kwargs) -> serializers.DecimalField:
    """A decimal input: up to 38 digits, 12 after the point."""
    return serializers.DecimalField(max_digits=38, decimal_places=12, **kwargs)


MODE_CHOICES = ("REAL", "PAPER")


def mode_param(request, default: str | None = None, required: bool = False) -> str | None:
    from dexsite.errors import ExchangeError

    mode = request.query_params.get("mode")
    if mode is None:
        if required and default is None:
            raise ExchangeError("MISSING_FIELD", "mode is required", field="mode")
        return default
    # Exactly as the contract spells them: an empty `mode=` is a mistake, not the default.
    if mode not in MODE_CHOICES:
        raise ExchangeError("INVALID_MODE", "mode must be REAL or PAPER", field="mode")
    return mode


_INTEGER = re.compile(r"-?[0-9]{1,18}")


def int_param(request, name: str, default: int, lo: int, hi: int) -> int:
    from dexsite.errors import ExchangeError

    raw = request.query_params.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() would also take " 5", "5_0" and other scripts' digits.
    if not _INTEGER.fullmatch(raw):
        raise ExchangeError(f"INVALID_{name.upper()}", f"{name} must be an integer", field=name)
    value = int(raw)
    if not lo <= value <= hi:
        raise ExchangeError(
            f"INVALID_{name.upper()}", f"{name} must be between {lo} and {hi}", field=name
        )
    return value


def page_token(prefix: str, value: int) -> str:
    """An opaque `nextToken`: which list it belongs to (`prefix`) and where it resumes."""
    return base64.urlsafe_b64encode(f"{prefix}:{value}".encode()).decode().rstrip("=")


def page_value(prefix: str, token: str) -> int:
    """The resume point of a `nextToken` this server issued for the `prefix` list."""
    from dexsite.errors import ExchangeError

    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        got, value = raw.split(":", 1)
        if got != prefix or int(value) < 0:
            raise ValueError(got)
        return int(value)
    except (ValueError, UnicodeDecodeError) as e:
        raise ExchangeError(
            "INVALID_NEXT_TOKEN", "nextToken is not valid", field="nextToken"
        ) from e
