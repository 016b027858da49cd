"""OpenAPI shapes of the trading API's responses (market data, orders, fills, positions,
the account), for drf-spectacular; the shared helpers and the error shape are in
dexsite/schema.py."""

from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from dexsite.api import MODE_CHOICES as MODES
from dexsite.schema import ErrorSerializer, decimal, enum, epoch_ms, literal
from trading.models import OrderType, Side, TimeInForce, TriggerBy

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
    status = enum("NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "UNTRIGGERED")
    timeInForce = serializers.ChoiceField(choices=TimeInForce.choices)
    reduceOnly = serializers.BooleanField()
    createdAt = epoch_ms()
    updatedAt = epoch_ms()
    cancelReason = serializers.CharField(
        required=False,
        help_text=(
            "on cancelled orders: USER, IOC, FOK, MARKET, PRICE_BAND, SELF_TRADE, ...; on a"
            " conditional order refused when its trigger fired, the refusal's code"
        ),
    )
    triggerPrice = decimal(required=False)
    triggerBy = serializers.ChoiceField(
        choices=TriggerBy.choices, required=False, help_text="conditional orders only"
    )
    attached = serializers.ChoiceField(
        choices=["TP", "SL"], required=False, help_text="a position's take-profit or stop-loss"
    )
    callbackRate = decimal(
        required=False,
        help_text="TRAILING_STOP_MARKET: % behind the best price that its triggerPrice follows",
    )
    takeProfit = decimal(
        required=False, help_text="set on the position once the order fills (perps, futures)"
    )
    stopLoss = decimal(
        required=False, help_text="set on the position once the order fills (perps, futures)"
    )
    fills = FillSerializer(many=True, required=False)


class PositionTpslSerializer(serializers.Serializer):
    takeProfit = OrderSerializer(allow_null=True)
    stopLoss = OrderSerializer(allow_null=True)


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
