"""Withdrawals paid by the vault contract on a real anvil: booked once, after the chain
paid; paid once even when the signer dies between sending and booking; nothing
released twice when the chain does not pay."""

import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from web3.logs import DISCARD

from accounts.evm import transact
from accounts.models import Transfer, User
from accounts.services import chain_withdrawals, vault
from accounts.services.chain_withdrawals import withdrawals_pay
from accounts.tests.conftest import client_for, link
from dexsite.errors import ExchangeError
from ledger.models import Balance, LedgerEntry
from trading.invariants import check_invariants

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture
def vault_holds(chain):
    """What other traders deposited: the vault's tokens the withdrawals are paid from."""
    sender = chain.account(3)
    chain.mint("USDC", sender, "500")
    chain.deposit(sender, uuid.uuid4(), "500")
    return D("500")


@pytest.fixture
def alice_funded(chain, alice, api_alice, wallet):
    from trading.tests.factories import fund

    fund(alice, "1000", mode="REAL")
    assert link(api_alice, alice, wallet).status_code == 201
    return alice


def request(api, wallet, amount: str) -> Transfer:
    r = api.post(
        "/api/v1/vault/withdraw",
        {"asset": "USDC", "amount": amount, "address": wallet.address},
        format="json",
    )
    assert r.status_code == 201, r.content
    return Transfer.objects.get(pk=r.json()["id"])


def pay_once(chain):
    return withdrawals_pay(w3=chain.w3, deployment=chain.deployment, signer=chain.hot_wallet)


def pay(chain):
    """A poll of the signer, and one more after the confirmations where it waits."""
    outcomes = pay_once(chain)
    if any(o.result == "WAITING" for o in outcomes):
        chain.mine(3)
        outcomes = pay_once(chain)
    return outcomes


def usdc(user) -> Balance:
    return Balance.objects.get(trader=user, asset="USDC", mode="REAL")


def signer_nonce(chain) -> int:
    return chain.w3.eth.get_transaction_count(chain.hot_wallet.address)


def test_an_approved_withdrawal_is_paid_by_the_vault_then_booked(
    chain, vault_holds, alice_funded, api_alice, wallet
):
    w = request(api_alice, wallet, "120.25")
    assert usdc(alice_funded).locked == D("120.25")
    assert pay(chain) == []  # not approved yet: nothing sent
    vault.withdrawal_send_approve(withdrawal_id=w.pk, by=None)
    # Paid on chain, booked only once the payment has its confirmations.
    (waiting,) = pay_once(chain)
    w.refresh_from_db()
    assert (waiting.result, w.status, w.tx_hash) == ("WAITING", "SENDING", waiting.tx_hash)
    assert chain.balance("USDC", wallet.address) == D("120.25")
    assert not LedgerEntry.objects.filter(reason="WITHDRAWAL").exists()
    chain.mine(1)
    assert pay_once(chain)[0].result == "WAITING"
    chain.mine(1)
    (outcome,) = pay_once(chain)
    w.refresh_from_db()
    assert outcome.result == "PAID" and w.status == "APPROVED" and w.tx_hash == outcome.tx_hash
    assert chain.balance("USDC", wallet.address) == D("120.25")
    receipt = chain.w3.eth.get_transaction_receipt(w.tx_hash)
    (event,) = chain.vault.events.Withdrawal().process_receipt(receipt, errors=DISCARD)
    assert (event.args.withdrawalId, event.args.to, event.args.amount) == (
        w.pk,
        wallet.address,
        120_250_000,
    )
    balance = usdc(alice_funded)
    assert (balance.total, balance.locked) == (D("879.75"), 0)
    assert pay(chain) == []
    assert LedgerEntry.objects.filter(reason="WITHDRAWAL").count() == 1
    body = client_for(alice_funded).get("/api/v1/vault/transfers").json()["results"][0]
    assert (body["status"], body["txHash"]) == ("APPROVED", w.tx_hash)
    assert check_invariants() == []


