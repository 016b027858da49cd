from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from trading.models import Book, MarketKind
from trading.services.funding import funding_sample, funding_settle


class Command(BaseCommand):
    help = "Settle one funding interval of perpetual books now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--market", help="symbol; default every perpetual")

    def handle(self, *args, market: str | None = None, **options) -> None:
        books = Book.objects.filter(market__kind=MarketKind.PERP)
        if market:
            books = books.filter(market__symbol=market)
            if not books.exists():
                raise CommandError(f"no perpetual {market}")
        now = timezone.now()
        funding_sample(now)
        for book in books.select_related("market"):
            # Due now: the interval ends at this moment.
            Book.objects.filter(pk=book.pk).update(next_funding_at=now)
            event = funding_settle(book_id=book.pk, now=now)
            if event is None:
                self.stdout.write(f"{book}: skipped (stale index or already settled)")
            else:
                self.stdout.write(
                    f"{book}: rate {event.rate} on {event.positions} positions, "
                    f"paid {event.paid}, insurance {event.insurance_remainder}"
                )
