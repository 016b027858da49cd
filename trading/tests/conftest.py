import json
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.services import token_for
from trading import signals
from trading.invariants import check_invariants
from trading.tests.factories import MarketFactory, UserFactory, fund, spot_market


@pytest.fixture
def perp(db):
    return MarketFactory()


@pytest.fixture
def spot(db):
    return spot_market()


def client_for(user) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return c


@pytest.fixture
def alice(db):
    u = UserFactory(username="alice")
    fund(u, "100000")
    return u


@pytest.fixture
def bob(db):
    u = UserFactory(username="bob")
    fund(u, "100000")
    return u


@pytest.fixture
def api_alice(alice):
    return client_for(alice)


@pytest.fixture
def api_bob(bob):
    return client_for(bob)


@pytest.fixture
def invariants(db):
    """Assert the exchange's invariants hold at the end of the test."""
    yield
    assert check_invariants() == []


def order(**kw) -> dict:
    body = {"market": "BTC-PERP", "mode": "PAPER", "side": "BUY", "type": "LIMIT"}
    body.update({k: (str(v) if isinstance(v, Decimal) else v) for k, v in kw.items()})
    return body


@pytest.fixture
def received():
    """The domain events sent while the test runs: [(signal name, payload)]."""
    events = []

    def make(name):
        def receiver(sender, **kwargs):
            # Round-trip through JSON: an unserialisable payload fails here, where it
            # is made, not in a WebSocket consumer later.
            events.append((name, json.loads(json.dumps(kwargs, default=str))))

        return receiver

    receivers = {
        name: make(name)
        for name in [
            "order_updated",
            "trade_executed",
            "fill_created",
            "book_changed",
            "position_updated",
        ]
    }
    for name, fn in receivers.items():
        getattr(signals, name).connect(fn)
    yield events
    for name, fn in receivers.items():
        getattr(signals, name).disconnect(fn)
