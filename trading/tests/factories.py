from datetime import timedelta
from decimal import Decimal

import factory
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from ledger.models import Balance, LedgerReason
from ledger.services import Posting, balances_ensure, balances_lock, ledger_apply
from trading.models import Book, Market


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"trader{n}")
    password = factory.PostGenerationMethodCall("set_password", "pw-for-tests-1")


class MarketFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Market
        django_get_or_create = ("symbol",)
        skip_postgeneration_save = True

    symbol = "BTC-PERP"
    kind = "PERP"
    base = "BTC"
    quote = "USDC"
    underlying = "BTC"
    tick_size = Decimal("0.5")
    lot_size = Decimal("0.001")
    min_notional = Decimal("10")
    max_leverage = Decimal("20")
    maker_fee = Decimal("0.0002")
    taker_fee = Decimal("0.0005")
    mark_price = Decimal("64000")

    @factory.post_generation
    def books(obj, create, extracted, **kwargs):
        for mode in ("REAL", "PAPER"):
            Book.objects.get_or_create(market=obj, mode=mode)


def spot_market(symbol: str = "CXPT-USDC") -> Market:
    return MarketFactory(
        symbol=symbol,
        kind="SPOT",
        base="CXPT",
        underlying="CXPT",
        tick_size=Decimal("0.0001"),
        lot_size=Decimal("0.1"),
        min_notional=Decimal("1"),
        max_leverage=Decimal("1"),
        mark_price=None,
    )


def call_market(
    symbol: str, strike: str = "64000", expiry_in: timedelta = timedelta(days=7)
) -> Market:
    """A BTC call at `strike` (5 tick, 0.01 lot, IV 50%) expiring `expiry_in` from now."""
    return MarketFactory(
        symbol=symbol,
        kind="OPTION",
        option_type="CALL",
        strike=Decimal(strike),
        tick_size=Decimal("5"),
        lot_size=Decimal("0.01"),
        min_notional=Decimal("1"),
        mark_iv=Decimal("0.5"),
        mark_price=None,
        expiry_at=timezone.now() + expiry_in,
    )


def fund(user: User, amount: str | Decimal, asset: str = "USDC", mode: str = "PAPER") -> None:
    """Credit a balance the way money enters: a deposit ledger row."""
    key = (user.pk, asset, mode)
    with transaction.atomic():
        _deposit(user, key, Decimal(amount))


def _deposit(user: User, key: tuple, amount: Decimal) -> None:
    asset, mode = key[1], key[2]
    balances_ensure([key])
    rows = balances_lock([key])
    ledger_apply(
        [Posting(user.pk, asset, mode, Decimal(amount), LedgerReason.DEPOSIT, "test")], rows
    )
    Balance.objects.bulk_update(rows.values(), ["total"])


def balance(user: User, asset: str = "USDC", mode: str = "PAPER") -> Balance:
    return Balance.objects.get(trader=user, asset=asset, mode=mode)
