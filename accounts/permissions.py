"""What an API key may do: its scopes.

A view names the scope it needs in `required_scope` (one for all methods, or a dict by
method); otherwise reads (GET, HEAD, OPTIONS) need `read` and every other method needs
`trade`. `FULL_ACCESS` asks for a key holding every scope: managing API keys is one, so
that a narrow key can never mint a wider one. A browser session (request.auth is None)
is the trader themselves and holds every scope.
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import ALL_SCOPES, ApiKey, ApiKeyScope
from dexsite.errors import ExchangeError

FULL_ACCESS = "full"


def required_scope(request, view) -> str:
    declared = getattr(view, "required_scope", None)
    if isinstance(declared, dict):
        declared = declared.get(request.method)
    if declared:
        return declared
    return ApiKeyScope.READ if request.method in SAFE_METHODS else ApiKeyScope.TRADE


class ApiKeyScopes(BasePermission):
    def has_permission(self, request, view) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            return True
        needed = required_scope(request, view)
        if needed == FULL_ACCESS:
            if key.scope_set >= ALL_SCOPES:
                return True
            raise ExchangeError(
                "INSUFFICIENT_SCOPE",
                "this needs a key with every scope (or a browser session)",
                status_code=403,
            )
        if needed in key.scope_set:
            return True
        raise ExchangeError(
            "INSUFFICIENT_SCOPE", f"this API key lacks the {needed} scope", status_code=403
        )
