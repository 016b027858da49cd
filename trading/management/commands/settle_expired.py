from django.core.management.base import BaseCommand

from trading.services.expiry import settle_expired


class Command(BaseCommand):
    help = "Settle futures and options past their expiry."

    def handle(self, *args, **options) -> None:
        done = settle_expired()
        for s in done:
            self.stdout.write(f"settled {s.market.symbol} at {s.price}")
        self.stdout.write(f"{len(done)} market(s) settled")
