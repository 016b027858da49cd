"""Deploying the vault and its tokens (`manage.py chain_deploy`), safe to run twice: a
deployment whose vault still has code on the chain is kept as it is."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from web3 import Web3

from accounts.evm import artifact, deployment_current, token_contract, transact, vault_contract
from accounts.models import ChainDeployment, LinkedWallet, User

# The development chain's test tokens: what the vault takes (settings.VAULT_ASSETS).
TEST_TOKENS = {"USDC": ("Test USD Coin", 6), "CXPT": ("Test CXPT", 18)}
# What the demo trader's development wallet starts with.
DEMO_FUNDS = {"USDC": Decimal("100000"), "CXPT": Decimal("1000")}
SIGNER_GAS_FUNDS = Web3.to_wei(10, "ether")


@dataclass
class Deployed:
    deployment: ChainDeployment
    created: bool


def _deploy(w3: Web3, name: str, sender, *args) -> str:
    spec = artifact(name)
    factory = w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
    return transact(w3, factory.constructor(*args), sender)["contractAddress"]


def chain_deploy(
    *, w3: Web3, deployer, signer: str, tokens: dict[str, str] | None = None
) -> Deployed:
    """The vault (paying withdrawals only from `signer`) listing the assets' tokens:
    `tokens` maps an asset to an existing token's address; an asset not given gets a
    test token (development chains only). Recorded as the chain's deployment in use."""
    chain_id = w3.eth.chain_id
    current = deployment_current(chain_id)
    if current is not None and w3.eth.get_code(current.vault):
        return Deployed(current, False)
    tokens = dict(tokens or {})
    missing = [a for a in settings.VAULT_ASSETS if a not in tokens]
    if missing and not settings.CHAIN_DEVELOPMENT:
        raise ValueError(f"token addresses needed for {', '.join(missing)}")
    for asset in missing:
        name, decimals = TEST_TOKENS[asset]
        tokens[asset] = _deploy(w3, "TestToken", deployer, name, asset, decimals)
    vault_address = _deploy(w3, "Vault", deployer, Web3.to_checksum_address(signer))
    deployment = ChainDeployment(chain_id=chain_id, vault=vault_address, signer=signer)
    vault = vault_contract(w3, deployment)
    specs = {}
    for asset, address in tokens.items():
        address = Web3.to_checksum_address(address)
        transact(w3, vault.functions.setToken(address, True), deployer)
        decimals = token_contract(w3, address).functions.decimals().call()
        specs[asset] = {"address": address, "decimals": decimals}
    # The watcher starts after the vault's own block: no deposit can be older.
    block = w3.eth.get_block("latest")
    deployment.tokens = specs
    deployment.deployed_block = deployment.scanned_block = block["number"]
    deployment.scanned_hash = block["hash"].to_0x_hex()
    deployment.save()
    return Deployed(deployment, True)


def dev_wallet_fund(
    *, w3: Web3, deployment: ChainDeployment, deployer, address: str, trader: User | None
) -> None:
    """A development chain only: mint the demo funds to `address` and link it to
    `trader` (the node holds its key, so no signature is asked for)."""
    assert settings.CHAIN_DEVELOPMENT
    for asset, amount in DEMO_FUNDS.items():
        spec = deployment.tokens[asset]
        units = int(amount.scaleb(spec["decimals"]))
        transact(w3, token_contract(w3, spec["address"]).functions.mint(address, units), deployer)
    if trader is not None:
        with transaction.atomic():
            taken = LinkedWallet.objects.filter(
                address__iexact=address, unlinked_at__isnull=True
            ).exists()
            if not taken:
                LinkedWallet.objects.create(trader=trader, address=address)


def gas_fund(*, w3: Web3, deployer, address: str) -> None:
    """A development chain only: ether for the signer's gas."""
    if w3.eth.get_balance(address) < SIGNER_GAS_FUNDS // 2:
        w3.eth.wait_for_transaction_receipt(
            w3.eth.send_transaction({"from": deployer, "to": address, "value": SIGNER_GAS_FUNDS})
        )
