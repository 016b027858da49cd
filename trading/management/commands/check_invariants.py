import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trading.invariants import check_invariants


def _read_ids(source: str) -> list[int]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        return [int(word) for word in text.replace(",", " ").split()]
    except ValueError as e:
        raise CommandError(f"order ids must be integers: {e}") from e


class Command(BaseCommand):
    help = (
        "Check the exchange's invariants (balances = ledger, funds conserved, locks = "
        "reservations, open interest balanced, no overfill, books whole and uncrossed; no "
        "account left insolvent by the liquidation sweeps, fills and marks within their "
        "bands). Prints each violation and exits with status 1 when there is any."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--acknowledged",
            metavar="FILE",
            help="order ids clients were given (whitespace or comma separated; - for "
            "stdin): each must exist",
        )

    def handle(self, *args, **options) -> None:
        acknowledged = _read_ids(options["acknowledged"]) if options["acknowledged"] else []
        problems = check_invariants(acknowledged=acknowledged)
        for problem in problems:
            self.stdout.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} invariant violation(s)")
        checked = f", {len(acknowledged)} acknowledged order(s) found" if acknowledged else ""
        self.stdout.write(f"0 violations{checked}")
