"""`Authorization: Token <key>` against the hashed API keys of accounts.models.ApiKey.

A subclass of DRF's TokenAuthentication for its header parsing, its 401 challenge and
the OpenAPI security scheme drf-spectacular derives from it; only the lookup differs.
`request.auth` is the ApiKey, whose scopes accounts.permissions checks.
"""

from __future__ import annotations

from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from accounts.services.api_keys import api_key_authenticate


class ApiKeyAuthentication(TokenAuthentication):
    keyword = "Token"

    def authenticate_credentials(self, key: str):
        api_key = api_key_authenticate(key)
        if api_key is None:
            raise AuthenticationFailed("invalid or revoked API key")
        return api_key.trader, api_key
