"""A request that waited past REQUEST_QUEUE_TIMEOUT for a thread (by the router's
X-Request-Start stamp) is refused unrun: 503 OVERLOADED, retryable."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from accounts.services import token_for
from trading.models import Order
from trading.tests.factories import MarketFactory, UserFactory, fund

BODY = {
    "market": "BTC-PERP",
    "mode": "PAPER",
    "side": "BUY",
    "type": "LIMIT",
    "price": "64000",
    "qty": "0.1",
}


@pytest.fixture
def api(db, settings):
    settings.REQUEST_QUEUE_TIMEOUT = 2.0
    MarketFactory()
    trader = UserFactory(username="queued")
    fund(trader, "100000")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(trader)}")
    return client


def stamp(seconds_ago: float) -> str:
    return f"t={time.time() - seconds_ago:.3f}"


def test_an_order_that_waited_past_the_bound_is_refused_and_not_placed(api):
    r = api.post("/api/v1/trade", BODY, format="json", HTTP_X_REQUEST_START=stamp(2.5))
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "OVERLOADED" and error["retryAfter"] == 1
    assert r["Retry-After"] == "1"
    assert not Order.objects.exists()


def test_a_request_within_the_bound_or_without_a_readable_stamp_is_served(api):
    r = api.post("/api/v1/trade", BODY, format="json", HTTP_X_REQUEST_START=stamp(0.5))
    assert r.status_code == 201, r.content
    for header in ({}, {"HTTP_X_REQUEST_START": "t=soon"}, {"HTTP_X_REQUEST_START": "12"}):
        assert api.get("/api/v1/balances?mode=PAPER", **header).status_code == 200
    # A stamp from the future (the router's clock ahead of this one's) is no wait.
    r = api.get("/api/v1/balances?mode=PAPER", HTTP_X_REQUEST_START=stamp(-60))
    assert r.status_code == 200


def test_no_limit_when_the_bound_is_zero(api, settings):
    settings.REQUEST_QUEUE_TIMEOUT = 0
    r = api.get("/api/v1/balances?mode=PAPER", HTTP_X_REQUEST_START=stamp(3600))
    assert r.status_code == 200
