"""Users, balances and the append-only ledger.

A balance row is a running total of its ledger rows (checked by the invariant tests),
kept beside them so that placing an order reads one row instead of summing a history.
`locked` is what open orders (and later, pending withdrawals) reserve; it is not a
ledger movement, since the funds have not left the account.
"""

import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import F, Q

MONEY = {"max_digits": 38, "decimal_places": 12}


class Mode(models.TextChoices):
    REAL = "REAL"
    PAPER = "PAPER"


class User(AbstractUser):
    trader_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # System accounts (fee collection, insurance fund) hold funds but never log in.
    is_system = models.BooleanField(default=False)
    last_faucet_at = models.DateTimeField(null=True, blank=True)

    FEE_ACCOUNT = "__fees__"
    INSURANCE_ACCOUNT = "__insurance__"


class Balance(models.Model):
    trader = models.ForeignKey(User, on_delete=models.PROTECT, related_name="balances")
    asset = models.CharField(max_length=16)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    total = models.DecimalField(default=0, **MONEY)
    locked = models.DecimalField(default=0, **MONEY)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["trader", "asset", "mode"], name="balance_unique"),
            models.CheckConstraint(condition=Q(locked__gte=0), name="balance_locked_nonneg"),
            # Available (total - locked) may never go negative: the last line of
            # defence against a double spend, enforced by the database itself.
            models.CheckConstraint(
                condition=Q(total__gte=F("locked")), name="balance_available_nonneg"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.trader_id} {self.asset} {self.mode}: {self.total} ({self.locked} locked)"

    @property
    def available(self):
        return self.total - self.locked


class LedgerReason(models.TextChoices):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    FAUCET = "FAUCET"
    TRADE = "TRADE"
    FEE = "FEE"
    REALIZED_PNL = "REALIZED_PNL"
    FUNDING = "FUNDING"
    LIQUIDATION = "LIQUIDATION"
    SETTLEMENT = "SETTLEMENT"
    PAPER_RESET = "PAPER_RESET"


class LedgerEntry(models.Model):
    """One change of one balance. Rows are only ever inserted."""

    trader = models.ForeignKey(User, on_delete=models.PROTECT, related_name="ledger")
    asset = models.CharField(max_length=16)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    amount = models.DecimalField(**MONEY)
    reason = models.CharField(max_length=16, choices=LedgerReason.choices)
    ref = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["trader", "asset", "mode"])]
        verbose_name_plural = "ledger entries"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("ledger entries are append-only")
        super().save(*args, **kwargs)
