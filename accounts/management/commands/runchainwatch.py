"""manage.py runchainwatch — the chain watcher (the `chainwatch` role): follows the
chain's blocks, credits the vault contract's deposits once they are final, and pays the
withdrawals staff approved. Resumes where it stopped (docs/accounts.md)."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from requests.exceptions import RequestException
from web3.exceptions import Web3Exception

from accounts.evm import deployment_current, hot_wallet, web3_connect
from accounts.services.chain_deposits import ChainMoved, DeepReorg, chain_deposits_poll
from accounts.services.chain_withdrawals import withdrawals_pay, withdrawals_to_send

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Watch the vault contract: credit final deposits, pay approved withdrawals."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="one poll, then exit")

    def handle(self, *args, once: bool, **options) -> None:
        if not settings.CHAIN_RPC_URL:
            raise CommandError("CHAIN_RPC_URL is not set: there is no chain to watch")
        w3 = web3_connect()
        while True:
            try:
                self.poll(w3)
            except DeepReorg as e:
                # What was credited cannot be taken back by a program: staff decide.
                log.critical("chain watcher stopped: %s", e)
                raise CommandError(str(e)) from e
            except ChainMoved:
                log.info("the chain moved while it was read; reading again")
            except (RequestException, Web3Exception, OSError) as e:
                log.warning("chain node: %s", e)
            except Exception:
                # Whatever failed rolled back its own transaction; the next poll starts
                # again from what was committed.
                log.exception("chain watcher poll failed")
            if once:
                return
            time.sleep(settings.CHAIN_POLL_SECONDS)

    def poll(self, w3) -> None:
        deployment = deployment_current()
        if deployment is None:
            log.warning(
                "no vault deployed on chain %s: run manage.py chain_deploy", settings.CHAIN_ID
            )
            return
        poll = chain_deposits_poll(
            w3=w3, deployment=deployment, confirmations=settings.CHAIN_CONFIRMATIONS
        )
        for row in poll.credited:
            log.info(
                "credited deposit %s#%s: %s %s to transfer %s",
                row.tx_hash,
                row.log_index,
                row.transfer.amount,
                row.asset,
                row.transfer_id,
            )
        if withdrawals_to_send():
            signer = hot_wallet()
            if signer is None:
                log.error("withdrawals wait: CHAIN_WITHDRAWAL_KEY is not set")
                return
            withdrawals_pay(w3=w3, deployment=deployment, signer=signer)
