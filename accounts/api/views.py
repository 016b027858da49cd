"""Identity and account endpoints: signup, token, me, balances, paper faucet, reset and
leaderboard, wallet linking, the vault and API keys. One view per operation; each
validates shape and calls one service or selector."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth import authenticate
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services, throttles
from accounts.api.csrf import csrf_check_session_get
from accounts.models import ApiKeyScope
from accounts.permissions import FULL_ACCESS
from accounts.services import api_keys, paper, vault, wallets
from dexsite import schema as S
from dexsite.api import MONEY_LIMIT, Money, StrictSerializer, int_param, mode_param
from dexsite.errors import ExchangeError
from trading import schema as TS
from trading import selectors as trading_selectors
from trading.idempotency import idempotent
from trading.presenters import ms


class CredentialsSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False)


class SignupApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [throttles.SignupThrottle]

    @extend_schema(
        request=CredentialsSerializer,
        responses=S.responses({201: S.TokenResultSerializer}, 400, 409, 429),
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = CredentialsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_signup(**data.validated_data)
        return Response(
            {"traderId": str(user.trader_id), "token": services.token_for(user)},
            status=status.HTTP_201_CREATED,
        )


class TokenApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    # The same buckets as the session login form: both check a password.
    throttle_classes = list(throttles.LOGIN_THROTTLES)

    @extend_schema(
        request=CredentialsSerializer,
        responses=S.responses({200: S.TokenResultSerializer}, 400, 401, 429),
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = CredentialsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request._request, **data.validated_data)
        if user is None or user.is_system:
            raise ExchangeError(
                "INVALID_CREDENTIALS", "username or password is wrong", status_code=401
            )
        return Response({"traderId": str(user.trader_id), "token": services.token_for(user)})


class MeApi(APIView):
    @extend_schema(responses=S.responses({200: S.MeSerializer}, *S.PRIVATE))
    def get(self, request: Request) -> Response:
        return Response(selectors.trader_summary(trader=request.user))


class BalancesApi(APIView):
    @extend_schema(
        parameters=[S.MODE],
        responses=S.responses({200: TS.BalanceSerializer(many=True)}, 400, *S.PRIVATE),
    )
    def get(self, request: Request) -> Response:
        return Response(
            trading_selectors.balances_list(trader=request.user, mode=mode_param(request))
        )


# -- paper ------------------------------------------------------------------------------


def _no_body(request: Request) -> None:
    """Endpoints without input take an empty body or `{}`; anything else is a mistake."""
    data = request.data
    if isinstance(data, dict) and data:
        field = sorted(data)[0]
        raise ExchangeError("UNKNOWN_FIELD", "unknown field", field=str(field))
    if not isinstance(data, dict):
        raise ExchangeError("BAD_REQUEST", "expected a JSON object or no body")


class PaperFaucetApi(APIView):
    throttle_classes = [throttles.FaucetThrottle]

    def check_throttles(self, request: Request) -> None:
        # Within the cooldown the answer is known and says when to come back: a repeat
        # (a bot retrying, ten calls raced at once) hears FAUCET_COOLDOWN with its
        # retryAfter, never the generic throttle's RATE_LIMITED, and spends none of it.
        wait = selectors.paper_faucet_wait(trader=request.user)
        if wait is not None:
            raise services.faucet_cooldown(wait)
        super().check_throttles(request)

    @extend_schema(
        request=None, responses=S.responses({200: S.FaucetResultSerializer}, *S.PRIVATE, 429)
    )
    def post(self, request: Request) -> Response:
        _no_body(request)
        credited = services.paper_faucet_credit(trader=request.user)
        return Response(
            {"mode": "PAPER", "credited": {a: str(v) for a, v in credited.items()}},
            status=status.HTTP_200_OK,
        )


class PaperResetApi(APIView):
    # One bucket with the faucet: a reset grants fresh paper funds too.
    throttle_classes = [throttles.FaucetThrottle]

    @extend_schema(
        request=None,
        responses=S.responses({200: S.PaperResetResultSerializer}, *S.PRIVATE, 409, 429),
    )
    def post(self, request: Request) -> Response:
        _no_body(request)
        return Response(paper.paper_reset_submit(trader=request.user))


class PaperLeaderboardApi(APIView):
    @extend_schema(
        parameters=S.page_query(200),
        responses=S.responses({200: S.LeaderboardPageSerializer}, 400, *S.PRIVATE),
    )
    def get(self, request: Request) -> Response:
        return Response(
            selectors.paper_leaderboard(
                limit=int_param(request, "limit", 50, 1, 200),
                next_token=request.query_params.get("nextToken") or None,
            )
        )


# -- wallets ----------------------------------------------------------------------------


def _own(request: Request, trader_id) -> None:
    # Another trader's path is as absent as one that never existed.
    if str(trader_id) != str(request.user.trader_id):
        raise Http404


def _site(request: Request) -> wallets.SiteIdentity:
    # The host this request reached, already checked against ALLOWED_HOSTS; a deployment
    # behind a proxy may pin it with WALLET_LINK_DOMAIN / WALLET_LINK_URI.
    return wallets.SiteIdentity(
        domain=settings.WALLET_LINK_DOMAIN or request.get_host(),
        uri=settings.WALLET_LINK_URI or request.build_absolute_uri("/"),
    )


class LinkWalletInputSerializer(StrictSerializer):
    address = serializers.CharField(max_length=64)
    signature = serializers.CharField(max_length=200)
    nonce = serializers.CharField(max_length=64)


class LinkWalletApi(APIView):
    # Linked wallets are where withdrawals may go: managing them is a withdrawal right.
    required_scope = ApiKeyScope.WITHDRAW
    throttle_classes = [throttles.LinkWalletThrottle]

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if request.method == "GET":
            csrf_check_session_get(request)

    @extend_schema(
        parameters=[OpenApiParameter("address", str, description="recommended: the wallet")],
        responses=S.responses({200: S.WalletChallengeSerializer}, 400, *S.PRIVATE, 404, 429),
    )
    def get(self, request: Request, trader_id) -> Response:
        _own(request, trader_id)
        challenge = wallets.wallet_challenge_issue(
            trader=request.user,
            site=_site(request),
            address=request.query_params.get("address") or None,
        )
        return Response(
            {
                "message": challenge.message,
                "nonce": challenge.nonce,
                "expiresAt": ms(challenge.expires_at),
            }
        )

    @extend_schema(
        request=LinkWalletInputSerializer,
        responses=S.responses(
            {201: S.WalletLinkedSerializer, 200: S.WalletLinkedSerializer},
            400,
            *S.PRIVATE,
            404,
            409,
            429,
        ),
    )
    def post(self, request: Request, trader_id) -> Response:
        _own(request, trader_id)
        data = LinkWalletInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        wallet, created = wallets.wallet_link(trader=request.user, **data.validated_data)
        return Response(
            {"address": wallet.address, "linkedAt": ms(wallet.linked_at)},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class UnlinkWalletApi(APIView):
    required_scope = ApiKeyScope.WITHDRAW

    @extend_schema(
        responses=S.responses({200: S.WalletUnlinkedSerializer}, 400, *S.PRIVATE, 404, 409)
    )
    def delete(self, request: Request, trader_id, address: str) -> Response:
        _own(request, trader_id)
        wallet = wallets.wallet_unlink(trader=request.user, address=address)
        return Response({"address": wallet.address, "unlinkedAt": ms(wallet.unlinked_at)})


# -- vault ------------------------------------------------------------------------------


def _amount_in_range(value: Decimal) -> Decimal:
    if value > MONEY_LIMIT:
        raise serializers.ValidationError("amount must be at most 1E+15")
    return value


class VaultApi(APIView):
    @extend_schema(responses=S.responses({200: S.VaultSerializer}, *S.PRIVATE))
    def get(self, request: Request) -> Response:
        return Response(selectors.vault_info())


class DepositInputSerializer(StrictSerializer):
    asset = serializers.CharField(max_length=16)
    amount = Money()
    txHash = serializers.CharField(max_length=80)

    def validate_amount(self, value: Decimal) -> Decimal:
        return _amount_in_range(value)


class DepositApi(APIView):
    # Each new notice waits in the staff queue (and the service caps how many may).
    throttle_classes = [throttles.DepositThrottle]

    @extend_schema(
        request=DepositInputSerializer,
        responses=S.responses(
            {201: S.TransferSerializer, 200: S.TransferSerializer},
            400,
            *S.PRIVATE,
            409,
            422,
            429,
        ),
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = DepositInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        deposit, created = vault.deposit_record(
            trader=request.user, asset=d["asset"], amount=d["amount"], tx_hash=d["txHash"]
        )
        return Response(
            selectors.transfer_dict(deposit),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class WithdrawInputSerializer(StrictSerializer):
    asset = serializers.CharField(max_length=16)
    amount = Money()
    address = serializers.CharField(max_length=64)

    def validate_amount(self, value: Decimal) -> Decimal:
        return _amount_in_range(value)


class WithdrawApi(APIView):
    required_scope = ApiKeyScope.WITHDRAW
    throttle_classes = [throttles.WithdrawThrottle]

    @extend_schema(
        request=WithdrawInputSerializer,
        responses=S.responses({201: S.TransferSerializer}, 400, *S.PRIVATE, 409, 422, 429),
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = WithdrawInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        withdrawal = vault.withdrawal_request(trader=request.user, **data.validated_data)
        return Response(selectors.transfer_dict(withdrawal), status=status.HTTP_201_CREATED)


class TransfersApi(APIView):
    @extend_schema(
        parameters=S.page_query(500),
        responses=S.responses({200: S.TransfersPageSerializer}, 400, *S.PRIVATE),
    )
    def get(self, request: Request) -> Response:
        return Response(
            selectors.transfers_page(
                trader=request.user,
                limit=int_param(request, "limit", 50, 1, 500),
                next_token=request.query_params.get("nextToken") or None,
            )
        )


# -- API keys ---------------------------------------------------------------------------


class ApiKeyInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
    # Checked by the service: a bad scope is INVALID_SCOPES, whichever item it is.
    scopes = serializers.ListField(child=serializers.CharField(max_length=16), max_length=3)


class ApiKeysApi(APIView):
    # A narrow key must not mint a wider one, nor list or revoke its siblings.
    required_scope = FULL_ACCESS

    @extend_schema(
        operation_id="api_keys_list",
        responses=S.responses({200: S.ApiKeySerializer(many=True)}, *S.PRIVATE),
    )
    def get(self, request: Request) -> Response:
        return Response(selectors.api_keys_list(trader=request.user))

    @extend_schema(
        operation_id="api_keys_create",
        request=ApiKeyInputSerializer,
        responses=S.responses({201: S.ApiKeyCreatedSerializer}, 400, *S.PRIVATE, 409),
    )
    def post(self, request: Request) -> Response:
        data = ApiKeyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, secret = api_keys.api_key_create(trader=request.user, **data.validated_data)
        # The only time the key is shown: only its hash is kept.
        return Response(
            {**selectors.api_key_dict(key), "key": secret}, status=status.HTTP_201_CREATED
        )


class ApiKeyApi(APIView):
    required_scope = FULL_ACCESS

    @extend_schema(responses=S.responses({200: S.ApiKeySerializer}, *S.PRIVATE, 404))
    def delete(self, request: Request, key_id: int) -> Response:
        key = api_keys.api_key_revoke(trader=request.user, key_id=key_id)
        return Response(selectors.api_key_dict(key))
