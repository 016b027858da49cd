import threading
from decimal import Decimal

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import paper_faucet_credit, token_for
from ledger.models import Balance, LedgerEntry

pytestmark = pytest.mark.django_db


def test_signup_token_and_me():
    c = APIClient()
    r = c.post(
        "/api/v1/auth/signup", {"username": "neo", "password": "a-long-password-1"}, format="json"
    )
    assert r.status_code == 201
    trader_id, token = r.json()["traderId"], r.json()["token"]
    r = c.post(
        "/api/v1/auth/token", {"username": "neo", "password": "a-long-password-1"}, format="json"
    )
    # Keys are stored hashed, so /auth/token makes a new full-scope key: both work.
    assert set(r.json()) == {"traderId", "token"} and r.json()["traderId"] == trader_id
    for key in (token, r.json()["token"]):
        c.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        me = c.get("/api/v1/me").json()
        assert me["traderId"] == trader_id and me["username"] == "neo"
        assert me["linkedWallets"] == [] and me["paperPoints"] == "0"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"username": "neo"}, "MISSING_FIELD"),
        ({"username": "neo", "password": "short"}, "INVALID_PASSWORD"),
        ({"username": "__fees__", "password": "a-long-password-1"}, "INVALID_USERNAME"),
        ({"username": "neo", "password": "a-long-password-1", "admin": True}, "UNKNOWN_FIELD"),
    ],
)
def test_signup_refusals(body, code):
    r = APIClient().post("/api/v1/auth/signup", body, format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == code
    assert not User.objects.filter(username="neo").exists()


def test_duplicate_username_and_wrong_password():
    c = APIClient()
    c.post(
        "/api/v1/auth/signup", {"username": "neo", "password": "a-long-password-1"}, format="json"
    )
    r = c.post(
        "/api/v1/auth/signup", {"username": "neo", "password": "a-long-password-2"}, format="json"
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "USERNAME_TAKEN"
    # Names that differ only in case are one name.
    r = c.post(
        "/api/v1/auth/signup", {"username": "NEO", "password": "a-long-password-2"}, format="json"
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "USERNAME_TAKEN"
    assert User.objects.filter(username__iexact="neo").count() == 1
    r = c.post(
        "/api/v1/auth/token", {"username": "neo", "password": "nope-nope-nope"}, format="json"
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_CREDENTIALS"


def test_faucet_credits_once_per_cooldown():
    user = User.objects.create_user("neo", password="a-long-password-1")
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    assert c.post("/api/v1/paper/faucet").status_code == 200
    r = c.post("/api/v1/paper/faucet")
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["code"] == "FAUCET_COOLDOWN" and 0 < err["retryAfter"] <= 24 * 3600
    assert Balance.objects.get(trader=user, asset="USDC", mode="PAPER").total == Decimal("100000")
    assert not Balance.objects.filter(trader=user, mode="REAL").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL row locks")
def test_twenty_concurrent_faucet_calls_credit_once():
    from dexsite.errors import ExchangeError

    user = User.objects.create_user("neo", password="a-long-password-1")
    results = []
    barrier = threading.Barrier(20)

    def work():
        try:
            barrier.wait()
            paper_faucet_credit(trader=user)
            results.append("ok")
        except ExchangeError as e:
            results.append(e.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["FAUCET_COOLDOWN"] * 19 + ["ok"]
    assert LedgerEntry.objects.filter(trader=user, asset="USDC").count() == 1


def test_session_login_and_signup_pages():
    c = APIClient()
    assert c.get("/accounts/login/").status_code == 200
    r = c.post(
        "/accounts/signup/",
        {"username": "trin", "password1": "a-long-password-1", "password2": "a-long-password-1"},
    )
    assert r.status_code == 302
    assert c.get("/api/v1/me").json()["username"] == "trin"
    # A taken name, in any case, shows the form again with the reason.
    for taken in ("trin", "TRIN"):
        r = APIClient().post(
            "/accounts/signup/",
            {"username": taken, "password1": "a-long-password-1", "password2": "a-long-password-1"},
        )
        assert r.status_code == 200 and b"already exists" in r.content, r.content[:300]
    assert User.objects.filter(username__iexact="trin").count() == 1
    # Session-authenticated unsafe requests need CSRF.
    csrf_client = APIClient(enforce_csrf_checks=True)
    csrf_client.force_login(User.objects.get(username="trin"))
    r = csrf_client.post("/api/v1/paper/faucet")
    assert r.status_code == 403


def test_schema_lists_the_account_endpoints():
    paths = APIClient().get("/api/v1/schema/?format=json").json()["paths"]
    for p in [
        "/api/v1/me",
        "/api/v1/paper/reset",
        "/api/v1/paper/leaderboard",
        "/api/v1/user/{trader_id}/link-wallet",
        "/api/v1/user/{trader_id}/link-wallet/{address}",
        "/api/v1/vault/deposit",
        "/api/v1/vault/withdraw",
        "/api/v1/vault/transfers",
        "/api/v1/api-keys",
        "/api/v1/api-keys/{key_id}",
    ]:
        assert p in paths, p
