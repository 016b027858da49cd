"""The watcher's deposits against a real anvil: credited once after N confirmations,
whatever is read twice, reorganised away or interrupted."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction

from accounts.models import ChainDeployment, ChainDeposit, Transfer
from accounts.services import chain_deposits, vault
from accounts.services.chain_deposits import DeepReorg, chain_deposits_poll
from accounts.tests.conftest import client_for
from dexsite.errors import ExchangeError
from ledger.models import Balance, LedgerEntry

D = Decimal
pytestmark = pytest.mark.django_db


def poll(chain, confirmations=3):
    return chain_deposits_poll(
        w3=chain.w3, deployment=chain.deployment, confirmations=confirmations
    )


def real_usdc(user) -> Decimal:
    row = Balance.objects.filter(trader=user, asset="USDC", mode="REAL").first()
    return row.total if row else D(0)


def deposit_rows(user):
    return list(LedgerEntry.objects.filter(trader=user, reason="DEPOSIT"))


def approved_then_snapshot(chain, sender, amount) -> str:
    """The vault may take `amount`, the approval is final and watched past; a snapshot
    to go back to (what a reorganisation looks like on anvil)."""
    chain.approve(sender, amount)
    chain.mine(3)
    poll(chain)
    return chain.snapshot()


@pytest.fixture
def funded(chain):
    sender = chain.account(1)
    chain.mint("USDC", sender, "10000")
    return sender


def test_a_deposit_is_credited_once_after_n_confirmations(
    chain, funded, alice, django_capture_on_commit_callbacks
):
    receipt = chain.deposit(funded, alice.trader_id, "250.5")
    tx_hash = receipt["transactionHash"].to_0x_hex()
    assert poll(chain).credited == []
    row = ChainDeposit.objects.get()
    assert (row.status, row.tx_hash, row.asset) == ("SEEN", tx_hash, "USDC")
    chain.mine(1)  # two confirmations: not yet
    assert poll(chain).credited == []
    assert real_usdc(alice) == 0
    chain.mine(1)  # three
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        done = poll(chain)
    assert [r.tx_hash for r in done.credited] == [tx_hash]
    assert callbacks, "the balanceUpdate is sent on commit"
    assert real_usdc(alice) == D("250.5")
    transfer = Transfer.objects.get(trader=alice)
    assert (transfer.status, transfer.tx_hash, transfer.amount) == (
        "CONFIRMED",
        tx_hash,
        D("250.5"),
    )
    chain.mine(10)
    assert poll(chain).credited == []
    assert real_usdc(alice) == D("250.5") and len(deposit_rows(alice)) == 1
    body = client_for(alice).get("/api/v1/vault/transfers").json()["results"]
    assert [(t["type"], t["status"], t["txHash"]) for t in body] == [
        ("DEPOSIT", "CONFIRMED", tx_hash)
    ]


def test_the_same_log_read_twice_is_credited_once(chain, funded, alice):
    chain.deposit(funded, alice.trader_id, "100")
    chain.mine(5)
    entries = chain_deposits.deposit_logs(chain.w3, chain.deployment, 0, chain.w3.eth.block_number)
    assert len(entries) == 1
    with transaction.atomic():
        assert chain_deposits._credit(chain.deployment, entries[0]).status == "CREDITED"
        assert chain_deposits._credit(chain.deployment, entries[0]) is None
    # A watcher whose cursor went back (a restored backup) reads it again: nothing more.
    ChainDeployment.objects.filter(pk=chain.deployment.pk).update(
        scanned_block=chain.deployment.deployed_block, scanned_hash=chain.deployment.scanned_hash
    )
    assert poll(chain).credited == []
    assert real_usdc(alice) == D("100") and len(deposit_rows(alice)) == 1
    # And the database itself refuses a second row for the event.
    with pytest.raises(IntegrityError), transaction.atomic():
        ChainDeposit.objects.create(
            deployment=chain.deployment,
            tx_hash=entries[0].tx_hash,
            log_index=entries[0].log_index,
            block_number=1,
            block_hash="0x",
            token=entries[0].token,
            sender=funded,
            trader_ref=alice.trader_id,
            units=1,
            status="SEEN",
        )


def test_a_deposit_reorganised_away_is_never_credited(chain, funded, alice):
    before = approved_then_snapshot(chain, funded, "300")
    chain.deposit(funded, alice.trader_id, "300", approve=False)
    chain.mine(1)
    poll(chain)
    assert ChainDeposit.objects.get().status == "SEEN"
    # The blocks that held it are replaced by others without it, longer than before.
    chain.revert(before)
    chain.mine(6)
    done = poll(chain)
    assert done.credited == [] and done.dropped == 1
    assert ChainDeposit.objects.get().status == "DROPPED"
    chain.mine(6)
    assert poll(chain).credited == []
    assert real_usdc(alice) == 0 and not Transfer.objects.filter(trader=alice).exists()


def test_a_reorganised_deposit_mined_again_is_credited_once(chain, funded, alice):
    before = approved_then_snapshot(chain, funded, "40")
    chain.w3.provider.make_request("evm_setAutomine", [False])
    try:
        tx_hash = chain.vault.functions.deposit(
            chain.token("USDC").address, chain.units("USDC", "40"), alice.trader_id.bytes
        ).transact({"from": funded})
        raw = chain.w3.eth.get_raw_transaction(tx_hash)
        chain.mine(2)
        poll(chain)
        seen = ChainDeposit.objects.get()
        assert seen.status == "SEEN"
        # Replaced by blocks without it, then mined again later in another block.
        chain.revert(before)
        chain.mine(3)
        poll(chain)
        assert ChainDeposit.objects.get().status == "DROPPED"
        chain.w3.eth.send_raw_transaction(raw)
        chain.mine(1)
    finally:
        chain.w3.provider.make_request("evm_setAutomine", [True])
    poll(chain)
    row = ChainDeposit.objects.get()
    assert row.status == "SEEN" and row.block_number != seen.block_number
    chain.mine(3)
    assert len(poll(chain).credited) == 1
    assert real_usdc(alice) == D("40") and len(deposit_rows(alice)) == 1


def test_a_reorganisation_deeper_than_the_confirmations_stops_the_watcher(chain, funded, alice):
    before = approved_then_snapshot(chain, funded, "10")
    chain.deposit(funded, alice.trader_id, "10", approve=False)
    chain.mine(3)
    assert len(poll(chain).credited) == 1
    chain.revert(before)
    chain.mine(10)
    with pytest.raises(DeepReorg):
        poll(chain)


def test_a_restart_in_the_middle_resumes_after_the_last_finished_range(
    chain, funded, alice, bob, monkeypatch
):
    chain.deposit(funded, alice.trader_id, "1")
    chain.deposit(funded, bob.trader_id, "2")
    chain.deposit(funded, alice.trader_id, "4")
    chain.mine(3)
    # One block per range, and the process dies while crediting the second deposit.
    monkeypatch.setattr(chain_deposits, "BLOCK_RANGE", 1)
    real_confirm, calls = vault.deposit_confirm, []

    def dies_on_the_second(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise SystemExit("killed")
        return real_confirm(**kwargs)

    monkeypatch.setattr(vault, "deposit_confirm", dies_on_the_second)
    with pytest.raises(SystemExit):
        poll(chain)
    assert real_usdc(alice) == D("1") and real_usdc(bob) == 0
    cursor = ChainDeployment.objects.get(pk=chain.deployment.pk).scanned_block
    assert ChainDeposit.objects.filter(status="CREDITED").count() == 1
    # A new process: the same command the Procfile runs.
    monkeypatch.setattr(vault, "deposit_confirm", real_confirm)
    call_command("runchainwatch", "--once")
    assert ChainDeployment.objects.get(pk=chain.deployment.pk).scanned_block > cursor
    assert (real_usdc(alice), real_usdc(bob)) == (D("5"), D("2"))
    assert len(deposit_rows(alice)) == 2 and len(deposit_rows(bob)) == 1


def test_a_deposit_to_an_unknown_trader_is_held_for_staff(chain, funded):
    import uuid

    chain.deposit(funded, uuid.uuid4(), "70")
    chain.mine(3)
    done = poll(chain)
    assert done.credited == [] and [r.status for r in done.held] == ["HELD"]
    assert not LedgerEntry.objects.filter(reason="DEPOSIT").exists()


def test_a_notice_of_the_same_transaction_is_the_deposit_credited(chain, funded, alice, bob):
    receipt = chain.deposit(funded, alice.trader_id, "12.5")
    tx_hash = receipt["transactionHash"].to_0x_hex()
    r = client_for(alice).post(
        "/api/v1/vault/deposit",
        {"asset": "USDC", "amount": "12.5", "txHash": tx_hash},
        format="json",
    )
    assert r.status_code == 201
    # Bob claims Alice's transaction: his notice is not what the chain says.
    r = client_for(bob).post(
        "/api/v1/vault/deposit",
        {"asset": "USDC", "amount": "12.5", "txHash": tx_hash},
        format="json",
    )
    assert r.status_code == 409
    chain.mine(3)
    poll(chain)
    assert real_usdc(alice) == D("12.5")
    (transfer,) = Transfer.objects.filter(kind="DEPOSIT")
    assert transfer.status == "CONFIRMED" and transfer.chain_deposit.status == "CREDITED"


def test_staff_cannot_credit_a_notice_for_a_transaction_the_chain_credited(
    chain, funded, alice, bob
):
    # Bob's notice arrives first, naming Alice's transaction with his own id.
    receipt = chain.deposit(funded, alice.trader_id, "8")
    tx_hash = receipt["transactionHash"].to_0x_hex()
    client_for(bob).post(
        "/api/v1/vault/deposit", {"asset": "USDC", "amount": "8", "txHash": tx_hash}, format="json"
    )
    chain.mine(3)
    poll(chain)
    assert real_usdc(alice) == D("8")
    with pytest.raises(ExchangeError, match="another deposit"):
        vault.deposit_confirm(tx_hash=tx_hash, by=None)
    assert real_usdc(bob) == 0


def test_the_vault_endpoint_says_where_to_send(chain, alice):
    body = client_for(alice).get("/api/v1/vault").json()
    assert body["chainId"] == chain.w3.eth.chain_id
    assert body["vaultAddress"] == chain.deployment.vault
    assert body["confirmations"] == 3
    assert {a["asset"]: (a["token"], a["decimals"]) for a in body["assets"]} == {
        "USDC": (chain.deployment.tokens["USDC"]["address"], 6),
        "CXPT": (chain.deployment.tokens["CXPT"]["address"], 18),
    }


def test_without_a_chain_the_vault_endpoint_says_so(alice, settings):
    settings.CHAIN_RPC_URL = ""
    body = client_for(alice).get("/api/v1/vault").json()
    assert body["vaultAddress"] is None and body["chainId"] is None
    assert [a["token"] for a in body["assets"]] == [None, None]


def test_the_admin_shows_each_deposit_on_chain(chain, funded, alice):
    import uuid

    from django.test import Client

    from accounts.models import User

    chain.deposit(funded, alice.trader_id, "5")
    chain.deposit(funded, uuid.uuid4(), "6")
    chain.mine(3)
    poll(chain)
    root = User.objects.create_superuser("root", password="pw-root-1234")
    staff = Client()
    staff.force_login(root)
    deposits = staff.get("/admin/accounts/deposit/").content.decode()
    assert "CREDITED in block" in deposits
    events = staff.get("/admin/accounts/chaindeposit/").content.decode()
    assert "HELD" in events and "no trader has this id" in events
    assert staff.get("/admin/accounts/chaindeployment/").status_code == 200


def test_staff_release_a_held_deposit_once(chain, funded, alice):
    import uuid

    from django.core.management import CommandError

    chain.deposit(funded, uuid.uuid4(), "70")
    chain.mine(3)
    (held,) = poll(chain).held
    call_command("release_held_deposit", str(held.pk), alice.username)
    held.refresh_from_db()
    assert held.status == "CREDITED" and held.transfer.trader == alice
    assert real_usdc(alice) == D("70")
    with pytest.raises(CommandError, match="DEPOSIT_NOT_HELD"):
        call_command("release_held_deposit", str(held.pk), alice.username)
    assert real_usdc(alice) == D("70") and len(deposit_rows(alice)) == 1
