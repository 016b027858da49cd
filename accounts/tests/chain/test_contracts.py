"""The vault contract and the test token on a real anvil."""

import uuid

import pytest
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from accounts.evm import transact

pytestmark = pytest.mark.django_db


def test_deposit_emits_the_trader_and_what_the_vault_received(chain):
    trader = uuid.uuid4()
    sender = chain.account(1)
    chain.mint("USDC", sender, "500")
    receipt = chain.deposit(sender, trader, "250.5")
    (event,) = chain.vault.events.Deposit().process_receipt(receipt, errors=DISCARD)
    assert event.args.traderId == trader.bytes
    assert event.args.amount == 250_500_000  # 6 decimals
    assert event.args["from"] == sender
    assert event.args.token == chain.token("USDC").address
    assert chain.balance("USDC", chain.deployment.vault) == 250.5
    assert chain.token("USDC").functions.decimals().call() == 6


def test_a_token_the_vault_does_not_list_is_refused(chain):
    other = chain.w3.eth.contract(abi=chain.token("USDC").abi)
    from accounts.evm import artifact

    factory = chain.w3.eth.contract(abi=other.abi, bytecode=artifact("TestToken")["bytecode"])
    fake = transact(chain.w3, factory.constructor("Fake", "USDC", 6), chain.account(1))
    with pytest.raises(ContractLogicError):
        chain.vault.functions.deposit(fake["contractAddress"], 1, uuid.uuid4().bytes).call(
            {"from": chain.account(1)}
        )


def test_only_the_signer_withdraws_and_each_id_pays_once(chain):
    sender, to = chain.account(1), chain.account(2)
    chain.mint("USDC", sender, "100")
    chain.deposit(sender, uuid.uuid4(), "100")
    usdc = chain.token("USDC").address
    withdraw = chain.vault.functions.withdraw(usdc, to, 10_000_000, 7)
    with pytest.raises(ContractLogicError):
        withdraw.call({"from": sender})
    transact(chain.w3, withdraw, chain.hot_wallet)
    assert chain.balance("USDC", to) == 10
    assert chain.vault.functions.paid(7).call()
    with pytest.raises(ContractLogicError):
        withdraw.call({"from": chain.hot_wallet.address})
    # More than the vault holds: refused whole.
    with pytest.raises(ContractLogicError):
        chain.vault.functions.withdraw(usdc, to, 91_000_000, 8).call(
            {"from": chain.hot_wallet.address}
        )


def test_deploy_is_safe_to_run_twice(chain, anvil_url, settings, monkeypatch, tmp_path):
    from django.core.management import call_command

    from accounts.models import ChainDeployment, LinkedWallet, User

    demo = User.objects.create_user("demo", password="demo-password-1")
    monkeypatch.delenv("CHAIN_WITHDRAWAL_KEY")
    monkeypatch.setenv("CHAIN_WITHDRAWAL_KEY_FILE", str(tmp_path / "withdrawal.key"))
    ChainDeployment.objects.all().delete()
    call_command("chain_deploy")
    first = ChainDeployment.objects.get()
    wallet = chain.account(1)
    assert LinkedWallet.objects.get(trader=demo).address == wallet
    held = chain.token_at(first, "USDC").functions.balanceOf(wallet).call()
    call_command("chain_deploy")
    assert ChainDeployment.objects.get() == first
    assert chain.token_at(first, "USDC").functions.balanceOf(wallet).call() == held
    assert (tmp_path / "withdrawal.key").stat().st_mode & 0o077 == 0
