import uuid

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from eth_account import Account
from eth_account.messages import encode_defunct
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import token_for


@pytest.fixture(autouse=True)
def _own_throttle_counts(settings):
    """Throttle counts live in the cache (Redis when REDIS_URL is set), which outlives a
    test's database and is shared by every test run: each test counts in a namespace of
    its own, removed afterwards."""
    prefix = f"test-{uuid.uuid4().hex}"
    settings.CACHES = {"default": {**django_settings.CACHES["default"], "KEY_PREFIX": prefix}}
    yield
    backend = cache._cache if hasattr(cache, "_cache") else None
    if backend is not None and hasattr(backend, "get_client"):
        client = backend.get_client(write=True)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
    else:
        cache.clear()


def client_for(user, token: str | None = None) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {token or token_for(user)}")
    return c


PASSWORD = "a-long-password-1"


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def bob(db):
    return User.objects.create_user("bob", password=PASSWORD)


@pytest.fixture
def api_alice(alice):
    return client_for(alice)


@pytest.fixture
def api_bob(bob):
    return client_for(bob)


@pytest.fixture
def wallet():
    """A real secp256k1 key pair: signatures are checked by the real recovery."""
    return Account.from_key("0x" + "4c" * 32)


@pytest.fixture
def other_wallet():
    return Account.from_key("0x" + "7e" * 32)


def sign(account, message: str) -> str:
    return "0x" + Account.sign_message(encode_defunct(text=message), account.key).signature.hex()


def link_path(user) -> str:
    return f"/api/v1/user/{user.trader_id}/link-wallet"


def challenge(client: APIClient, user, address: str | None = None) -> dict:
    params = {"address": address} if address else {}
    r = client.get(link_path(user), params)
    assert r.status_code == 200, r.content
    return r.json()


def link(client: APIClient, user, account, *, bind: bool = True):
    body = challenge(client, user, account.address if bind else None)
    return client.post(
        link_path(user),
        {
            "address": account.address,
            "signature": sign(account, body["message"]),
            "nonce": body["nonce"],
        },
        format="json",
    )
