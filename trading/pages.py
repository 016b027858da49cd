"""Server-rendered pages of the dashboard: the market list and the trade page. They
render the first screen from the same selectors the API uses, then the page's ES
modules keep it live over /ws/.

The trade page also shows the trader's linked wallets, which are accounts', the layer
above: the URLconf hands the page the function that reads them (`wallets_of`)."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.csrf import ensure_csrf_cookie

from trading import selectors

MODES = ("PAPER", "REAL")


def _mode(request: HttpRequest) -> str:
    mode = request.GET.get("mode", "PAPER").upper()
    return mode if mode in MODES else "PAPER"


def _user(request: HttpRequest) -> dict | None:
    if not request.user.is_authenticated:
        return None
    return {"traderId": str(request.user.trader_id), "username": request.user.username}


@ensure_csrf_cookie
def markets_page(request: HttpRequest) -> HttpResponse:
    mode = _mode(request)
    markets = selectors.markets_list(mode=mode)
    return render(
        request,
        "trading/markets.html",
        {
            "markets": markets,
            "mode": mode,
            "config": {"mode": mode, "markets": markets, "user": _user(request)},
        },
    )


@ensure_csrf_cookie
def trade_page(
    request: HttpRequest,
    symbol: str,
    *,
    wallets_of: Callable[..., list[str]] = lambda *, trader: [],
) -> HttpResponse:
    """`wallets_of(trader=user)`: the addresses `user` has linked."""
    mode = _mode(request)
    markets = selectors.markets_list(mode=mode)
    market = next((m for m in markets if m["symbol"] == symbol), None)
    if market is None:
        raise Http404(f"no market {symbol}")
    user = _user(request)
    return render(
        request,
        "trading/trade.html",
        {
            "market": market,
            "mode": mode,
            "intervals": list(selectors.INTERVALS),
            "vault_assets": settings.VAULT_ASSETS,
            "config": {
                "market": symbol,
                "mode": mode,
                # The book as it is now, so the first paint shows it; the socket's own
                # snapshot replaces it a moment later and the deltas follow on that.
                "depth": selectors.depth_get(symbol=symbol, mode=mode, levels=50),
                "markets": markets,
                "user": user,
                "linkedWallets": (wallets_of(trader=request.user) if user else []),
                "faucetCooldown": settings.PAPER_FAUCET_COOLDOWN,
                "ethersUrl": static("vendor/ethers/ethers.min.js"),
            },
        },
    )
