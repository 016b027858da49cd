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
def received(monkeypatch):
    """The domain events sent while the test runs: [(signal name, payload)].

    Each payload round-trips through JSON strictly (no `default=`) as it is sent, before
    any receiver sees it: a Decimal, datetime or model left in a payload fails the
    test, naming the event. Events leave from a robust `on_commit` callback, which only
    logs what a receiver raises, hence the check once more when the test ends."""
    events = []
    unserialisable: list[str] = []

    def checked(name, send):
        def send_checked(sender, **named):
            payload = dict(named)
            # `trader_id` is the address, not the payload: a UUID that the realtime
            # receiver turns into the channel's name.
            if "trader_id" in payload:
                payload["trader_id"] = str(payload["trader_id"])
            try:
                text = json.dumps(payload)
            except TypeError as e:
                unserialisable.append(f"{name}: {e}: {named!r}")
                raise
            events.append((name, json.loads(text)))
            return send(sender, **named)

        return send_checked

    for name in [
        "order_updated",
        "trade_executed",
        "fill_created",
        "book_changed",
        "position_updated",
    ]:
        signal = getattr(signals, name)
        monkeypatch.setattr(signal, "send", checked(name, signal.send))
    yield events
    assert not unserialisable, "events whose payload is not JSON:\n" + "\n".join(unserialisable)
