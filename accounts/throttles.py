"""Rate limits on the endpoints that invite abuse: signup, login (the API's /auth/token
and the session login form), the paper faucet and reset, wallet linking, withdrawals
and deposit notices.

Abuse control, not security: they slow down scripted sign-ups, password guessing and
hammering, but a determined attacker spreads over addresses. Passwords, signatures and
balance checks are what protect accounts and funds.

Rates ("N/second|minute|hour|day") come from settings.THROTTLE_RATES at each request, so
deployments set them by environment (THROTTLE_RATE_<SCOPE>) and tests may change them.
Counts live in the default cache: Redis when REDIS_URL is set, so that every web process
shares them. Client addresses come from REMOTE_ADDR unless REST_FRAMEWORK["NUM_PROXIES"]
says how many proxies to trust in X-Forwarded-For.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework.throttling import SimpleRateThrottle


class _Rate(SimpleRateThrottle):
    def get_rate(self) -> str:
        try:
            return settings.THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"no THROTTLE_RATES entry for {self.scope!r}") from None

    def key_for(self, ident: str) -> str:
        return self.cache_format % {"scope": self.scope, "ident": ident}


class _ByAddress(_Rate):
    def get_cache_key(self, request, view) -> str:
        return self.key_for(self.get_ident(request))


class _ByTrader(_Rate):
    def get_cache_key(self, request, view) -> str:
        user = request.user
        if user.is_authenticated:
            # The UUID, not the pk: ids repeat across databases that share one cache.
            return self.key_for(str(user.trader_id))
        return self.key_for(self.get_ident(request))


def _username(request) -> str | None:
    data = getattr(request, "data", None)
    if data is None:  # a plain Django request: the login form
        data = request.POST
    name = data.get("username") if hasattr(data, "get") else None
    return name.strip().lower() if isinstance(name, str) and name.strip() else None


class SignupThrottle(_ByAddress):
    scope = "signup"


class LoginAddressThrottle(_ByAddress):
    scope = "login_ip"


class LoginAccountThrottle(_Rate):
    """Attempts on one username from anywhere: slows password guessing against one
    account (hashed, so the cache key has a fixed length and no odd characters)."""

    scope = "login_account"

    def get_cache_key(self, request, view) -> str | None:
        name = _username(request)
        if name is None:
            return None
        return self.key_for(hashlib.sha256(name.encode()).hexdigest())


class FaucetThrottle(_ByTrader):
    scope = "faucet"


class LinkWalletThrottle(_ByTrader):
    scope = "link_wallet"


class WithdrawThrottle(_ByTrader):
    scope = "withdraw"


class DepositThrottle(_ByTrader):
    scope = "deposit"


LOGIN_THROTTLES = (LoginAddressThrottle, LoginAccountThrottle)
