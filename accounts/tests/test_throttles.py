"""Throttles: abuse control on signup, login, faucet, wallet linking and withdrawals."""

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tests.conftest import PASSWORD, challenge, link_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(settings):
    def set_rate(**scopes: str) -> None:
        settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, **scopes}

    return set_rate


def assert_limited(r) -> None:
    assert r.status_code == 429
    error = r.json()["error"]
    assert error["code"] == "RATE_LIMITED" and 0 < error["retryAfter"] <= 60
    assert r["Retry-After"] == str(error["retryAfter"])


def signup(client, name, **extra):
    return client.post(
        "/api/v1/auth/signup", {"username": name, "password": PASSWORD}, format="json", **extra
    )


def token(client, name, password=PASSWORD, **extra):
    return client.post(
        "/api/v1/auth/token", {"username": name, "password": password}, format="json", **extra
    )


def test_the_cache_is_redis_when_redis_url_is_set():
    backend = django_settings.CACHES["default"]["BACKEND"]
    if django_settings.REDIS_URL:
        assert backend == "django.core.cache.backends.redis.RedisCache"
    else:
        assert backend == "django.core.cache.backends.locmem.LocMemCache"


def test_signup_is_throttled_per_address(rates):
    rates(signup="2/min")
    c = APIClient()
    assert signup(c, "a1").status_code == 201
    assert signup(c, "a2").status_code == 201
    assert_limited(signup(c, "a3"))
    assert not User.objects.filter(username="a3").exists()
    assert signup(c, "a4", REMOTE_ADDR="10.0.0.9").status_code == 201


