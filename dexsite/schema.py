"""OpenAPI shapes of the responses, for drf-spectacular.

The views build their JSON from presenters and selectors (plain dicts); the serializers
here only describe those dicts, so that the schema at /api/v1/schema/ states every field,
its type and whether it may be null, and every refusal in the one error shape of
dexsite.errors. Where the contract reuses a field name (`side`, `mode`, `type`) for another
set of values, that set is stated as a pattern, so that enum components keep clear names.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema_field,
)
from rest_framework import serializers

from dexsite.api import MODE_CHOICES as MODES
from trading.models import OrderType, Side, TimeInForce


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


# -- market data ------------------------------------------------------------------------


class MarketSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    kind = enum("PERP", "FUTURE", "OPTION", "SPOT")
    base = serializers.CharField()
    quote = serializers.CharField()
    tickSize = decimal()
    lotSize = decimal()
    minNotional = decimal()
    maxLeverage = decimal(nullable=True)
    makerFee = decimal()
    takerFee = decimal()
    maintenanceMarginRatio = decimal(nullable=True)
    priceBand = decimal(
        help_text="a limit buy above mark x (1 + priceBand), or sell below mark x (1 - "
        "priceBand), is refused (PRICE_OUT_OF_BAND); spot measures from the index"
    )
    marketSlippage = decimal(
        help_text="a market order fills no further than this fraction from the mark; "
        "the rest is cancelled (cancelReason PRICE_BAND)"
    )
    markBand = decimal(nullable=True, help_text="the mark stays within this fraction of the index")
    status = enum("ACTIVE", "PAUSED", "DELISTED", "SETTLED")
    markPrice = decimal(nullable=True)
    indexPrice = decimal(nullable=True)
    lastPrice = decimal(nullable=True)
    change24h = decimal(nullable=True, help_text="percent")
    volume24h = decimal()
    openInterest = decimal(nullable=True)
    fundingRate = decimal(nullable=True)
    nextFundingTs = epoch_ms(nullable=True)
    expiryTs = epoch_ms(nullable=True)
    strike = decimal(nullable=True)
    optionType = enum("CALL", "PUT", nullable=True)
    markIv = decimal(nullable=True)


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
            "minItems": 2,
            "maxItems": 2,
        },
        "description": "[price, quantity] levels, best first",
    }
)
class LevelsField(serializers.ListField):
    pass


class DepthSerializer(serializers.Serializer):
    market = serializers.CharField()
    mode = enum(*MODES)
    seq = serializers.IntegerField()
    bids = LevelsField()
    asks = LevelsField()


class PublicTradeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    px = decimal()
    qty = decimal()
    side = serializers.ChoiceField(choices=Side.choices, help_text="the taker's side")
    ts = epoch_ms()
    liquidation = serializers.BooleanField()


class CandleSerializer(serializers.Serializer):
    ts = epoch_ms()
    open = decimal()
    high = decimal()
    low = decimal()
    close = decimal()
    volume = decimal()


# -- orders, fills, account -------------------------------------------------------------


class FillSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    orderId = serializers.IntegerField()
    tradeId = serializers.IntegerField()
    market = serializers.CharField()
    mode = enum(*MODES)
    side = serializers.ChoiceField(choices=Side.choices)
    px = decimal()
    qty = decimal()
    fee = decimal()
    liquidity = enum("MAKER", "TAKER")
    ts = epoch_ms()


class OrderSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    clientOrderId = serializers.CharField(allow_null=True)
    market = serializers.CharField()
    mode = enum(*MODES)
    side = serializers.ChoiceField(choices=Side.choices)
    type = serializers.ChoiceField(choices=OrderType.choices)
    price = decimal(nullable=True)
    qty = decimal()
    filledQty = decimal()
    avgFillPrice = decimal(nullable=True)
    status = enum("NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED")
    timeInForce = serializers.ChoiceField(choices=TimeInForce.choices)
    reduceOnly = serializers.BooleanField()
    createdAt = epoch_ms()
    updatedAt = epoch_ms()
    cancelReason = serializers.CharField(
        required=False,
        help_text="on cancelled orders: USER, IOC, FOK, MARKET, PRICE_BAND, SELF_TRADE, ...",
    )
    fills = FillSerializer(many=True, required=False)


class BatchResultSerializer(serializers.Serializer):
    results = serializers.ListField(
        child=PolymorphicProxySerializer(
            component_name="OrderOrError",
            serializers=[OrderSerializer, ErrorSerializer],
            resource_type_field_name=None,
        )
    )


class CanceledIdsSerializer(serializers.Serializer):
    canceledIds = serializers.ListField(child=serializers.IntegerField())


class FillsPageSerializer(serializers.Serializer):
    results = FillSerializer(many=True)
    nextToken = serializers.CharField(allow_null=True)


class BalanceSerializer(serializers.Serializer):
    asset = serializers.CharField()
    mode = enum(*MODES)
    total = decimal()
    available = decimal()
    locked = decimal()


class PositionSerializer(serializers.Serializer):
    market = serializers.CharField()
    mode = enum(*MODES)
    size = decimal()
    side = literal("LONG", "SHORT", "FLAT")
    entryPrice = decimal(nullable=True)
    markPrice = decimal(nullable=True)
    unrealizedPnl = decimal(nullable=True)
    realizedPnl = decimal()
    margin = decimal(nullable=True)
    liquidationPrice = decimal(nullable=True)
    leverage = decimal(nullable=True)


class AccountSerializer(serializers.Serializer):
    """The cross-margin account of one mode, in USDC (docs/api.md, "Account")."""

    mode = enum(*MODES)
    equity = decimal(help_text="cash + the value of the positions at mark")
    cash = decimal(help_text="the USDC balance less what pending withdrawals hold (on its way out)")
    unrealizedPnl = decimal(
        help_text="the positions' unrealized PnL at mark, as /positions shows them (an "
        "option's against its premium)"
    )
    initialMargin = decimal(
        help_text="what the positions need: |size| x mark / leverage; short options more"
    )
    maintenanceMargin = decimal(help_text="below this equity, the account is liquidated")
    marginRatio = decimal(
        nullable=True,
        help_text="maintenanceMargin / equity; above 1: due for liquidation; 0 where no "
        "maintenance margin is needed; null where it is and equity is 0 or less",
    )
    availableToTrade = decimal(
        help_text="the most a new order may reserve: the cash no order or withdrawal "
        "holds, at most the free margin (equity - initialMargin - locked)"
    )
    availableToWithdraw = decimal(
        help_text="what POST /vault/withdraw would let leave now; always 0 in PAPER"
    )


class LeverageResultSerializer(serializers.Serializer):
    market = serializers.CharField()
    mode = enum(*MODES)
    leverage = decimal()


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
    status = enum("PENDING", "CONFIRMED", "APPROVED", "REJECTED")
    txHash = serializers.CharField(allow_null=True)
    address = serializers.CharField(allow_null=True)
    note = serializers.CharField(allow_null=True)
    createdAt = epoch_ms()
    decidedAt = epoch_ms(nullable=True)


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
