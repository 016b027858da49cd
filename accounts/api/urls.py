from django.urls import path

from accounts.api import views

urlpatterns = [
    path("auth/signup", views.SignupApi.as_view(), name="api-signup"),
    path("auth/token", views.TokenApi.as_view(), name="api-token"),
    path("me", views.MeApi.as_view(), name="api-me"),
    path("balances", views.BalancesApi.as_view(), name="api-balances"),
    path("paper/faucet", views.PaperFaucetApi.as_view(), name="api-paper-faucet"),
    path("paper/reset", views.PaperResetApi.as_view(), name="api-paper-reset"),
    path("paper/leaderboard", views.PaperLeaderboardApi.as_view(), name="api-paper-leaderboard"),
    path(
        "user/<uuid:trader_id>/link-wallet", views.LinkWalletApi.as_view(), name="api-link-wallet"
    ),
    path(
        "user/<uuid:trader_id>/link-wallet/<str:address>",
        views.UnlinkWalletApi.as_view(),
        name="api-unlink-wallet",
    ),
    path("vault", views.VaultApi.as_view(), name="api-vault"),
    path("vault/deposit", views.DepositApi.as_view(), name="api-vault-deposit"),
    path("vault/withdraw", views.WithdrawApi.as_view(), name="api-vault-withdraw"),
    path("vault/transfers", views.TransfersApi.as_view(), name="api-vault-transfers"),
    path("api-keys", views.ApiKeysApi.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>", views.ApiKeyApi.as_view(), name="api-key"),
]
