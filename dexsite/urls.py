from django.contrib import admin
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import include, path, re_path, reverse
from django.utils.http import urlencode
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import pages as account_pages
from accounts.selectors import linked_wallets
from realtime.api import WsTicketApi
from realtime.metrics import metrics_view
from trading import pages as trading_pages


@csrf_exempt  # it changes nothing: an unsafe method gets the same JSON 404
def api_not_found(request, *args, **kwargs):
    return JsonResponse({"error": {"code": "NOT_FOUND", "message": "no such endpoint"}}, status=404)


def admin_login(request):
    """The admin's login: the site's login page, then back to where the admin sent."""
    target = request.GET.get("next") or "/admin/"
    return redirect(f"{reverse('login')}?{urlencode({'next': target})}")


urlpatterns = [
    # The trading API first: a request's path is matched against the patterns in order,
    # and its order endpoints take most requests. (No two of these patterns match one
    # path, so their order changes nothing else.)
    path("api/v1/", include("trading.api.urls")),
    path("api/v1/", include("accounts.api.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/ws-ticket", WsTicketApi.as_view(), name="api-ws-ticket"),
    # Staff sign in where everyone does: the site's login page, throttled per address
    # and per account (the admin's own login page is not).
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    # Any other path under api/, control characters included: the API's JSON 404.
    re_path(r"^api/", api_not_found),
    path("metrics", metrics_view, name="metrics"),
    path("account/", account_pages.account_page, name="account"),
    path(
        "trade/<str:symbol>/",
        trading_pages.trade_page,
        {"wallets_of": linked_wallets},
        name="trade",
    ),
    path("", trading_pages.markets_page, name="home"),
]
# /static/ never reaches the URLconf: WhiteNoise, a middleware, serves it with DEBUG on
# or off (dexsite/staticfiles.py).