def test_forwarded_for_is_not_trusted_without_proxies(rates):
    rates(signup="1/min")
    c = APIClient()
    assert signup(c, "b1", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 201
    assert_limited(signup(c, "b2", HTTP_X_FORWARDED_FOR="2.2.2.2"))


def test_token_is_throttled_per_account_from_any_address(rates, alice, bob):
    rates(login_account="2/min")
    c = APIClient()
    assert token(c, "alice", "wrong-password-1", REMOTE_ADDR="10.0.0.1").status_code == 401
    assert token(c, "ALICE", "wrong-password-2", REMOTE_ADDR="10.0.0.2").status_code == 401
    # Even the right password waits: the budget is spent.
    assert_limited(token(c, "alice", REMOTE_ADDR="10.0.0.3"))
    assert token(c, "bob", REMOTE_ADDR="10.0.0.3").status_code == 200


def test_token_is_throttled_per_address(rates, alice, bob):
    rates(login_ip="2/min")
    c = APIClient()
    assert token(c, "alice").status_code == 200
    assert token(c, "bob").status_code == 200
    assert_limited(token(c, "nobody"))


def test_session_login_form_shares_the_login_budget(rates, alice):
    rates(login_account="2/min")
    c = APIClient()
    assert token(c, "alice", "wrong-password-1").status_code == 401
    assert c.post("/accounts/login/", {"username": "alice", "password": "nope"}).status_code == 200
    r = c.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    assert b"Too many sign-in attempts" in r.content
    assert c.get("/api/v1/me").status_code == 401  # the right password did not log in


def test_session_login_form_per_address(rates, alice):
    rates(login_ip="1/min")
    c = APIClient()
    r = c.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert r.status_code == 302
    r = c.post("/accounts/login/", {"username": "someone", "password": PASSWORD})
    assert r.status_code == 429


def test_session_signup_form_is_throttled(rates):
    rates(signup="1/min")
    c = APIClient()
    form = {"password1": PASSWORD, "password2": PASSWORD}
    assert c.post("/accounts/signup/", {"username": "s1", **form}).status_code == 302
    r = APIClient().post("/accounts/signup/", {"username": "s2", **form})
    assert r.status_code == 429 and not User.objects.filter(username="s2").exists()


def test_faucet_is_throttled_per_trader(rates, settings, api_alice, api_bob):
    rates(faucet="1/min")
    assert api_alice.post("/api/v1/paper/faucet").status_code == 200
    assert_limited(api_alice.post("/api/v1/paper/reset"))  # one budget with the faucet
    assert api_bob.post("/api/v1/paper/faucet").status_code == 200
    settings.PAPER_FAUCET_COOLDOWN = 0  # no cooldown to tell: the throttle answers
    assert_limited(api_bob.post("/api/v1/paper/faucet"))


def test_a_faucet_call_in_its_cooldown_hears_the_cooldown_not_the_throttle(
    rates, settings, alice, api_alice
):
    rates(faucet="10/hour")
    # Ten calls that each found the faucet free (as ten raced at once do) spend the
    # hour's budget.
    for _ in range(10):
        User.objects.filter(pk=alice.pk).update(last_faucet_at=None)
        assert api_alice.post("/api/v1/paper/faucet").status_code == 200
    for _ in range(3):
        r = api_alice.post("/api/v1/paper/faucet")
        assert r.status_code == 429
        error = r.json()["error"]
        assert error["code"] == "FAUCET_COOLDOWN"
        cooldown = settings.PAPER_FAUCET_COOLDOWN
        assert cooldown - 60 < error["retryAfter"] <= cooldown + 1
        assert r["Retry-After"] == str(error["retryAfter"])
    # Out of its cooldown, the spent budget still holds.
    User.objects.filter(pk=alice.pk).update(last_faucet_at=None)
    r = api_alice.post("/api/v1/paper/faucet")
    assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"


def test_link_wallet_is_throttled(rates, api_alice, alice):
    rates(link_wallet="2/min")
    challenge(api_alice, alice)
    challenge(api_alice, alice)
    assert_limited(api_alice.get(link_path(alice)))


def test_withdraw_is_throttled(rates, api_alice):
    rates(withdraw="1/min")
    body = {"asset": "USDC", "amount": "1", "address": "0x" + "ab" * 20}
    assert api_alice.post("/api/v1/vault/withdraw", body, format="json").status_code == 400
    assert_limited(api_alice.post("/api/v1/vault/withdraw", body, format="json"))


def test_deposit_notices_are_throttled_per_trader(rates, api_alice, api_bob):
    rates(deposit="2/min")

    def notice(client, n: int):
        body = {"asset": "USDC", "amount": "1", "txHash": "0x" + f"{n:064x}"}
        return client.post("/api/v1/vault/deposit", body, format="json")

    assert notice(api_alice, 1).status_code == 201
    assert notice(api_alice, 2).status_code == 201
    assert_limited(notice(api_alice, 3))
    assert notice(api_bob, 4).status_code == 201


def test_rates_come_from_the_environment(monkeypatch):
    import importlib

    from dexsite import settings as module

    monkeypatch.setenv("THROTTLE_RATE_WITHDRAW", "7/day")
    try:
        assert importlib.reload(module).THROTTLE_RATES["withdraw"] == "7/day"
    finally:
        monkeypatch.delenv("THROTTLE_RATE_WITHDRAW")
        importlib.reload(module)


def test_staff_sign_in_through_the_throttled_login_page(rates, alice):
    """The admin's login sends to the site's login page, whose budget it shares: wrong
    passwords for a staff account run out like any other's."""
    User.objects.filter(pk=alice.pk).update(is_staff=True, is_superuser=True)
    rates(login_account="2/min")
    c = APIClient()
    r = c.get("/admin/")
    assert r.status_code == 302 and r["Location"].startswith("/admin/login/")
    r = c.get(r["Location"])
    assert r.status_code == 302 and r["Location"] == "/accounts/login/?next=%2Fadmin%2F"
    assert (
        c.post("/accounts/login/?next=/admin/", {"username": "alice", "password": "x"}).status_code
        == 200
    )
    r = c.post("/accounts/login/?next=/admin/", {"username": "alice", "password": PASSWORD})
    assert r.status_code == 302 and r["Location"] == "/admin/"
    assert c.get("/admin/").status_code == 200
    c.logout()
    assert c.post("/accounts/login/", {"username": "alice", "password": "y"}).status_code == 429
