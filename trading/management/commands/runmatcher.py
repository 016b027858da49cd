"""The matcher role: `manage.py runmatcher [--books SYM,SYM]`."""

import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Run a matcher: the one writer of its books' orders (all books by default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--books",
            default="",
            help="comma-separated market symbols this matcher owns (a shard); all by default",
        )
        parser.add_argument("--duration", type=float, default=0, help="stop after N seconds")

    def handle(self, *args, **options) -> None:
        from trading.matcher.server import Matcher

        if not settings.REDIS_URL:
            raise CommandError(
                "the matcher takes its requests over Redis: set REDIS_URL (without Redis "
                "the matcher runs inside the web process, MATCHER=embedded)"
            )
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
            raise CommandError("the matcher's leases are PostgreSQL advisory locks")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        symbols = [s for s in options["books"].split(",") if s]
        Matcher(symbols or None).serve(duration=options["duration"])
