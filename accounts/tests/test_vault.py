"""The vault: deposits (pending, confirmed once), withdrawals (locked at once, only to a
linked address, only from free funds), staff decisions and the transfer history."""

import threading
import time
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections

from accounts.models import LinkedWallet, Transfer, User
from accounts.services import vault
from accounts.services.wallets import address_parse
from accounts.tests.conftest import client_for, link
from dexsite.errors import ExchangeError
from ledger.models import Balance, LedgerEntry
from trading import margin
from trading.invariants import check_invariants
from trading.orders.place import order_place
from trading.tests.factories import MarketFactory, fund

D = Decimal
pytestmark = pytest.mark.django_db
requires_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks across connections need PostgreSQL"
)


def tx(n: int) -> str:
    return "0x" + f"{n:064x}"


def real(user, asset="USDC") -> Balance:
    return Balance.objects.get(trader=user, asset=asset, mode="REAL")


def deposit(client, amount="1000", n=1, asset="USDC", **headers):
    return client.post(
        "/api/v1/vault/deposit",
        {"asset": asset, "amount": amount, "txHash": tx(n)},
        format="json",
        **headers,
    )


def withdraw(client, address, amount="100", **headers):
    return client.post(
        "/api/v1/vault/withdraw",
        {"asset": "USDC", "amount": amount, "address": address},
        format="json",
        **headers,
    )


def deposited(client, user, amount="1000", n=1):
    assert deposit(client, amount, n).status_code == 201
    vault.deposit_confirm(tx_hash=tx(n), by=None)


def err(r) -> str:
    return r.json()["error"]["code"]


# -- deposits ---------------------------------------------------------------------------


def test_deposit_is_pending_until_confirmed_once(api_alice, alice):
    r = deposit(api_alice, "250.5")
    assert r.status_code == 201
    body = r.json()
    assert body["type"] == "DEPOSIT" and body["status"] == "PENDING"
    assert body["amount"] == "250.5" and body["mode"] == "REAL" and body["txHash"] == tx(1)
    assert not Balance.objects.filter(trader=alice, mode="REAL").exists()

    call_command("confirm_deposit", tx(1).upper().replace("0X", "0x"))
    assert real(alice).total == D("250.5")
    with pytest.raises(CommandError, match="DEPOSIT_NOT_PENDING"):
        call_command("confirm_deposit", tx(1))
    assert real(alice).total == D("250.5")
    assert LedgerEntry.objects.filter(trader=alice, reason="DEPOSIT").count() == 1
    assert api_alice.get("/api/v1/vault/transfers").json()["results"][0]["status"] == "CONFIRMED"
    assert check_invariants() == []


def test_same_tx_hash_is_one_deposit(api_alice, alice, api_bob):
    first = deposit(api_alice, "10")
    again = deposit(api_alice, "10")
    assert again.status_code == 200 and again.json() == first.json()
    r = deposit(api_alice, "11")
    assert r.status_code == 409 and err(r) == "TX_HASH_CONFLICT"
    r = deposit(api_bob, "10")
    assert r.status_code == 409 and err(r) == "TX_HASH_CONFLICT"
    assert Transfer.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"asset": "USDC", "amount": "1", "txHash": "0x12"}, "INVALID_TX_HASH"),
        ({"asset": "DOGE", "amount": "1", "txHash": tx(1)}, "INVALID_ASSET"),
        ({"asset": "USDC", "amount": "0", "txHash": tx(1)}, "INVALID_AMOUNT"),
        ({"asset": "USDC", "amount": "-5", "txHash": tx(1)}, "INVALID_AMOUNT"),
        ({"asset": "USDC", "amount": 1.5, "txHash": tx(1), "mode": "REAL"}, "UNKNOWN_FIELD"),
    ],
)
def test_deposit_refusals(api_alice, body, code):
    r = api_alice.post("/api/v1/vault/deposit", body, format="json")
    assert r.status_code == 400 and err(r) == code
    assert not Transfer.objects.exists()


