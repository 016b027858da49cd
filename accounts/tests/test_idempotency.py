"""Idempotency-Key on deposit, withdraw and order placement."""

import threading
from decimal import Decimal

import pytest
from django.db import connection, connections

from accounts.models import Transfer, User
from accounts.tests.conftest import client_for, link
from accounts.tests.test_vault import deposit, deposited, tx, withdraw
from ledger.models import Balance
from trading.models import IdempotencyRecord, Order
from trading.tests.factories import MarketFactory, fund

pytestmark = pytest.mark.django_db
KEY = {"HTTP_IDEMPOTENCY_KEY": "a1b2c3-retry-me"}


def test_deposit_replays_the_stored_response(api_alice):
    first = deposit(api_alice, "5", **KEY)
    again = deposit(api_alice, "5", **KEY)
    assert first.status_code == again.status_code == 201  # the first status, not 200
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Transfer.objects.count() == 1 and IdempotencyRecord.objects.count() == 1


def test_same_key_other_body_is_refused(api_alice):
    deposit(api_alice, "5", **KEY)
    r = deposit(api_alice, "6", n=2, **KEY)
    assert r.status_code == 422 and r.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    # Another endpoint with the same key is another request too.
    r = withdraw(api_alice, "0x" + "ab" * 20, **KEY)
    assert r.status_code == 422
    assert Transfer.objects.count() == 1


def test_withdraw_twice_with_one_key_locks_once(api_alice, alice, wallet):
    deposited(api_alice, alice, "100")
    link(api_alice, alice, wallet)
    first = withdraw(api_alice, wallet.address, "70", **KEY)
    again = withdraw(api_alice, wallet.address, "70", **KEY)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert Balance.objects.get(trader=alice, mode="REAL").locked == Decimal("70")


def test_a_refusal_is_not_stored_so_the_retry_can_succeed(api_alice, alice, wallet):
    link(api_alice, alice, wallet)
    r = withdraw(api_alice, wallet.address, "50", **KEY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INSUFFICIENT_BALANCE"
    assert not IdempotencyRecord.objects.exists()
    deposited(api_alice, alice, "100")
    assert withdraw(api_alice, wallet.address, "50", **KEY).status_code == 201


def test_order_placement_with_a_key(api_alice, alice):
    MarketFactory()
    fund(alice, "100000")
    body = {
        "market": "BTC-PERP",
        "mode": "PAPER",
        "side": "BUY",
        "type": "LIMIT",
        "price": "60000",
        "qty": "0.01",
    }
    first = api_alice.post("/api/v1/trade", body, format="json", **KEY)
    again = api_alice.post("/api/v1/trade", body, format="json", **KEY)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert Order.objects.count() == 1
    r = api_alice.post("/api/v1/trade", {**body, "qty": "0.02"}, format="json", **KEY)
    assert r.status_code == 422
    # Without a key, the same body is simply a second order.
    assert api_alice.post("/api/v1/trade", body, format="json").status_code == 201
    assert Order.objects.count() == 2


def test_keys_belong_to_one_trader(api_alice, api_bob):
    assert deposit(api_alice, "5", n=1, **KEY).status_code == 201
    assert deposit(api_bob, "5", n=2, **KEY).status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "é"])
def test_malformed_keys(api_alice, key):
    r = deposit(api_alice, HTTP_IDEMPOTENCY_KEY=key)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_IDEMPOTENCY_KEY"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL row locks")
def test_concurrent_twins_take_effect_once():
    alice = User.objects.create_user("alice", password="a-long-password-1")
    statuses: list[tuple[int, dict]] = []
    barrier = threading.Barrier(10)

    def work() -> None:
        try:
            c = client_for(User.objects.get(pk=alice.pk))
            barrier.wait()
            r = deposit(c, "5", **KEY)
            statuses.append((r.status_code, r.json()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Transfer.objects.count() == 1
    assert {s for s, _ in statuses} == {201} and len({b["id"] for _, b in statuses}) == 1
    assert Transfer.objects.get().tx_hash == tx(1)
