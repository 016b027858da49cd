"""API keys: made, shown once, stored hashed, scoped, revoked; and the WebSocket's use."""

import hashlib

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import token_for
from accounts.services.api_keys import api_key_create
from accounts.tests.conftest import PASSWORD, client_for
from realtime.auth import api_key_for_token
from trading.tests.factories import MarketFactory, fund

pytestmark = pytest.mark.django_db
ORDER = {"market": "BTC-PERP", "mode": "PAPER", "side": "BUY", "type": "LIMIT"}


def err(r) -> str:
    return r.json()["error"]["code"]


def test_create_list_revoke(api_alice, alice):
    r = api_alice.post("/api/v1/api-keys", {"name": "bot", "scopes": ["read"]}, format="json")
    assert r.status_code == 201
    made = r.json()
    assert made["scopes"] == ["read"] and made["key"].startswith(made["prefix"])
    row = ApiKey.objects.get(pk=made["id"])
    assert row.key_hash == hashlib.sha256(made["key"].encode()).hexdigest()
    assert made["key"] not in str(ApiKey.objects.values_list())  # only the hash is kept
    listed = api_alice.get("/api/v1/api-keys").json()
    mine = next(k for k in listed if k["id"] == made["id"])
    assert "key" not in mine and mine["name"] == "bot"

    bot = client_for(alice, made["key"])
    assert bot.get("/api/v1/balances").status_code == 200
    assert api_alice.delete(f"/api/v1/api-keys/{made['id']}").status_code == 200
    r = bot.get("/api/v1/balances")
    assert r.status_code == 401 and err(r) == "UNAUTHENTICATED"
    assert api_alice.delete(f"/api/v1/api-keys/{made['id']}").status_code == 404
    assert made["id"] not in [k["id"] for k in api_alice.get("/api/v1/api-keys").json()]


def test_another_traders_key_cannot_be_revoked(api_alice, bob):
    key, _ = api_key_create(trader=bob, name="x", scopes=["read"])
    assert api_alice.delete(f"/api/v1/api-keys/{key.pk}").status_code == 404
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


@pytest.mark.parametrize("scopes", [[], ["admin"], ["read", "root"]])
def test_invalid_scopes(api_alice, scopes):
    r = api_alice.post("/api/v1/api-keys", {"scopes": scopes}, format="json")
    assert r.status_code == 400 and err(r) == "INVALID_SCOPES"


def test_scopes_gate_the_endpoints(alice):
    MarketFactory()
    fund(alice, "100000")
    keys = {
        name: client_for(alice, api_key_create(trader=alice, name=name, scopes=scopes)[1])
        for name, scopes in {
            "read": ["read"],
            "trade": ["trade"],
            "withdraw": ["withdraw"],
        }.items()
    }
    order = {**ORDER, "price": "60000", "qty": "0.01"}

    assert keys["read"].get("/api/v1/positions").status_code == 200
    for name in ("trade", "withdraw"):
        r = keys[name].get("/api/v1/positions")
        assert r.status_code == 403 and err(r) == "INSUFFICIENT_SCOPE"

    for name in ("read", "withdraw"):
        r = keys[name].post("/api/v1/trade", order, format="json")
        assert r.status_code == 403 and err(r) == "INSUFFICIENT_SCOPE"
        assert keys[name].delete("/api/v1/orders").status_code == 403
    placed = keys["trade"].post("/api/v1/trade", order, format="json")
    assert placed.status_code == 201
    assert keys["trade"].delete(f"/api/v1/orders/{placed.json()['id']}").status_code == 200

    withdrawal = {"asset": "USDC", "amount": "1", "address": "0x" + "ab" * 20}
    for name in ("read", "trade"):
        r = keys[name].post("/api/v1/vault/withdraw", withdrawal, format="json")
        assert r.status_code == 403 and err(r) == "INSUFFICIENT_SCOPE"
    r = keys["withdraw"].post("/api/v1/vault/withdraw", withdrawal, format="json")
    assert r.status_code == 400 and err(r) == "WALLET_NOT_LINKED"  # past the scope check

    # Public market data needs no scope at all.
    assert keys["withdraw"].get("/api/v1/markets").status_code == 200


def test_a_narrow_key_cannot_manage_keys(alice):
    narrow = client_for(alice, api_key_create(trader=alice, name="n", scopes=["read", "trade"])[1])
    r = narrow.post("/api/v1/api-keys", {"scopes": ["withdraw"]}, format="json")
    assert r.status_code == 403 and err(r) == "INSUFFICIENT_SCOPE"
    assert narrow.get("/api/v1/api-keys").status_code == 403
    session = APIClient()
    assert session.login(username="alice", password=PASSWORD)
    assert session.post("/api/v1/api-keys", {"scopes": ["read"]}, format="json").status_code == 201


@override_settings(API_KEYS_MAX=2)
def test_key_count_is_limited(api_alice):
    for _ in range(2):
        assert (
            api_alice.post("/api/v1/api-keys", {"scopes": ["read"]}, format="json").status_code
            == 201
        )
    r = api_alice.post("/api/v1/api-keys", {"scopes": ["read"]}, format="json")
    assert r.status_code == 409 and err(r) == "TOO_MANY_API_KEYS"


@override_settings(API_LOGIN_KEYS_KEPT=2)
def test_only_the_newest_login_keys_stay_valid(alice):
    first, second, third = (token_for(alice) for _ in range(3))
    assert client_for(alice, first).get("/api/v1/me").status_code == 401
    for key in (second, third):
        assert client_for(alice, key).get("/api/v1/me").status_code == 200


def test_token_endpoint_returns_a_working_full_scope_key(alice):
    r = APIClient().post(
        "/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json"
    )
    key = ApiKey.objects.get(prefix=r.json()["token"][:10])
    assert key.scope_set == {"read", "trade", "withdraw"} and key.source == "LOGIN"


def test_inactive_traders_keys_stop_working(alice):
    c = client_for(alice)
    alice.is_active = False
    alice.save()
    assert c.get("/api/v1/me").status_code == 401


def test_last_used_is_recorded(alice):
    made, secret = api_key_create(trader=alice, name="b", scopes=["read"])
    assert made.last_used_at is None
    client_for(alice, secret).get("/api/v1/me")
    made.refresh_from_db()
    assert made.last_used_at is not None


@pytest.mark.django_db(transaction=True)
def test_websocket_token_lookup_uses_the_keys(alice):
    full = token_for(alice)
    _, read_only = api_key_create(trader=alice, name="r", scopes=["read"])
    _, trade_only = api_key_create(trader=alice, name="t", scopes=["trade"])
    find = async_to_sync(api_key_for_token)

    def lookup(token: str):
        key = find(token)
        return None if key is None else key.trader

    assert lookup(full) == alice and lookup(read_only) == alice
    assert lookup(trade_only) is None  # streams are reads
    assert lookup("dx_nope") is None and lookup("") is None
    ApiKey.objects.filter(key_hash__isnull=False).update(revoked_at="2020-01-01T00:00Z")
    assert lookup(full) is None
