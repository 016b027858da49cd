from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dexsite.api import MONEY_LIMIT
from dexsite.errors import ExchangeError
from ledger.models import MONEY
from trading.services.prices import index_set, marks_refresh

# The index column's decimal places.
PRICE_PLACES = MONEY["decimal_places"]


class Command(BaseCommand):
    help = "Set the oracle index price of an underlying (e.g. BTC 64000)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("symbol", help="underlying (BTC) or a market symbol (BTC-PERP)")
        parser.add_argument("price")

    def handle(self, *args, symbol: str, price: str, **options) -> None:
        from trading.models import Market

        market = Market.objects.filter(symbol=symbol).first()
        underlying = market.underlying if market else symbol.upper()
        if not Market.objects.filter(underlying=underlying).exists():
            raise CommandError(f"no market trades {underlying}")
        try:
            value = Decimal(price)
        except InvalidOperation as e:
            raise CommandError(f"not a price: {price}") from e
        if not value.is_finite() or value > MONEY_LIMIT:
            raise CommandError(f"not a price: {price} (at most {MONEY_LIMIT:E})")
        if value.as_tuple().exponent < -PRICE_PLACES:
            raise CommandError(f"not a price: {price} (at most {PRICE_PLACES} decimal places)")
        try:
            index_set(underlying=underlying, price=value, source="manual")
        except ExchangeError as e:
            raise CommandError(e.message) from e
        # The marks follow at once, as the clock would make them on its next tick:
        # margin, funding and liquidations see the new price now.
        marked = marks_refresh()
        self.stdout.write(f"index {underlying} = {value}; {marked} books marked")
