"""Identity and account endpoints: signup, token, me, balances, paper faucet."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from dexsite.api import StrictSerializer, mode_param
from dexsite.errors import ExchangeError
from trading import selectors


class CredentialsSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False)


class SignupApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(request=CredentialsSerializer, responses={201: dict}, auth=[])
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

    @extend_schema(request=CredentialsSerializer, responses={200: dict}, auth=[])
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
    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response(selectors.trader_summary(trader=request.user))


class BalancesApi(APIView):
    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response(selectors.balances_list(trader=request.user, mode=mode_param(request)))


class PaperFaucetApi(APIView):
    @extend_schema(request=None, responses={200: dict})
    def post(self, request: Request) -> Response:
        credited = services.paper_faucet_credit(trader=request.user)
        return Response(
            {"mode": "PAPER", "credited": {a: str(v) for a, v in credited.items()}},
            status=status.HTTP_200_OK,
        )
