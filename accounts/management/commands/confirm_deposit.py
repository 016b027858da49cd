"""manage.py confirm_deposit TXHASH — credit a pending deposit, once.

The default chain adapter leaves confirmation to staff: check the transaction on a block
explorer (amount, asset, enough confirmations), then run this or use the admin action.
"""

from django.core.management.base import BaseCommand, CommandError

from accounts.services.vault import deposit_confirm
from dexsite.errors import ExchangeError
from trading.presenters import dec


class Command(BaseCommand):
    help = "Confirm a pending vault deposit by its transaction hash: credits the trader once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("tx_hash", help="0x and 64 hex digits")

    def handle(self, *args, tx_hash: str, **options) -> None:
        try:
            deposit = deposit_confirm(tx_hash=tx_hash, by=None)
        except ExchangeError as e:
            raise CommandError(f"{e.code}: {e.message}") from e
        self.stdout.write(
            f"confirmed deposit #{deposit.pk}: {dec(deposit.amount)} {deposit.asset} "
            f"to {deposit.trader.username}"
        )
