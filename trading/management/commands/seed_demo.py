"""Demo markets (both modes' books) and a funded demo trader. Safe to run twice."""

from datetime import timedelta
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.models import Balance, LedgerEntry, LedgerReason, Mode, User
from accounts.services import Posting, balances_ensure, balances_lock, ledger_apply, system_account
from trading.models import Book, Market

D = Decimal


def demo_markets() -> list[dict]:
    now = timezone.now()
    # Dated contracts roll: the next Friday 08:00 UTC at least a week away.
    expiry = (now + timedelta(days=7 + (4 - now.weekday()) % 7)).replace(
        hour=8, minute=0, second=0, microsecond=0
    )
    tag = expiry.strftime("%d%b%y").upper()
    perp = {"tick_size": D("0.5"), "lot_size": D("0.001"), "min_notional": D("10")}
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
        },
        {
            "symbol": f"BTC-{tag}",
            "kind": "FUTURE",
            "base": "BTC",
            "underlying": "BTC",
            "max_leverage": D("20"),
            "expiry_at": expiry,
            **perp,
            "mark_price": D("64200"),
            "index_price": D("64000"),
        },
        {
            "symbol": f"BTC-{tag}-70000-C",
            "kind": "OPTION",
            "base": "BTC",
            "underlying": "BTC",
            "tick_size": D("5"),
            "lot_size": D("0.01"),
            "min_notional": D("1"),
            "max_leverage": D("10"),
            "expiry_at": expiry,
            "strike": D("70000"),
            "option_type": "CALL",
            "mark_price": D("900"),
            "index_price": D("64000"),
        },
        {
            "symbol": f"BTC-{tag}-60000-P",
            "kind": "OPTION",
            "base": "BTC",
            "underlying": "BTC",
            "tick_size": D("5"),
            "lot_size": D("0.01"),
            "min_notional": D("1"),
            "max_leverage": D("10"),
            "expiry_at": expiry,
            "strike": D("60000"),
            "option_type": "PUT",
            "mark_price": D("700"),
            "index_price": D("64000"),
        },
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
        },
    ]


class Command(BaseCommand):
    help = "Create the demo markets and a funded demo trader (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        system_account(User.FEE_ACCOUNT)
        system_account(User.INSURANCE_ACCOUNT)
        for spec in demo_markets():
            symbol = spec.pop("symbol")
            market, created = Market.objects.get_or_create(symbol=symbol, defaults=spec)
            for mode in Mode.values:
                Book.objects.get_or_create(market=market, mode=mode)
            self.stdout.write(f"{'created' if created else 'exists '} {symbol}")
        demo, created = User.objects.get_or_create(username="demo")
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
        self.stdout.write(
            self.style.SUCCESS("demo markets ready; demo trader: demo / demo-password")
        )
