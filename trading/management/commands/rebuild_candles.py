"""Rebuild every candle from the recorded trades."""

from django.core.management.base import BaseCommand
from django.db import transaction

from trading.candles import candles_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild every candle (minute, hour, day) from the recorded trades, in one "
        "transaction. Run it while nothing trades: trades recorded meanwhile would be "
        "counted twice or not at all."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--chunk", type=int, default=10_000, help="trades read at a time")

    def handle(self, *args, chunk: int, **options) -> None:
        with transaction.atomic():
            read = candles_rebuild(chunk=chunk)
        self.stdout.write(f"{read} trade(s) summed up into candles")
