"""manage.py chain_deploy — deploy the vault (and, on a development chain, the test
USDC and CXPT), record the addresses, and on a development chain fund the demo trader's
wallet. Safe to run twice: a recorded vault that still has code is kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from eth_account import Account

from accounts.evm import hot_wallet, web3_connect
from accounts.services.chain_deploy import chain_deploy, dev_wallet_fund, gas_fund


class Command(BaseCommand):
    help = "Deploy the vault contract (and test tokens on a development chain); idempotent."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the node")
        for asset in settings.VAULT_ASSETS:
            parser.add_argument(f"--{asset.lower()}", help=f"address of the {asset} token")

    def handle(self, *args, wait: float, **options) -> None:
        if not settings.CHAIN_RPC_URL:
            raise CommandError("CHAIN_RPC_URL is not set: no chain to deploy to")
        w3 = web3_connect()
        deadline = time.monotonic() + wait
        while not w3.is_connected():
            if time.monotonic() > deadline:
                raise CommandError(f"no node answers at {settings.CHAIN_RPC_URL}")
            time.sleep(0.25)
        if w3.eth.chain_id != settings.CHAIN_ID:
            raise CommandError(
                f"the node is chain {w3.eth.chain_id}, CHAIN_ID says {settings.CHAIN_ID}"
            )
        dev = settings.CHAIN_DEVELOPMENT
        deployer_key = os.environ.get("CHAIN_DEPLOYER_KEY", "").strip()
        if deployer_key:
            deployer = Account.from_key(deployer_key)
        elif dev:
            # A development node holds its own unlocked accounts; the first deploys.
            deployer = w3.eth.accounts[0]
        else:
            raise CommandError("CHAIN_DEPLOYER_KEY is not set")
        signer = hot_wallet() or (self._dev_signer() if dev else None)
        if signer is None:
            raise CommandError("CHAIN_WITHDRAWAL_KEY (or CHAIN_WITHDRAWAL_KEY_FILE) is not set")
        tokens = {a: options[a.lower()] for a in settings.VAULT_ASSETS if options[a.lower()]}
        deployed = chain_deploy(w3=w3, deployer=deployer, signer=signer.address, tokens=tokens)
        deployment = deployed.deployment
        if dev:
            gas_fund(w3=w3, deployer=deployer, address=deployment.signer)
            if deployed.created:
                demo = get_user_model().objects.filter(username="demo").first()
                wallet = w3.eth.accounts[1]
                dev_wallet_fund(
                    w3=w3, deployment=deployment, deployer=deployer, address=wallet, trader=demo
                )
                self.stdout.write(f"demo wallet {wallet} funded (a development account)")
        verb = "deployed" if deployed.created else "already deployed"
        self.stdout.write(
            self.style.SUCCESS(f"vault {verb} at {deployment.vault} on chain {deployment.chain_id}")
        )
        for asset, spec in deployment.tokens.items():
            self.stdout.write(f"  {asset}: {spec['address']} ({spec['decimals']} decimals)")
        self.stdout.write(f"  withdrawal signer: {deployment.signer}")

    def _dev_signer(self):
        """A development chain's hot wallet: a fresh key written (owner-only) to the file
        CHAIN_WITHDRAWAL_KEY_FILE names, which the watcher reads."""
        path = os.environ.get("CHAIN_WITHDRAWAL_KEY_FILE", "").strip()
        if not path:
            return None
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        account = Account.create()
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(account.key.hex())
        return account