def test_a_signer_killed_after_sending_and_before_recording_pays_once(
    chain, vault_holds, alice_funded, api_alice, wallet
):
    w = request(api_alice, wallet, "100")
    vault.withdrawal_send_approve(withdrawal_id=w.pk, by=None)
    # What the killed process did: signed and broadcast, then died; nothing recorded.
    units = chain.units("USDC", "100")
    call = chain.vault.functions.withdraw(chain.token("USDC").address, wallet.address, units, w.pk)
    sent = transact(chain.w3, call, chain.hot_wallet)["transactionHash"].to_0x_hex()
    w.refresh_from_db()
    assert (w.status, w.tx_hash) == ("SENDING", None)
    nonce = signer_nonce(chain)
    (outcome,) = pay(chain)  # the restarted signer
    assert (outcome.result, outcome.tx_hash) == ("PAID", sent)
    assert signer_nonce(chain) == nonce, "nothing sent again"
    assert chain.balance("USDC", wallet.address) == D("100")
    assert usdc(alice_funded).total == D("900")
    assert LedgerEntry.objects.filter(reason="WITHDRAWAL").count() == 1


def test_a_signer_killed_after_recording_and_before_booking_pays_once(
    chain, vault_holds, alice_funded, api_alice, wallet, monkeypatch
):
    w = request(api_alice, wallet, "100")
    vault.withdrawal_send_approve(withdrawal_id=w.pk, by=None)

    def killed(**kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(vault, "withdrawal_approve", killed)
    with pytest.raises(SystemExit):
        pay(chain)
    w.refresh_from_db()
    assert w.status == "SENDING" and w.tx_hash
    monkeypatch.undo()
    nonce = signer_nonce(chain)
    (outcome,) = pay(chain)
    assert (outcome.result, outcome.tx_hash) == ("PAID", w.tx_hash)
    assert signer_nonce(chain) == nonce
    assert chain.balance("USDC", wallet.address) == D("100")
    assert LedgerEntry.objects.filter(reason="WITHDRAWAL").count() == 1


def test_a_withdrawal_above_the_vault_balance_goes_back_to_staff_and_is_released_once(
    chain, vault_holds, alice_funded, api_alice, wallet
):
    w = request(api_alice, wallet, "800")  # the vault holds 500
    vault.withdrawal_send_approve(withdrawal_id=w.pk, by=None)
    (outcome,) = pay(chain)
    w.refresh_from_db()
    assert outcome.result == "RETURNED"
    assert (w.status, w.tx_hash) == ("PENDING", None) and "refused" in w.note
    assert usdc(alice_funded).locked == D("800"), "still locked until staff decide"
    assert chain.balance("USDC", wallet.address) == 0
    vault.withdrawal_reject(withdrawal_id=w.pk, by=None)
    with pytest.raises(ExchangeError, match="is REJECTED"):
        vault.withdrawal_reject(withdrawal_id=w.pk, by=None)
    balance = usdc(alice_funded)
    assert (balance.total, balance.locked) == (D("1000"), 0)
    assert not LedgerEntry.objects.filter(reason="WITHDRAWAL").exists()


def test_a_reverted_transaction_goes_back_to_staff(
    chain, vault_holds, alice_funded, api_alice, wallet, monkeypatch
):
    w = request(api_alice, wallet, "50")
    vault.withdrawal_send_approve(withdrawal_id=w.pk, by=None)
    # The vault empties between the estimate and the mining: the transaction reverts.
    real_receipt = chain_withdrawals._receipt

    def drained_first(w3, tx_hash, timeout):
        chain.w3.provider.make_request("evm_setAutomine", [True])
        return real_receipt(w3, tx_hash, timeout)

    chain.w3.provider.make_request("evm_setAutomine", [False])
    try:
        sent = chain_withdrawals.withdrawals_to_send
        monkeypatch.setattr(chain_withdrawals, "_receipt", drained_first)
        # Another withdrawal of the whole vault, sent ahead of it by the signer itself.
        drain = chain.vault.functions.withdraw(
            chain.token("USDC").address, chain.account(4), chain.units("USDC", "500"), 10**9
        ).build_transaction(
            {"from": chain.hot_wallet.address, "nonce": signer_nonce(chain), "gas": 200_000}
        )
        chain.w3.eth.send_raw_transaction(chain.hot_wallet.sign_transaction(drain).raw_transaction)
        assert sent() == [w]
        (outcome,) = pay(chain)
    finally:
        chain.w3.provider.make_request("evm_setAutomine", [True])
    w.refresh_from_db()
    assert outcome.result == "RETURNED" and w.status == "PENDING" and "reverted" in w.note
    assert usdc(alice_funded).locked == D("50")
    assert chain.balance("USDC", wallet.address) == 0


def test_a_sending_withdrawal_cannot_be_rejected(chain, alice_funded, api_alice, wallet):
    w = request(api_alice, wallet, "10")
    vault.withdrawal_send_approve(withdrawal_id=w.pk, by=None)
    with pytest.raises(ExchangeError):
        vault.withdrawal_reject(withdrawal_id=w.pk, by=None)
    assert usdc(alice_funded).locked == D("10")


def test_an_amount_the_token_cannot_pay_exactly_is_refused(chain, alice_funded, api_alice, wallet):
    r = api_alice.post(
        "/api/v1/vault/withdraw",
        {"asset": "USDC", "amount": "1.0000001", "address": wallet.address},
        format="json",
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_AMOUNT"
    assert usdc(alice_funded).locked == 0


def test_staff_approval_in_the_admin_queues_it_for_the_signer(
    chain, alice_funded, api_alice, wallet
):
    w = request(api_alice, wallet, "10")
    root = User.objects.create_superuser("root", password="pw-root-1234")
    staff = Client()
    staff.force_login(root)
    staff.post(
        "/admin/accounts/withdrawal/",
        {"action": "approve", "_selected_action": [w.pk]},
        follow=True,
    )
    w.refresh_from_db()
    assert (w.status, w.decided_by) == ("SENDING", root)
    page = staff.get("/admin/accounts/withdrawal/").content.decode()
    assert "SENDING" in page


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a second process on the test database"
)
def test_the_watcher_process_killed_while_paying_pays_once(
    transactional_db, chain, vault_holds, alice_funded, api_alice, wallet, settings
):
    w = request(api_alice, wallet, "100")
    vault.withdrawal_send_approve(withdrawal_id=w.pk, by=None)
    db = connection.settings_dict
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        CHAIN_RPC_URL=settings.CHAIN_RPC_URL,
        CHAIN_ID=str(settings.CHAIN_ID),
        CHAIN_WITHDRAWAL_KEY=chain.hot_wallet.key.hex(),
        CHAIN_POLL_SECONDS="0.05",
        LOG_LEVEL="WARNING",
    )
    env.pop("CHAIN_WITHDRAWAL_KEY_FILE", None)

    def watcher():
        return subprocess.Popen(
            [sys.executable, "manage.py", "runchainwatch"],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def until(condition, what):
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    first = watcher()
    try:
        # Killed the moment the chain has paid: before or after it booked, by chance.
        until(lambda: chain.vault.functions.paid(w.pk).call(), "the watcher paid nothing")
    finally:
        first.kill()
        first.wait()
    second = watcher()
    try:
        until(
            lambda: chain.mine(1) or Transfer.objects.get(pk=w.pk).status == "APPROVED",
            "the restarted watcher did not book it",
        )
    finally:
        second.terminate()
        second.wait(timeout=10)
    event = chain.vault.events.Withdrawal()
    payments = chain.w3.eth.get_logs(
        {"address": chain.deployment.vault, "fromBlock": 0, "topics": [event.topic]}
    )
    assert len(payments) == 1
    assert chain.balance("USDC", wallet.address) == D("100")
    assert LedgerEntry.objects.filter(reason="WITHDRAWAL").count() == 1
    assert usdc(alice_funded).total == D("900")
