"""The account page: API keys, linked wallets and vault transfers. The page is a
shell; its module reads and changes them through the public API."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.csrf import ensure_csrf_cookie

from accounts import selectors


@login_required
@ensure_csrf_cookie
def account_page(request: HttpRequest) -> HttpResponse:
    user = request.user
    return render(
        request,
        "accounts/account.html",
        {
            "vault_assets": settings.VAULT_ASSETS,
            "config": {
                "user": {"traderId": str(user.trader_id), "username": user.username},
                "linkedWallets": selectors.linked_wallets(trader=user),
                "vaultAssets": list(settings.VAULT_ASSETS),
                "ethersUrl": static("vendor/ethers/ethers.min.js"),
            },
        },
    )
