from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from dexsite.admin import ReadOnly
from dexsite.errors import ExchangeError
from trading.models import Book, Fill, IndexPrice, Market, Order, Position, Trade
from trading.services import markets as market_services


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    list_display = (
        "symbol",
        "kind",
        "status",
        "tick_size",
        "lot_size",
        "max_leverage",
        "price_band",
        "market_slippage",
        "expiry_at",
    )
    list_filter = ("kind", "status")
    search_fields = ("symbol",)
    actions = ("pause", "resume", "delist")

    def get_readonly_fields(self, request, obj=None):
        # Resting orders are integer multiples of these: changing them would reprice
        # the book, so they are fixed once the market exists.
        if obj is not None:
            return ("symbol", "kind", "base", "quote", "tick_size", "lot_size", "status")
        return ("status",)

    @admin.action(description="Pause: refuse new orders, allow cancels", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        moved = sum(market_services.market_pause(market=m) for m in queryset)
        self.message_user(
            request, f"Paused {moved} market(s); {queryset.count() - moved} not active."
        )

    @admin.action(description="Resume trading", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        moved = sum(market_services.market_resume(market=m) for m in queryset)
        self.message_user(
            request, f"Resumed {moved} market(s); {queryset.count() - moved} not paused."
        )

    @admin.action(
        description="Delist: cancel every resting order and refuse new ones", permissions=["change"]
    )
    def delist(self, request: HttpRequest, queryset: QuerySet) -> None:
        total = 0
        for market in queryset:
            try:
                total += len(market_services.market_delist(market=market))
            except ExchangeError as e:
                # Delisted (new orders refused), its resting orders not yet cancelled:
                # delisting it again finishes it.
                self.message_user(
                    request,
                    f"{market.symbol} is delisted, but its open orders were not all "
                    f"cancelled ({e.code}: {e.message}). Delist it again to finish.",
                    messages.ERROR,
                )
        self.message_user(
            request,
            f"Delisted {queryset.count()} market(s), cancelled {total} order(s).",
            messages.WARNING,
        )


class ReadOnlyAdmin(ReadOnly, admin.ModelAdmin):
    pass


@admin.register(Book)
class BookAdmin(ReadOnlyAdmin):
    list_display = ("market", "mode", "seq", "last_price")
    list_filter = ("mode",)


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "trader",
        "market",
        "mode",
        "side",
        "type",
        "price",
        "qty",
        "filled_qty",
        "status",
    )
    list_filter = ("mode", "status", "market")
    search_fields = ("trader__username", "client_order_id")
    list_select_related = ("trader", "market")


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "market",
        "mode",
        "price",
        "qty",
        "taker_side",
        "liquidation",
        "created_at",
    )
    list_filter = ("mode", "market")
    list_select_related = ("market",)


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = ("id", "trader", "market", "mode", "side", "price", "qty", "fee", "liquidity")
    list_filter = ("mode", "liquidity", "market")
    list_select_related = ("trader", "market")


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = ("trader", "market", "mode", "size", "open_notional", "realized_pnl", "leverage")
    list_filter = ("mode", "market")
    list_select_related = ("trader", "market")


@admin.register(IndexPrice)
class IndexPriceAdmin(ReadOnlyAdmin):
    list_display = ("underlying", "price", "source", "updated_at", "age", "fresh")

    @admin.display(description="age (s)")
    def age(self, obj: IndexPrice) -> int:
        return int((timezone.now() - obj.updated_at).total_seconds())

    @admin.display(boolean=True, description="fresh")
    def fresh(self, obj: IndexPrice) -> bool:
        # Past INDEX_STALE_SECONDS funding and liquidations of its markets pause.
        return self.age(obj) <= settings.INDEX_STALE_SECONDS
