"""CSRF on a GET, for the wallet-link challenge.

Django and DRF check CSRF only on unsafe methods. The challenge is a GET (the contract
says so) but it writes a nonce bound to the session's trader, and the issue asks for it
to be CSRF-protected like the POST that answers it. So for a session-authenticated GET
we run DRF's own check against a view of the request that reports method POST: the
same token (X-CSRFToken header matching the csrftoken cookie) and Origin rules apply.
Token-authenticated clients carry no cookie and need no CSRF token.
"""

from __future__ import annotations

from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request


class _AsUnsafeMethod:
    method = "POST"
    # The middleware already waved the GET through and marked it done.
    csrf_processing_done = False

    def __init__(self, request: Request) -> None:
        self._request = request

    def __getattr__(self, name: str):
        return getattr(self._request, name)


def csrf_check_session_get(request: Request) -> None:
    """Raise PermissionDenied (403 FORBIDDEN) unless a session request carries a valid
    CSRF token."""
    if isinstance(request.successful_authenticator, SessionAuthentication):
        SessionAuthentication().enforce_csrf(_AsUnsafeMethod(request))
