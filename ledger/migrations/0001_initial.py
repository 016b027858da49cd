"""Balance and LedgerEntry, moved here from `accounts` (accounts/migrations/0006) with
their tables, which keep their names: state only, the database is left as it is. On a
fresh database accounts' own migrations have created the tables by now.

Their content types move with them, so that staff permissions on them and the admin's
history of them stay attached (a fresh database has none yet)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MOVED = ("balance", "ledgerentry")


def content_types_move(from_app: str, to_app: str):
    def move(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        for model in MOVED:
            if not ContentType.objects.filter(app_label=to_app, model=model).exists():
                ContentType.objects.filter(app_label=from_app, model=model).update(app_label=to_app)

    return move


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("accounts", "0006_ledger_moves_out"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Balance",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("asset", models.CharField(max_length=16)),
                        (
                            "mode",
                            models.CharField(
                                choices=[("REAL", "Real"), ("PAPER", "Paper")], max_length=5
                            ),
                        ),
                        ("total", models.DecimalField(decimal_places=12, default=0, max_digits=38)),
                        (
                            "locked",
                            models.DecimalField(decimal_places=12, default=0, max_digits=38),
                        ),
                        (
                            "withdrawing",
                            models.DecimalField(
                                db_default=0, decimal_places=12, default=0, max_digits=38
                            ),
                        ),
                        (
                            "trader",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="balances",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "accounts_balance",
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("trader", "asset", "mode"), name="balance_unique"
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("locked__gte", 0)),
                                name="balance_locked_nonneg",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    ("withdrawing__gte", 0),
                                    ("withdrawing__lte", models.F("locked")),
                                ),
                                name="balance_withdrawing_within_locked",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("total__gte", models.F("locked"))),
                                name="balance_available_nonneg",
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="LedgerEntry",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("asset", models.CharField(max_length=16)),
                        (
                            "mode",
                            models.CharField(
                                choices=[("REAL", "Real"), ("PAPER", "Paper")], max_length=5
                            ),
                        ),
                        ("amount", models.DecimalField(decimal_places=12, max_digits=38)),
                        (
                            "reason",
                            models.CharField(
                                choices=[
                                    ("DEPOSIT", "Deposit"),
                                    ("WITHDRAWAL", "Withdrawal"),
                                    ("FAUCET", "Faucet"),
                                    ("TRADE", "Trade"),
                                    ("FEE", "Fee"),
                                    ("REALIZED_PNL", "Realized Pnl"),
                                    ("FUNDING", "Funding"),
                                    ("LIQUIDATION", "Liquidation"),
                                    ("SETTLEMENT", "Settlement"),
                                    ("PAPER_RESET", "Paper Reset"),
                                ],
                                max_length=16,
                            ),
                        ),
                        ("ref", models.CharField(blank=True, default="", max_length=64)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "trader",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="ledger",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name_plural": "ledger entries",
                        "db_table": "accounts_ledgerentry",
                        "indexes": [
                            models.Index(
                                fields=["trader", "asset", "mode"],
                                name="accounts_le_trader__b5f931_idx",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(
            content_types_move("accounts", "ledger"), content_types_move("ledger", "accounts")
        ),
    ]
