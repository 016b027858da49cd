"""Trading endpoints. One view per operation; each validates shape and calls one
service or selector."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dexsite import schema as S
from dexsite.api import MODE_CHOICES, MONEY_LIMIT, Money, StrictSerializer, int_param, mode_param
from dexsite.errors import ExchangeError, validation_error_body
from trading import matcher, selectors
from trading import schema as TS
from trading.idempotency import idempotent
from trading.models import OrderType, Side, TimeInForce, TriggerBy
from trading.orders.conditional import position_tpsl_set
from trading.orders.request import close_qty
from trading.presenters import dec
from trading.services import markets as market_services

MARKET = OpenApiParameter("market", str)


class PublicApi(APIView):
    permission_classes = [AllowAny]


class MarketsApi(PublicApi):
    @extend_schema(
        operation_id="markets_list",
        parameters=[S.MODE],
        responses=S.responses({200: TS.MarketSerializer(many=True)}, 400, 401),
    )
    def get(self, request: Request) -> Response:
        return Response(selectors.markets_list(mode=mode_param(request, "REAL")))


class MarketApi(PublicApi):
    @extend_schema(
        parameters=[S.MODE], responses=S.responses({200: TS.MarketSerializer}, 400, 401, 404)
    )
    def get(self, request: Request, symbol: str) -> Response:
        found = selectors.markets_list(mode=mode_param(request, "REAL"), symbol=symbol)
        if not found:
            raise ExchangeError("UNKNOWN_MARKET", f"no market {symbol}", status_code=404)
        return Response(found[0])


class DepthApi(PublicApi):
    @extend_schema(
        parameters=[S.MODE, S.int_query("levels", 1, 1000, 50)],
        responses=S.responses({200: TS.DepthSerializer}, 400, 401, 404),
    )
    def get(self, request: Request, symbol: str) -> Response:
        return Response(
            selectors.depth_get(
                symbol=symbol,
                mode=mode_param(request, "REAL"),
                levels=int_param(request, "levels", 50, 1, 1000),
            )
        )


class TradesApi(PublicApi):
    @extend_schema(
        parameters=[S.MODE, S.int_query("limit", 1, 1000, 100)],
        responses=S.responses({200: TS.PublicTradeSerializer(many=True)}, 400, 401, 404),
    )
    def get(self, request: Request, symbol: str) -> Response:
        return Response(
            selectors.trades_recent(
                symbol=symbol,
                mode=mode_param(request, "REAL"),
                limit=int_param(request, "limit", 100, 1, 1000),
            )
        )


CANDLES_END_MS = 32_503_680_000_000  # 3000-01-01T00:00:00Z


class MetricsApi(PublicApi):
    @extend_schema(
        parameters=[
            S.required_query("market", "symbol, e.g. BTC-PERP"),
            S.MODE,
            OpenApiParameter("interval", str, enum=list(selectors.INTERVALS)),
            S.int_query("from", 0, 10**15),
            S.int_query("to", 0, 10**15),
        ],
        responses=S.responses({200: TS.CandleSerializer(many=True)}, 400, 401, 404),
    )
    def get(self, request: Request) -> Response:
        symbol = request.query_params.get("market")
        if not symbol:
            raise ExchangeError("MISSING_FIELD", "market is required", field="market")
        interval = request.query_params.get("interval", "1m")
        if interval not in selectors.INTERVALS:
            raise ExchangeError(
                "INVALID_INTERVAL",
                f"interval must be one of {', '.join(selectors.INTERVALS)}",
                field="interval",
            )
        bound = 10**15
        # Past the year 3000 there are no candles, and a date there would not fit the
        # datetime arithmetic: such a bound reads as the year 3000.
        start = min(int_param(request, "from", -1, 0, bound), CANDLES_END_MS)
        end = min(int_param(request, "to", -1, 0, bound), CANDLES_END_MS)
        return Response(
            selectors.candles_get(
                symbol=symbol,
                mode=mode_param(request, "REAL"),
                interval=interval,
                start_ms=None if start < 0 else start,
                end_ms=None if end < 0 else end,
            )
        )


class OrderInputSerializer(StrictSerializer):
    market = serializers.CharField(max_length=40)
    mode = serializers.ChoiceField(choices=MODE_CHOICES)
    side = serializers.ChoiceField(choices=Side.choices)
    type = serializers.ChoiceField(choices=OrderType.choices)
    price = Money(required=False, allow_null=True)
    qty = Money()
    timeInForce = serializers.ChoiceField(choices=TimeInForce.choices, default=TimeInForce.GTC)
    reduceOnly = serializers.BooleanField(default=False)
    clientOrderId = serializers.RegexField(
        r"^[A-Za-z0-9._:-]{1,64}$", required=False, allow_null=True
    )
    triggerPrice = Money(required=False, allow_null=True)
    triggerBy = serializers.ChoiceField(choices=TriggerBy.choices, default=TriggerBy.MARK)
    # The position's TP/SL, set once this order fills.
    takeProfit = Money(required=False, allow_null=True)
    stopLoss = Money(required=False, allow_null=True)
    # TRAILING_STOP_MARKET: how far behind the best price its trigger follows, in %.
    callbackRate = Money(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        price, qty = attrs.get("price"), attrs["qty"]
        for name in ("triggerPrice", "takeProfit", "stopLoss", "callbackRate"):
            value = attrs.get(name)
            if value is not None and value > MONEY_LIMIT:
                raise serializers.ValidationError({name: f"{name} must be at most 1E+15"})
        if price is not None and price > MONEY_LIMIT:
            raise serializers.ValidationError({"price": "price must be at most 1E+15"})
        if qty > MONEY_LIMIT:
            raise serializers.ValidationError({"qty": "qty must be at most 1E+15"})
        if price is not None and price * qty > MONEY_LIMIT:
            raise serializers.ValidationError({"qty": "price * qty must be at most 1E+15"})
        return attrs

    def arguments(self) -> dict[str, Any]:
        """The order as `order_place` takes it."""
        d = self.validated_data
        return {
            "market": d["market"],
            "mode": d["mode"],
            "side": d["side"],
            "type": d["type"],
            "qty": d["qty"],
            "price": d.get("price"),
            "time_in_force": d["timeInForce"],
            "reduce_only": d["reduceOnly"],
            "client_order_id": d.get("clientOrderId"),
            "trigger_price": d.get("triggerPrice"),
            "trigger_by": d["triggerBy"],
            "take_profit": d.get("takeProfit"),
            "stop_loss": d.get("stopLoss"),
            "callback_rate": d.get("callbackRate"),
        }

    def place(self, trader) -> tuple[dict[str, Any], bool]:
        return matcher.order_submit(trader=trader, **self.arguments())


class TradeApi(APIView):
    @extend_schema(
        request=OrderInputSerializer,
        examples=[
            OpenApiExample(
                "limit order",
                value={
                    "market": "BTC-PERP",
                    "mode": "PAPER",
                    "side": "BUY",
                    "type": "LIMIT",
                    "price": "60000",
                    "qty": "0.01",
                },
                request_only=True,
            )
        ],
        responses=S.responses(
            {201: TS.OrderSerializer, 200: TS.OrderSerializer}, 400, *S.PRIVATE, 404, 422
        ),
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = OrderInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        order, created = data.place(request.user)
        return Response(order, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class BatchInputSerializer(StrictSerializer):
    orders = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=20)


class TradeBatchApi(APIView):
    @extend_schema(
        request=BatchInputSerializer,
        responses=S.responses({200: TS.BatchResultSerializer}, 400, *S.PRIVATE),
    )
    def post(self, request: Request) -> Response:
        batch = BatchInputSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        results: list[dict[str, Any] | None] = []
        valid: list[tuple[int, dict[str, Any]]] = []
        for raw in batch.validated_data["orders"]:
            one = OrderInputSerializer(data=raw)
            if one.is_valid():
                valid.append((len(results), one.arguments()))
                results.append(None)
            else:
                results.append(validation_error_body(one.errors))
        # Each order stands on its own: one refusal does not undo the others.
        placed = matcher.orders_submit(trader=request.user, orders=[args for _, args in valid])
        for (i, _), outcome in zip(valid, placed, strict=True):
            results[i] = outcome.as_dict() if isinstance(outcome, ExchangeError) else outcome[0]
        return Response({"results": results})


class OrdersApi(APIView):
    @extend_schema(
        operation_id="orders_list",
        parameters=[S.MODE, MARKET, OpenApiParameter("status", str)],
        responses=S.responses({200: TS.OrderSerializer(many=True)}, 400, *S.PRIVATE),
    )
    def get(self, request: Request) -> Response:
        status_ = request.query_params.get("status")
        if status_ and status_.upper() not in {
            "OPEN",
            "NEW",
            "PARTIALLY_FILLED",
            "FILLED",
            "CANCELED",
            "REJECTED",
        }:
            raise ExchangeError("INVALID_STATUS", "unknown status", field="status")
        return Response(
            selectors.orders_list(
                trader=request.user,
                mode=mode_param(request),
                market=market_filter(request),
                status=status_.lower() if status_ and status_.upper() == "OPEN" else status_,
            )
        )

    @extend_schema(
        operation_id="orders_cancel_all",
        parameters=[
            S.MODE,
            MARKET,
            OpenApiParameter(
                "conditional",
                str,
                enum=["true", "false"],
                description="false: leave the conditional orders waiting for their trigger",
            ),
        ],
        responses=S.responses({200: TS.CanceledIdsSerializer}, 400, *S.PRIVATE),
    )
    def delete(self, request: Request) -> Response:
        conditional = request.query_params.get("conditional", "true")
        if conditional not in ("true", "false"):
            raise ExchangeError(
                "INVALID_CONDITIONAL", "conditional must be true or false", field="conditional"
            )
        ids = matcher.orders_cancel_all_submit(
            trader=request.user,
            mode=mode_param(request),
            market=market_filter(request),
            conditional=conditional == "true",
        )
        return Response({"canceledIds": ids})


def market_filter(request: Request) -> str | None:
    """The `market` a list or a cancel-all is narrowed to, or None for all. A symbol
    that names no market is refused: read as "nothing matches", a cancel-all by a
    misspelt symbol would answer that it cancelled nothing."""
    symbol = request.query_params.get("market") or None
    if symbol is not None and not selectors.market_exists(symbol):
        raise ExchangeError("UNKNOWN_MARKET", f"no market {symbol}", field="market")
    return symbol


class OrderApi(APIView):
    @extend_schema(responses=S.responses({200: TS.OrderSerializer}, *S.PRIVATE, 404))
    def get(self, request: Request, order_id: int) -> Response:
        return Response(selectors.order_get(trader=request.user, order_id=order_id))

    @extend_schema(responses=S.responses({200: TS.OrderSerializer}, 400, *S.PRIVATE, 404))
    def delete(self, request: Request, order_id: int) -> Response:
        return Response(matcher.order_cancel_submit(trader=request.user, order_id=order_id))


class FillsApi(APIView):
    @extend_schema(
        parameters=[
            S.MODE,
            MARKET,
            *S.page_query(500),
        ],
        responses=S.responses({200: TS.FillsPageSerializer}, 400, *S.PRIVATE),
    )
    def get(self, request: Request) -> Response:
        return Response(
            selectors.fills_page(
                trader=request.user,
                mode=mode_param(request),
                market=market_filter(request),
                limit=int_param(request, "limit", 50, 1, 500),
                next_token=request.query_params.get("nextToken") or None,
            )
        )


class PositionsApi(APIView):
    @extend_schema(
        parameters=[S.MODE],
        responses=S.responses({200: TS.PositionSerializer(many=True)}, 400, *S.PRIVATE),
    )
    def get(self, request: Request) -> Response:
        return Response(selectors.positions_list(trader=request.user, mode=mode_param(request)))


class AccountApi(APIView):
    @extend_schema(
        parameters=[S.MODE_REQUIRED],
        responses=S.responses({200: TS.AccountSerializer}, 400, *S.PRIVATE),
    )
    def get(self, request: Request) -> Response:
        # One account per mode: no mode is a mistake, not both.
        mode = mode_param(request, required=True)
        return Response(selectors.account_get(trader=request.user, mode=mode))


class ModeSerializer(StrictSerializer):
    mode = serializers.ChoiceField(choices=MODE_CHOICES)


class PositionCloseSerializer(StrictSerializer):
    mode = serializers.ChoiceField(choices=MODE_CHOICES)
    qty = Money(required=False, allow_null=True)
    fraction = serializers.DecimalField(
        max_digits=13, decimal_places=12, required=False, allow_null=True
    )
    price = Money(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        qty, fraction, price = attrs.get("qty"), attrs.get("fraction"), attrs.get("price")
        if qty is not None and fraction is not None:
            raise serializers.ValidationError({"fraction": "give qty or fraction, not both"})
        if qty is not None and not 0 < qty <= MONEY_LIMIT:
            raise serializers.ValidationError({"qty": "qty must be above 0 and at most 1E+15"})
        if fraction is not None and not 0 < fraction <= 1:
            raise serializers.ValidationError(
                {"fraction": "fraction must be above 0 and at most 1"}
            )
        if price is not None and not 0 < price <= MONEY_LIMIT:
            raise serializers.ValidationError({"price": "price must be above 0 and at most 1E+15"})
        return attrs


class PositionCloseApi(APIView):
    @extend_schema(
        request=PositionCloseSerializer,
        responses=S.responses({201: TS.OrderSerializer}, 400, *S.PRIVATE, 404),
        description=(
            "Close the position, or a part of it (`qty`, or `fraction` of it rounded down to "
            "whole lots), with a reduce-only order: at market (IOC), or, given `price`, a "
            "limit order that rests (GTC) until it fills. The answer is the order: what it "
            "filled (`filledQty`) is what closed; the rest of the position stays open."
        ),
    )
    def post(self, request: Request, symbol: str) -> Response:
        data = PositionCloseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        mode, price = d["mode"], d.get("price")
        market = selectors.market_get(symbol)
        position = market.position_set.filter(trader=request.user, mode=mode).first()
        if position is None or position.size == 0:
            raise ExchangeError(
                "NO_POSITION", f"no open {mode} position in {symbol}", status_code=400
            )
        qty = close_qty(market, size=position.size, qty=d.get("qty"), fraction=d.get("fraction"))
        order, _ = matcher.order_submit(
            trader=request.user,
            market=symbol,
            mode=mode,
            side=Side.SELL if position.size > 0 else Side.BUY,
            type=OrderType.MARKET if price is None else OrderType.LIMIT,
            price=price,
            qty=qty,
            reduce_only=True,
            time_in_force=TimeInForce.IOC if price is None else TimeInForce.GTC,
        )
        return Response(order, status=status.HTTP_201_CREATED)


class PositionTpslSerializer(StrictSerializer):
    mode = serializers.ChoiceField(choices=MODE_CHOICES)
    takeProfit = Money(required=False, allow_null=True)
    stopLoss = Money(required=False, allow_null=True)
    triggerBy = serializers.ChoiceField(choices=TriggerBy.choices, default=TriggerBy.MARK)


class PositionTpslApi(APIView):
    @extend_schema(
        request=PositionTpslSerializer,
        responses=S.responses({200: TS.PositionTpslSerializer}, 400, *S.PRIVATE, 404),
        description=(
            "Attach a take-profit and a stop-loss to the position: market orders that close "
            "all of it (as it is then) when the watched price reaches them. A price sets one, "
            "null removes it, an absent field leaves it. One cancels the other; both go when "
            "the position closes."
        ),
    )
    def post(self, request: Request, symbol: str) -> Response:
        data = PositionTpslSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        selectors.market_get(symbol)
        given = {
            name: d[key] for key, name in (("takeProfit", "take_profit"), ("stopLoss", "stop_loss"))
            if key in d
        }  # fmt: skip
        return Response(
            position_tpsl_set(
                trader=request.user,
                symbol=symbol,
                mode=d["mode"],
                trigger_by=d["triggerBy"],
                **given,
            )
        )


class LeverageSerializer(StrictSerializer):
    mode = serializers.ChoiceField(choices=MODE_CHOICES)
    leverage = serializers.DecimalField(max_digits=6, decimal_places=2)


class LeverageApi(APIView):
    @extend_schema(
        request=LeverageSerializer,
        responses=S.responses({200: TS.LeverageResultSerializer}, 400, *S.PRIVATE, 404),
    )
    def post(self, request: Request, symbol: str) -> Response:
        data = LeverageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        market = selectors.market_get(symbol)
        with transaction.atomic():
            leverage = market_services.leverage_set(
                trader=request.user,
                market=market,
                mode=data.validated_data["mode"],
                leverage=data.validated_data["leverage"],
            )
        return Response(
            {
                "market": symbol,
                "mode": data.validated_data["mode"],
                "leverage": dec(leverage),
            }
        )
