"""A real local chain for the vault's tests: one anvil per test session on a free port
(the binary of the pinned npm package), fresh contracts for each test."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from eth_account import Account
from web3 import Web3

from accounts.evm import token_contract, transact, vault_contract, web3_connect
from accounts.models import ChainDeployment
from accounts.services.chain_deploy import chain_deploy, gas_fund

ANVIL = Path(django_settings.BASE_DIR) / "node_modules" / ".bin" / "anvil"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def anvil_url():
    if not ANVIL.exists():
        pytest.fail("anvil is missing: `make install-js` installs it")
    port = _free_port()
    # Blocks are mined on each transaction (and by the tests, for confirmations).
    proc = subprocess.Popen(
        [str(ANVIL), "--port", str(port), "--host", "127.0.0.1", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    w3 = web3_connect(url)
    deadline = time.monotonic() + 30
    while not w3.is_connected():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("anvil did not start")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@dataclass
class Chain:
    w3: Web3
    deployment: ChainDeployment
    deployer: str
    hot_wallet: object

    @property
    def vault(self):
        return vault_contract(self.w3, self.deployment)

    def token(self, asset: str):
        return token_contract(self.w3, self.deployment.tokens[asset]["address"])

    def units(self, asset: str, amount) -> int:
        from decimal import Decimal

        return int(Decimal(str(amount)).scaleb(self.deployment.tokens[asset]["decimals"]))

    def token_at(self, deployment: ChainDeployment, asset: str):
        return token_contract(self.w3, deployment.tokens[asset]["address"])

    def account(self, n: int) -> str:
        return self.w3.eth.accounts[n]

    def mint(self, asset: str, to: str, amount) -> None:
        transact(
            self.w3, self.token(asset).functions.mint(to, self.units(asset, amount)), self.deployer
        )

    def approve(self, sender: str, amount, asset: str = "USDC") -> None:
        units = self.units(asset, amount)
        transact(self.w3, self.token(asset).functions.approve(self.deployment.vault, units), sender)

    def deposit(self, sender: str, trader_id, amount, asset: str = "USDC", approve=True) -> dict:
        """Approve, then deposit: the two transactions a wallet sends."""
        if approve:
            self.approve(sender, amount, asset)
        call = self.vault.functions.deposit(
            self.token(asset).address, self.units(asset, amount), trader_id.bytes
        )
        return transact(self.w3, call, sender)

    def mine(self, blocks: int = 1) -> None:
        self.w3.provider.make_request("anvil_mine", [hex(blocks)])

    def snapshot(self) -> str:
        return self.w3.provider.make_request("evm_snapshot", [])["result"]

    def revert(self, snapshot_id: str) -> None:
        assert self.w3.provider.make_request("evm_revert", [snapshot_id])["result"] is True

    def balance(self, asset: str, address: str):
        from decimal import Decimal

        units = self.token(asset).functions.balanceOf(address).call()
        return Decimal(units).scaleb(-self.deployment.tokens[asset]["decimals"])


@pytest.fixture
def chain(anvil_url, settings, monkeypatch, db) -> Chain:
    """Fresh contracts on the session's anvil, the watcher's settings pointed at them,
    and a hot wallet whose key is only in this test's environment."""
    w3 = web3_connect(anvil_url)
    settings.CHAIN_RPC_URL = anvil_url
    settings.CHAIN_PUBLIC_RPC_URL = anvil_url
    settings.CHAIN_ID = w3.eth.chain_id
    settings.CHAIN_DEVELOPMENT = True
    settings.CHAIN_CONFIRMATIONS = 3
    settings.VAULT_CHAIN_ADAPTER = "accounts.chain.VaultWatcher"
    hot = Account.create()
    monkeypatch.setenv("CHAIN_WITHDRAWAL_KEY", hot.key.hex())
    monkeypatch.delenv("CHAIN_WITHDRAWAL_KEY_FILE", raising=False)
    deployer = w3.eth.accounts[0]
    # Each test its own contracts: a new deployment row is the one in use.
    ChainDeployment.objects.filter(chain_id=w3.eth.chain_id).delete()
    deployment = chain_deploy(w3=w3, deployer=deployer, signer=hot.address).deployment
    gas_fund(w3=w3, deployer=deployer, address=hot.address)
    return Chain(w3=w3, deployment=deployment, deployer=deployer, hot_wallet=hot)
