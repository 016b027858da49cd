"""Balances and the append-only ledger.

A balance row is a running total of its ledger rows (checked by the invariant tests),
kept beside them so that placing an order reads one row instead of summing a history.
`locked` is what open orders and pending withdrawals reserve; it is not a ledger
movement, since the funds have not left the account.

The tables keep the names they had when these models lived in `accounts`: moving the
models changed no schema.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

MONEY = {"max_digits": 38, "decimal_places": 12}


class Mode(models.TextChoices):
    REAL = "REAL"
    PAPER = "PAPER"


class Balance(models.Model):
    # No index of its own: a composite index of the model leads with it.
    trader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="balances", db_index=False
    )
    asset = models.CharField(max_length=16)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    total = models.DecimalField(default=0, **MONEY)
    locked = models.DecimalField(default=0, **MONEY)
    # The part of `locked` that pending withdrawals hold: money on its way out, which
    # counts for no margin (trading.margin.account_of).
    withdrawing = models.DecimalField(default=0, db_default=0, **MONEY)

    class Meta:
        db_table = "accounts_balance"
        constraints = [
            models.UniqueConstraint(fields=["trader", "asset", "mode"], name="balance_unique"),
            models.CheckConstraint(condition=Q(locked__gte=0), name="balance_locked_nonneg"),
            models.CheckConstraint(
                condition=Q(withdrawing__gte=0, withdrawing__lte=F("locked")),
                name="balance_withdrawing_within_locked",
            ),
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

    # No index of its own: a composite index of the model leads with it.
    trader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger", db_index=False
    )
    asset = models.CharField(max_length=16)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    amount = models.DecimalField(**MONEY)
    reason = models.CharField(max_length=16, choices=LedgerReason.choices)
    ref = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "accounts_ledgerentry"
        # Named as Django named it in `accounts`, so that the index is the same one.
        indexes = [
            models.Index(fields=["trader", "asset", "mode"], name="accounts_le_trader__b5f931_idx")
        ]
        verbose_name_plural = "ledger entries"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("ledger entries are append-only")
        super().save(*args, **kwargs)
