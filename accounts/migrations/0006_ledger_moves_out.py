"""Balance and LedgerEntry move to the `ledger` app (ledger/migrations/0001_initial.py).
State only: their tables stay as they are. The admin's proxies of them leave the state
first and come back on the moved models in 0007."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_user_username_key"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="SolvencyReport"),
                migrations.DeleteModel(name="SystemBalance"),
                migrations.DeleteModel(name="Balance"),
                migrations.DeleteModel(name="LedgerEntry"),
            ],
            database_operations=[],
        ),
    ]
