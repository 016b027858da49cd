from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dexsite.errors import ExchangeError
from trading.services.prices import index_set


class Command(BaseCommand):
    help = "Set the oracle index price of an underlying (e.g. BTC 64000)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("symbol", help="underlying (BTC) or a market symbol (BTC-PERP)")
        parser.add_argument("price")

    def handle(self, *args, symbol: str, price: str, **options) -> None:
        from trading.models import Market

        market = Market.objects.filter(symbol=symbol).first()
        underlying = market.underlying if market else symbol.upper()
        try:
            value = Decimal(price)
        except InvalidOperation as e:
            raise CommandError(f"not a price: {price}") from e
        if not value.is_finite():
            raise CommandError(f"not a price: {price}")
        try:
            index_set(underlying=underlying, price=value, source="manual")
        except ExchangeError as e:
            raise CommandError(e.message) from e
        self.stdout.write(f"index {underlying} = {value}")
