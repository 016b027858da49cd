"""OpenAPI shapes of the responses, for drf-spectacular.

The views build their JSON from presenters and selectors (plain dicts); the serializers
here only describe those dicts, so that the schema at /api/v1/schema/ states every field,
its type and whether it may be null, and every refusal in the one error shape of
dexsite.errors. Where the contract reuses a field name (`side`, `mode`, `type`) for another
set of values, that set is stated as a pattern, so that enum components keep clear names.

Here: the helpers, the error shape and the shapes of the account and WebSocket-ticket
endpoints. The trading API's shapes, which use trading's enumerations, are in
trading/schema.py: this module imports no app.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema_field,
)
from rest_framework import serializers

from dexsite.api import MODE_CHOICES as MODES


class StrictSerializerExtension(OpenApiSerializerExtension):
    """Request bodies of a StrictSerializer refuse unknown fields (UNKNOWN_FIELD): the
    schema says so with `additionalProperties: false`."""

    target_class = "dexsite.api.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        # Not the base class's docstring on every request body.
        if self.target.__class__.__doc__ is None:
            schema.pop("description", None)
        return schema


def enum(*values: str, nullable: bool = False, **kwargs: Any) -> serializers.CharField:
    """A string field limited to `values` (and null when `nullable`)."""
    schema: dict[str, Any] = {"type": "string", "enum": list(values)}
    if nullable:
        schema["enum"].append(None)
        kwargs["allow_null"] = True
    field_class = extend_schema_field(schema)(type("EnumField", (serializers.CharField,), {}))
    return field_class(**kwargs)


def literal(*values: str, **kwargs: Any) -> serializers.CharField:
    """A string field limited to `values`, stated as a pattern: for a set that shares a
    field name with a different enumeration (`mode` of a paper-only answer)."""
    pattern = "^(" + "|".join(values) + ")$"
    field_class = extend_schema_field({"type": "string", "pattern": pattern})(
        type("LiteralField", (serializers.CharField,), {})
    )
    return field_class(**kwargs)


def decimal(nullable: bool = False, **kwargs: Any) -> serializers.CharField:
    """A decimal travelling as a string, e.g. "64523.5"."""
    field_class = extend_schema_field(
        {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "example": "64523.5"}
    )(type("DecimalString", (serializers.CharField,), {}))
    return field_class(allow_null=nullable, **kwargs)


def epoch_ms(nullable: bool = False, **kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(allow_null=nullable, help_text="epoch milliseconds", **kwargs)


# -- errors -----------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="stable UPPER_SNAKE code, see docs/api.md")
    message = serializers.CharField()
    field = serializers.CharField(required=False, help_text="the field at fault, if one is")
    retryAfter = serializers.IntegerField(
        required=False, help_text="seconds to wait (429 and cooldowns)"
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ERROR_DESCRIPTIONS = {
    400: "Refused: malformed input or an exchange rule (see `error.code`).",
    401: "No or bad credentials (`UNAUTHENTICATED`, `INVALID_CREDENTIALS`).",
    403: "Not allowed: the API key lacks a scope, or a session request lacks its CSRF token.",
    404: "No such resource, or one that belongs to another trader.",
    409: "Conflicts with the current state (see `error.code`).",
    422: "`IDEMPOTENCY_KEY_REUSED`: the Idempotency-Key was used for another request.",
    429: "Throttled or in cooldown; `error.retryAfter` says for how many seconds.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {
        code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code])
        for code in codes
    }


# Every private endpoint may answer these.
PRIVATE = (401, 403)


def responses(ok: dict[int, Any], *codes: int) -> dict[int, Any]:
    """The success responses `ok` and the error responses `codes`."""
    return {**ok, **errors(*codes)}


# -- identity, paper, wallets, vault, keys ----------------------------------------------


class TokenResultSerializer(serializers.Serializer):
    traderId = serializers.UUIDField()
    token = serializers.CharField()


class MeSerializer(serializers.Serializer):
    traderId = serializers.UUIDField()
    username = serializers.CharField()
    linkedWallets = serializers.ListField(child=serializers.CharField())
    paperPoints = decimal()


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
        "description": "asset → amount credited",
    }
)
class CreditedField(serializers.DictField):
    pass


class FaucetResultSerializer(serializers.Serializer):
    mode = literal("PAPER")
    credited = CreditedField()


class ClosedPositionSerializer(serializers.Serializer):
    market = serializers.CharField()
    side = literal("LONG", "SHORT")
    size = decimal()
    price = decimal()
    realizedPnl = decimal()


class PaperResetResultSerializer(serializers.Serializer):
    mode = literal("PAPER")
    canceledOrderIds = serializers.ListField(child=serializers.IntegerField())
    closedPositions = ClosedPositionSerializer(many=True)
    credited = CreditedField()


class LeaderboardRowSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    username = serializers.CharField()
    paperPoints = decimal()


class LeaderboardPageSerializer(serializers.Serializer):
    results = LeaderboardRowSerializer(many=True)
    nextToken = serializers.CharField(allow_null=True)


class WalletChallengeSerializer(serializers.Serializer):
    message = serializers.CharField()
    nonce = serializers.CharField()
    expiresAt = epoch_ms()


class WalletLinkedSerializer(serializers.Serializer):
    address = serializers.CharField()
    linkedAt = epoch_ms()


class WalletUnlinkedSerializer(serializers.Serializer):
    address = serializers.CharField()
    unlinkedAt = epoch_ms()


class TransferSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    type = literal("DEPOSIT", "WITHDRAWAL")
    asset = serializers.CharField()
    mode = enum(*MODES)
    amount = decimal()
    status = enum("PENDING", "SENDING", "CONFIRMED", "APPROVED", "REJECTED")
    txHash = serializers.CharField(allow_null=True)
    address = serializers.CharField(allow_null=True)
    note = serializers.CharField(allow_null=True)
    createdAt = epoch_ms()
    decidedAt = epoch_ms(nullable=True)


class VaultAssetSerializer(serializers.Serializer):
    asset = serializers.CharField()
    token = serializers.CharField(allow_null=True)
    decimals = serializers.IntegerField(allow_null=True)


class VaultSerializer(serializers.Serializer):
    chainId = serializers.IntegerField(allow_null=True)
    chainName = serializers.CharField(allow_null=True)
    rpcUrl = serializers.CharField(allow_null=True)
    vaultAddress = serializers.CharField(allow_null=True)
    assets = VaultAssetSerializer(many=True)
    confirmations = serializers.IntegerField(allow_null=True)
    development = serializers.BooleanField()


class TransfersPageSerializer(serializers.Serializer):
    results = TransferSerializer(many=True)
    nextToken = serializers.CharField(allow_null=True)


class ApiKeySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField(allow_blank=True)
    prefix = serializers.CharField()
    scopes = serializers.ListField(child=enum("read", "trade", "withdraw"))
    createdAt = epoch_ms()
    lastUsedAt = epoch_ms(nullable=True)
    revokedAt = epoch_ms(nullable=True)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="shown only in this response")


class WsTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField()
    expiresAt = epoch_ms()


# -- query parameters -------------------------------------------------------------------


def int_query(name: str, lo: int, hi: int, default: int | None = None) -> OpenApiParameter:
    """An integer query parameter in lo..hi, as dexsite.api.int_param checks it."""
    schema: dict[str, Any] = {"type": "integer", "minimum": lo, "maximum": hi}
    if default is not None:
        schema["default"] = default
    return OpenApiParameter(name, schema)


def required_query(name: str, description: str = "") -> OpenApiParameter:
    return OpenApiParameter(
        name, {"type": "string", "minLength": 1}, required=True, description=description
    )


# The `mode` query parameter of every endpoint that takes one.
MODE = OpenApiParameter("mode", str, enum=list(MODES))
# ... and of an endpoint that answers for one mode only.
MODE_REQUIRED = OpenApiParameter("mode", str, enum=list(MODES), required=True)


def page_query(limit_max: int) -> list[OpenApiParameter]:
    """`limit` (1..limit_max, 50 by default) and `nextToken` of a paginated list."""
    return [int_query("limit", 1, limit_max, 50), OpenApiParameter("nextToken", str)]
