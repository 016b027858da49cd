"""The admin's proxies of the balances and the ledger, again, on the models' new home
(the `ledger` app). Proxies have no table: nothing changes in the database."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_ledger_moves_out"),
        ("ledger", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="SolvencyReport",
            fields=[],
            options={
                "verbose_name": "solvency report",
                "verbose_name_plural": "solvency report",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("ledger.ledgerentry",),
        ),
        migrations.CreateModel(
            name="SystemBalance",
            fields=[],
            options={
                "verbose_name": "fee and insurance balance",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("ledger.balance",),
        ),
    ]
