from django.urls import path

from trading.api import views

urlpatterns = [
    # The order endpoints first: bots call them most, and a path is matched against the
    # patterns in order.
    path("trade", views.TradeApi.as_view(), name="api-trade"),
    path("trade/batch", views.TradeBatchApi.as_view(), name="api-trade-batch"),
    path("orders", views.OrdersApi.as_view(), name="api-orders"),
    path("orders/<int:order_id>", views.OrderApi.as_view(), name="api-order"),
    path("markets", views.MarketsApi.as_view(), name="api-markets"),
    path("markets/<str:symbol>", views.MarketApi.as_view(), name="api-market"),
    path("markets/<str:symbol>/depth", views.DepthApi.as_view(), name="api-depth"),
    path("markets/<str:symbol>/trades", views.TradesApi.as_view(), name="api-trades"),
    path("markets/<str:symbol>/leverage", views.LeverageApi.as_view(), name="api-leverage"),
    path("metrics", views.MetricsApi.as_view(), name="api-metrics"),
    path("fills", views.FillsApi.as_view(), name="api-fills"),
    path("account", views.AccountApi.as_view(), name="api-account"),
    path("positions", views.PositionsApi.as_view(), name="api-positions"),
    path(
        "positions/<str:symbol>/close",
        views.PositionCloseApi.as_view(),
        name="api-position-close",
    ),
    path("positions/<str:symbol>/tpsl", views.PositionTpslApi.as_view(), name="api-position-tpsl"),
]
