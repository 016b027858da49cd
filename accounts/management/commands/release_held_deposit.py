"""manage.py release_held_deposit ID USERNAME — credit a vault deposit the watcher held
(its trader id named no one) to the trader staff found it was meant for, once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services.chain_deposits import held_deposit_release
from dexsite.errors import ExchangeError
from trading.presenters import dec


class Command(BaseCommand):
    help = "Credit a held vault deposit (admin: Chain deposits, HELD) to a trader, once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("chain_deposit_id", type=int)
        parser.add_argument("username")

    def handle(self, *args, chain_deposit_id: int, username: str, **options) -> None:
        trader = get_user_model().objects.filter(username=username, is_system=False).first()
        if trader is None:
            raise CommandError(f"no trader {username!r}")
        try:
            row = held_deposit_release(chain_deposit_id=chain_deposit_id, trader=trader, by=None)
        except ExchangeError as e:
            raise CommandError(f"{e.code}: {e.message}") from e
        self.stdout.write(
            f"credited {dec(row.transfer.amount)} {row.asset} to {username} (deposit #{row.transfer_id})"
        )
