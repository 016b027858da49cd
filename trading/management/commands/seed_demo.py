"""Demo markets (both modes' books), a funded demo trader and a few days of prints on
every book (the charts' history). Safe to run twice."""

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from ledger.models import Balance, LedgerEntry, LedgerReason, Mode
from ledger.services import (
    FEE_ACCOUNT,
    INSURANCE_ACCOUNT,
    Posting,
    balances_ensure,
    balances_lock,
    ledger_apply,
    system_account,
)
from trading.models import IndexPrice
from trading.services.demo_history import demo_history_backfill
from trading.services.prices import index_set
from trading.services.series import dated_specs, market_ensure

D = Decimal


def demo_markets() -> list[dict]:
    now = timezone.now()
    perp = {"tick_size": D("0.5"), "lot_size": D("0.001"), "min_notional": D("10")}
    # Demo perps fund every 15 minutes, so that a new user sees one.
    return [
        {
            "symbol": "BTC-PERP",
            "kind": "PERP",
            "base": "BTC",
            "underlying": "BTC",
            "max_leverage": D("50"),
            **perp,
            "mark_price": D("64000"),
            "index_price": D("64000"),
            "funding_interval": 900,
        },
        {
            "symbol": "ETH-PERP",
            "kind": "PERP",
            "base": "ETH",
            "underlying": "ETH",
            "tick_size": D("0.05"),
            "lot_size": D("0.01"),
            "min_notional": D("10"),
            "max_leverage": D("25"),
            "mark_price": D("3200"),
            "index_price": D("3200"),
            "funding_interval": 900,
        },
        *dated_specs(now),
        {
            "symbol": "CXPT-USDC",
            "kind": "SPOT",
            "base": "CXPT",
            "underlying": "CXPT",
            "tick_size": D("0.0001"),
            "lot_size": D("0.1"),
            "min_notional": D("1"),
            "max_leverage": D("1"),
            "index_price": D("1.25"),
            "price_band": D("0.1"),
            "market_slippage": D("0.1"),
        },
    ]


class Command(BaseCommand):
    help = (
        "Create the demo markets, a funded demo trader and a few days of prints on each "
        "book that has none (idempotent)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--history-days",
            type=int,
            default=7,
            help="days of prints to write on each book without trades (0: none)",
        )

    @transaction.atomic
    def handle(self, *args, history_days: int = 7, **options) -> None:
        system_account(FEE_ACCOUNT)
        system_account(INSURANCE_ACCOUNT)
        for spec in demo_markets():
            market, created = market_ensure(spec)
            self.stdout.write(f"{'created' if created else 'exists '} {market.symbol}")
        for underlying, price in (("BTC", D("64000")), ("ETH", D("3200")), ("CXPT", D("1.25"))):
            if not IndexPrice.objects.filter(underlying=underlying).exists():
                index_set(underlying=underlying, price=price, source="seed")
        demo, created = get_user_model().objects.get_or_create(username="demo")
        if created:
            demo.set_password("demo-password")
            demo.save()
        funded = LedgerEntry.objects.filter(trader=demo, reason=LedgerReason.DEPOSIT).exists()
        if not funded:
            grants = [
                ("USDC", Mode.PAPER, D("1000000")),
                ("CXPT", Mode.PAPER, D("100000")),
                ("USDC", Mode.REAL, D("1000000")),
                ("CXPT", Mode.REAL, D("100000")),
            ]
            keys = [(demo.pk, a, m) for a, m, _ in grants]
            balances_ensure(keys)
            rows = balances_lock(keys)
            ledger_apply(
                [
                    Posting(demo.pk, a, m, amt, LedgerReason.DEPOSIT, "seed_demo")
                    for a, m, amt in grants
                ],
                rows,
            )
            Balance.objects.bulk_update(rows.values(), ["total"])
        if history_days > 0:
            written = demo_history_backfill(days=history_days)
            self.stdout.write(f"{written} past trades written ({history_days} days)")
        self.stdout.write(
            self.style.SUCCESS("demo markets ready; demo trader: demo / demo-password")
        )