def test_pending_deposits_are_capped_per_trader(settings, api_alice, alice, api_bob):
    settings.VAULT_PENDING_DEPOSITS_MAX = 3
    for n in (1, 2, 3):
        assert deposit(api_alice, "1000000000000000", n).status_code == 201
    r = deposit(api_alice, "1", 4)
    assert r.status_code == 409 and err(r) == "TOO_MANY_PENDING_DEPOSITS"
    assert deposit(api_alice, "1000000000000000", 2).status_code == 200  # a repeat still is
    assert deposit(api_bob, "1", 5).status_code == 201  # per trader
    vault.deposit_reject(deposit_id=Transfer.objects.get(tx_hash=tx(1)).pk, by=None)
    assert deposit(api_alice, "1", 4).status_code == 201  # one left the queue
    assert Transfer.objects.filter(trader=alice, status="PENDING").count() == 3


@pytest.mark.django_db(transaction=True)
@requires_postgres
def test_concurrent_deposit_notices_stop_at_the_cap(settings):
    settings.VAULT_PENDING_DEPOSITS_MAX = 5
    alice = User.objects.create_user("alice", password="a-long-password-1")
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def work(n: int) -> None:
        try:
            barrier.wait()
            vault.deposit_record(trader=alice, asset="USDC", amount=D("1"), tx_hash=tx(n))
            outcomes.append("ok")
        except ExchangeError as e:
            outcomes.append(e.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["TOO_MANY_PENDING_DEPOSITS"] * 15 + ["ok"] * 5
    assert Transfer.objects.filter(trader=alice, status="PENDING").count() == 5


def test_confirm_unknown_deposit(db):
    with pytest.raises(CommandError, match="NOT_FOUND"):
        call_command("confirm_deposit", tx(9))
    with pytest.raises(CommandError, match="INVALID_TX_HASH"):
        call_command("confirm_deposit", "0xnope")


@pytest.mark.django_db(transaction=True)
@requires_postgres
def test_concurrent_confirmations_credit_once():
    alice = User.objects.create_user("alice", password="a-long-password-1")
    vault.deposit_record(trader=alice, asset="USDC", amount=D("500"), tx_hash=tx(7))
    outcomes: list[str] = []
    barrier = threading.Barrier(10)

    def work() -> None:
        try:
            barrier.wait()
            vault.deposit_confirm(tx_hash=tx(7), by=None)
            outcomes.append("ok")
        except ExchangeError as e:
            outcomes.append(e.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["DEPOSIT_NOT_PENDING"] * 9 + ["ok"]
    assert real(alice).total == D("500")
    assert check_invariants() == []


# -- withdrawals ------------------------------------------------------------------------


def test_withdrawal_locks_at_once_then_approval_books_it(api_alice, alice, wallet):
    deposited(api_alice, alice, "1000")
    link(api_alice, alice, wallet)
    r = withdraw(api_alice, wallet.address.lower(), "400")
    assert r.status_code == 201
    w = r.json()
    assert w["type"] == "WITHDRAWAL" and w["status"] == "PENDING"
    assert w["address"] == wallet.address and w["amount"] == "400"
    b = real(alice)
    assert (b.total, b.locked) == (D("1000"), D("400"))
    assert check_invariants() == []  # locked = pending withdrawals

    vault.withdrawal_approve(withdrawal_id=w["id"], tx_hash=tx(100), by=None)
    b = real(alice)
    assert (b.total, b.locked) == (D("600"), D("0"))
    row = LedgerEntry.objects.get(trader=alice, reason="WITHDRAWAL")
    assert row.amount == D("-400") and row.ref == f"withdrawal:{w['id']}"
    with pytest.raises(ExchangeError) as e:
        vault.withdrawal_approve(withdrawal_id=w["id"], tx_hash=tx(101), by=None)
    assert e.value.code == "WITHDRAWAL_NOT_PENDING"
    assert Transfer.objects.get(pk=w["id"]).tx_hash == tx(100)
    assert check_invariants() == []


def test_rejected_withdrawal_returns_the_funds(api_alice, alice, wallet):
    deposited(api_alice, alice, "1000")
    link(api_alice, alice, wallet)
    w = withdraw(api_alice, wallet.address, "1000").json()
    assert withdraw(api_alice, wallet.address, "1").status_code == 400
    vault.withdrawal_reject(withdrawal_id=w["id"], by=None, note="suspicious")
    b = real(alice)
    assert (b.total, b.locked) == (D("1000"), D("0"))
    assert not LedgerEntry.objects.filter(reason="WITHDRAWAL").exists()
    assert withdraw(api_alice, wallet.address, "1000").status_code == 201
    assert check_invariants() == []


def test_approval_tx_hash_pays_one_withdrawal(api_alice, alice, wallet):
    deposited(api_alice, alice, "1000")
    link(api_alice, alice, wallet)
    a = withdraw(api_alice, wallet.address, "1").json()
    b = withdraw(api_alice, wallet.address, "2").json()
    vault.withdrawal_approve(withdrawal_id=a["id"], tx_hash=tx(5), by=None)
    with pytest.raises(ExchangeError) as e:
        vault.withdrawal_approve(withdrawal_id=b["id"], tx_hash=tx(5), by=None)
    assert e.value.code == "TX_HASH_CONFLICT"
    assert real(alice).locked == D("2")


def test_withdrawal_only_to_a_linked_address(api_alice, alice, api_bob, bob, wallet, other_wallet):
    deposited(api_alice, alice, "1000")
    link(api_bob, bob, wallet)
    for address in (wallet.address, other_wallet.address):
        r = withdraw(api_alice, address)
        assert r.status_code == 400 and err(r) == "WALLET_NOT_LINKED"
    r = withdraw(api_alice, "0x123")
    assert r.status_code == 400 and err(r) == "INVALID_ADDRESS"
    assert real(alice).locked == 0 and not Transfer.objects.filter(kind="WITHDRAWAL").exists()


def test_withdrawal_only_from_real_available_funds(api_alice, alice, wallet):
    fund(alice, "5000", mode="PAPER")
    link(api_alice, alice, wallet)
    r = withdraw(api_alice, wallet.address, "1")
    assert r.status_code == 400 and err(r) == "INSUFFICIENT_BALANCE"
    assert r.json()["error"]["field"] == "amount"
    deposited(api_alice, alice, "100")
    assert withdraw(api_alice, wallet.address, "100.000000000001").status_code == 400
    assert withdraw(api_alice, wallet.address, "100").status_code == 201
    assert check_invariants() == []


def test_withdrawal_leaves_margin_for_positions_and_orders(api_alice, alice, bob, wallet):
    MarketFactory()
    deposited(api_alice, alice, "10000")
    fund(bob, "100000", mode="REAL")
    link(api_alice, alice, wallet)
    place = dict(market="BTC-PERP", mode="REAL", type="LIMIT", price=D("64000"), qty=D("1"))
    order_place(trader=bob, side="SELL", **place)
    order_place(trader=alice, side="BUY", **place)  # long 1 BTC at 10x: 6400 margin
    order_place(trader=alice, side="BUY", **{**place, "price": D("60000"), "qty": D("0.1")})
    b = real(alice)
    free = margin.withdrawable(b, alice.pk)
    # Available cash (the open order's reservation is locked) less the position's
    # initial margin: 1 BTC at mark 64000 and 10x.
    assert b.locked > 0 and free == b.total - b.locked - D("6400")
    r = withdraw(api_alice, wallet.address, str(free + D("0.000000000001")))
    assert r.status_code == 400 and err(r) == "INSUFFICIENT_BALANCE"
    assert withdraw(api_alice, wallet.address, str(free)).status_code == 201
    # Nothing is left for a new order either: the lock counts against margin.
    with pytest.raises(ExchangeError) as e:
        order_place(trader=alice, side="BUY", **{**place, "price": D("60000"), "qty": D("0.01")})
    assert e.value.code == "INSUFFICIENT_MARGIN"
    assert check_invariants() == []


def test_unlinking_a_wallet_with_a_pending_withdrawal_is_refused(api_alice, alice, wallet):
    deposited(api_alice, alice, "100")
    link(api_alice, alice, wallet)
    w = withdraw(api_alice, wallet.address, "10").json()
    path = f"/api/v1/user/{alice.trader_id}/link-wallet/{wallet.address}"
    r = api_alice.delete(path)
    assert r.status_code == 409 and err(r) == "WALLET_HAS_PENDING_WITHDRAWAL"
    vault.withdrawal_approve(withdrawal_id=w["id"], tx_hash=tx(3), by=None)
    assert api_alice.delete(path).status_code == 200


@pytest.mark.django_db(transaction=True)
@requires_postgres
def test_fifty_concurrent_withdrawals_against_one_withdrawal_of_funds(capsys):
    alice = User.objects.create_user("alice", password="a-long-password-1")
    vault.deposit_record(trader=alice, asset="USDC", amount=D("100"), tx_hash=tx(1))
    vault.deposit_confirm(tx_hash=tx(1), by=None)
    address = "0x" + "ab" * 20
    LinkedWallet.objects.create(trader=alice, address=address_parse(address))
    outcomes: list[str] = []
    barrier = threading.Barrier(50)

    def work() -> None:
        try:
            barrier.wait()
            vault.withdrawal_request(
                trader=User.objects.get(pk=alice.pk), asset="USDC", amount=D("60"), address=address
            )
            outcomes.append("ok")
        except ExchangeError as e:
            outcomes.append(e.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(50)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.perf_counter() - started
    assert sorted(outcomes) == ["INSUFFICIENT_BALANCE"] * 49 + ["ok"]
    b = real(alice)
    assert (b.total, b.locked) == (D("100"), D("60"))
    assert Transfer.objects.filter(kind="WITHDRAWAL").count() == 1
    assert check_invariants() == []
    with capsys.disabled():
        print(f"\n50 concurrent withdrawals: 1 ok, 49 INSUFFICIENT_BALANCE in {elapsed:.2f}s")


@pytest.mark.django_db(transaction=True)
@requires_postgres
def test_concurrent_withdrawals_and_orders_never_spend_the_same_funds():
    MarketFactory()
    alice = User.objects.create_user("alice", password="a-long-password-1")
    vault.deposit_record(trader=alice, asset="USDC", amount=D("10000"), tx_hash=tx(1))
    vault.deposit_confirm(tx_hash=tx(1), by=None)
    address = address_parse("0x" + "cd" * 20)
    LinkedWallet.objects.create(trader=alice, address=address)
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def work(i: int) -> None:
        trader = User.objects.get(pk=alice.pk)
        try:
            barrier.wait()
            if i % 2:
                vault.withdrawal_request(
                    trader=trader, asset="USDC", amount=D("3000"), address=address
                )
                outcomes.append("withdrawn")
            else:
                # 0.45 BTC at 64000 and 10x: 2880 of margin and 14.4 of worst-case fee.
                order_place(
                    trader=trader,
                    market="BTC-PERP",
                    mode="REAL",
                    side="BUY",
                    type="LIMIT",
                    price=D("64000"),
                    qty=D("0.45"),
                )
                outcomes.append("ordered")
        except ExchangeError as e:
            outcomes.append(e.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    b = real(alice)
    # Each success takes about 3000 of the 10000: three fit, whichever they are.
    assert len([o for o in outcomes if o in ("withdrawn", "ordered")]) == 3
    assert set(outcomes) <= {"withdrawn", "ordered", "INSUFFICIENT_BALANCE", "INSUFFICIENT_MARGIN"}
    assert b.total == D("10000") and b.locked <= b.total
    assert check_invariants() == []


# -- history ----------------------------------------------------------------------------


def test_transfers_newest_first_paginated(api_alice, alice, api_bob, wallet):
    for n in range(1, 6):
        deposit(api_alice, str(n), n)
    deposit(api_bob, "1", 99)
    page = api_alice.get("/api/v1/vault/transfers", {"limit": 2}).json()
    assert [t["amount"] for t in page["results"]] == ["5", "4"]
    seen = [t["id"] for t in page["results"]]
    while page["nextToken"]:
        page = api_alice.get(
            "/api/v1/vault/transfers", {"limit": 2, "nextToken": page["nextToken"]}
        ).json()
        seen += [t["id"] for t in page["results"]]
    assert seen == sorted(seen, reverse=True) and len(seen) == 5
    r = api_alice.get("/api/v1/vault/transfers", {"nextToken": "garbage"})
    assert r.status_code == 400 and err(r) == "INVALID_NEXT_TOKEN"


def test_vault_needs_a_key_with_the_right_scope(alice, wallet):
    from accounts.services.api_keys import api_key_create

    _, read_only = api_key_create(trader=alice, name="ro", scopes=["read"])
    _, trader_key = api_key_create(trader=alice, name="bot", scopes=["read", "trade"])
    ro, bot = client_for(alice, read_only), client_for(alice, trader_key)
    assert ro.get("/api/v1/vault/transfers").status_code == 200
    r = deposit(ro)
    assert r.status_code == 403 and err(r) == "INSUFFICIENT_SCOPE"
    assert deposit(bot).status_code == 201
    r = withdraw(bot, wallet.address)
    assert r.status_code == 403 and err(r) == "INSUFFICIENT_SCOPE"
