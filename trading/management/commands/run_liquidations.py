from django.core.management.base import BaseCommand

from trading.services.liquidation import liquidations_run


class Command(BaseCommand):
    help = "Liquidate every account below maintenance margin now (idempotent)."

    def handle(self, *args, **options) -> None:
        done = liquidations_run()
        for liq in done:
            self.stdout.write(
                f"liquidated {liq.trader_id}/{liq.mode}: equity {liq.equity} < {liq.maintenance}, "
                f"fee {liq.fee}, insurance paid {liq.insurance_paid}, ADL {liq.adl_qty}"
            )
        self.stdout.write(f"{len(done)} account(s) liquidated")
